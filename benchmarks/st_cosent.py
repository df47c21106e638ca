"""sentence-transformers' own trainer on the hub's CoSENT setting: the same model, data, batch, lr and epochs.

SentenceTransformer (the model folder + mean pooling), CoSENTLoss (λ = 20), SentenceTransformerTrainer with bf16,
a constant lr, batches padded to their longest row. The test Spearman (cosine) is taken after the last epoch.

    python benchmarks/st_cosent.py --model models/e5-small-zh --data $HUB_DATA_DIR/stsb_zh --out st.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.steady_rate import SteadyRate
from datamodules.sts import read_pairs
from text.files import find_file

PREFIX = "query: "


def main():
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup-batches", type=int, default=20)
    args = parser.parse_args()

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
    from sentence_transformers.losses import CoSENTLoss
    from sentence_transformers.models import Pooling, Transformer

    def split(name):
        pairs = read_pairs(find_file(Path(args.data) / f"STS-B.{name}.data"), 5)
        return [PREFIX + t for t in pairs.first], [PREFIX + t for t in pairs.second], pairs.labels

    encoder = Transformer(args.model, max_seq_length=64)
    model = SentenceTransformer(modules=[encoder, Pooling(encoder.get_word_embedding_dimension(), "mean")],
                                device="cuda")
    first, second, labels = split("train")
    train = Dataset.from_dict({"sentence1": first, "sentence2": second, "score": labels})

    rate = SteadyRate(args.batch_size, args.warmup_batches)
    training = SentenceTransformerTrainingArguments(
        output_dir="/tmp/st_cosent", per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=2e-5, lr_scheduler_type="constant", warmup_ratio=0.0, weight_decay=0.01, bf16=True,
        optim="adamw_torch_fused", save_strategy="no", report_to="none", logging_steps=50, seed=1,
        dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=train, loss=CoSENTLoss(model),
                                         callbacks=[rate])
    trainer.train()
    test = EmbeddingSimilarityEvaluator(*split("test"), main_similarity="cosine", name="test")(model)
    spearman = next(v for k, v in test.items() if "spearman" in k and "cosine" in k)
    result = rate.result() | {"test_spearman": spearman, "wall_time_s": round(time.perf_counter() - started, 2)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

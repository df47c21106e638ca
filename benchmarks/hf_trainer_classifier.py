"""The Hugging Face Trainer on the hub's CLUE classification setting (AFQMC): the same model, data and settings.

AutoModelForSequenceClassification from the model folder, [CLS] s1 [SEP] s2 [SEP] cut at 128 tokens, batch 32,
AdamW (fused) at a constant 2e-5 (the experiment file's schedule), bf16, batches padded to their longest row
(DataCollatorWithPadding), 1 epoch; dev accuracy after it.

    python benchmarks/hf_trainer_classifier.py --model models/e5-small-zh --data $HUB_DATA_DIR/afqmc --out hf.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.steady_rate import SteadyRate
from text.files import find_file, open_text

PREFIX = "query: "


def read(path: Path) -> tuple[list[str], list[str], list[int]]:
    rows = [json.loads(line) for line in open_text(find_file(path)) if line.strip()]
    return ([PREFIX + r["sentence1"] for r in rows], [r["sentence2"] for r in rows], [int(r["label"]) for r in rows])


def main():
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="the afqmc folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--warmup-batches", type=int, default=20)
    args = parser.parse_args()

    import numpy as np
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def dataset(name):
        first, second, labels = read(Path(args.data) / f"{name}.json")
        encoded = tokenizer(first, second, max_length=128, truncation=True)
        return [{key: encoded[key][n] for key in encoded} | {"labels": y} for n, y in enumerate(labels)]

    rate = SteadyRate(args.batch_size, args.warmup_batches)
    training = TrainingArguments(
        output_dir="/tmp/hf_trainer", per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=256,
        num_train_epochs=args.epochs, learning_rate=2e-5, lr_scheduler_type="constant",
        weight_decay=0.01, bf16=True, optim="adamw_torch_fused", save_strategy="no", report_to="none",
        logging_steps=50, seed=1)
    trainer = Trainer(model=model, args=training, train_dataset=dataset("train"), eval_dataset=dataset("dev"),
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=[rate],
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())})
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    result = rate.result() | {"dev_accuracy": accuracy, "wall_time_s": round(time.perf_counter() - started, 2)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

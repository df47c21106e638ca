"""A bare PyTorch training loop of the CoSENT bi-encoder, the floor that the hub's own loop is measured against.

Eager, no framework: e5 (transformers AutoModel) + mean pooling + CoSENT (λ = 20), fused AdamW at a constant lr,
bf16 autocast, batches shuffled uniformly and padded to their longest row, the STS-B splits of `--data`. After
each epoch it scores valid; the test Spearman reported is the one at the best valid epoch, as the hub reports.

    python benchmarks/bare_loop.py --model models/e5-small-zh --data $HUB_DATA_DIR/stsb_zh --out bare.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from transformers import AutoModel, AutoTokenizer

from datamodules.sts import read_pairs
from lit_models.components.losses import cosent
from text.files import find_file

PREFIX = "query: "


def encode(tokenizer, pairs, max_length: int) -> list[tuple[list[int], list[int], float]]:
    first = tokenizer([PREFIX + t for t in pairs.first], max_length=max_length, truncation=True)["input_ids"]
    second = tokenizer([PREFIX + t for t in pairs.second], max_length=max_length, truncation=True)["input_ids"]
    return list(zip(first, second, pairs.labels))


def collate(items, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = [a for a, _, _ in items] + [b for _, b, _ in items]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), pad_id)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
    mask = (ids != pad_id).long()
    labels = torch.tensor([label for _, _, label in items])
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True), labels.to(device)


def embed(model, ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


@torch.no_grad()
def spearman(model, items, pad_id, device, batch_size=256) -> float:
    model.eval()
    scores, gold = [], []
    for start in range(0, len(items), batch_size):
        ids, mask, labels = collate(items[start:start + batch_size], pad_id, device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            u, v = embed(model, ids, mask).float().chunk(2)
        scores += F.cosine_similarity(u, v).tolist()
        gold += labels.tolist()
    model.train()
    return float(spearmanr(scores, gold).statistic)


def main():
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="the stsb_zh folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--warmup-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda")
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).to(device).train()
    splits = {s: encode(tokenizer, read_pairs(find_file(Path(args.data) / f"STS-B.{s}.data"), 5), args.max_length)
              for s in ("train", "valid", "test")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
    batches = train_time = 0
    examples, best = 0, (-1.0, None)
    for epoch in range(args.epochs):
        order = torch.randperm(len(splits["train"])).tolist()
        torch.cuda.synchronize()
        epoch_start = time.perf_counter()
        for start in range(0, len(order), args.batch_size):
            if batches == args.warmup_batches:   # the steady state starts here
                torch.cuda.synchronize()
                window = time.perf_counter()
            ids, mask, labels = collate([splits["train"][i] for i in order[start:start + args.batch_size]],
                                        tokenizer.pad_token_id, device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                u, v = embed(model, ids, mask).float().chunk(2)
            loss = cosent(20 * F.cosine_similarity(u, v), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            batches += 1
            if batches > args.warmup_batches:
                examples += len(labels)
        torch.cuda.synchronize()
        train_time += time.perf_counter() - (window if epoch == 0 else epoch_start)
        valid = spearman(model, splits["valid"], tokenizer.pad_token_id, device)
        if valid > best[0]:
            best = (valid, spearman(model, splits["test"], tokenizer.pad_token_id, device))
    result = {"examples_per_s": round(examples / train_time, 1), "train_time_s": round(train_time, 2),
              "best_valid_spearman": best[0], "test_spearman": best[1],
              "wall_time_s": round(time.perf_counter() - started, 2)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Peak memory and time per sample of a training step (forward, backward, AdamW) against the batch, with
gradient checkpointing per block on and off (backbone.recompute; kexue.fm/archives/7367,
benchmarks/claims/recompute.sh). The loss is the mean square of the last hidden states: the encoder's cost."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
from common import DEVICE, DTYPE, timed_or_oom, write_table  # noqa: E402
from lit_models.components.nn.transformer import TransformerConfig, TransformerEncoder  # noqa: E402


def measure(args, batch: int, recompute: bool) -> tuple[float | None, float | None]:
    cfg = TransformerConfig(vocab_size=21128, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                            ffn_size=4 * args.hidden, dropout=0.1, position="learned", recompute=recompute)
    model = TransformerEncoder(cfg).to(DEVICE).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, args.length), device=DEVICE)
    mask = torch.ones_like(ids)

    def step():
        with torch.autocast(DEVICE.type, dtype=DTYPE, enabled=DEVICE.type == "cuda"):
            loss = model(ids, mask)[-1].float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timed_or_oom(step, repeats=5, warmup=2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batches", default="32,64,128,256,512,1024")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = []
    for batch in map(int, args.batches.split(",")):
        for recompute in (False, True):
            seconds, peak = measure(args, batch, recompute)
            rows.append([batch, recompute, None if seconds is None else f"{1e3 * seconds / batch:.3f}",
                         None if peak is None else f"{peak:.2f}"])
    write_table(["batch", "recompute", "ms per sample", "peak GiB"], rows, args.out,
                f"Training step, {args.layers} × {args.hidden}, length {args.length}")


if __name__ == "__main__":
    main()

"""Optimizer-state memory of AdamW, Lion and Tiger on one encoder (kexue.fm/archives/9473, 9512): the bytes of
every state tensor after one step, against the parameters' bytes. Measured on whatever device is present; the
state is the same size on any."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
from common import write_table  # noqa: E402
from lit_models.components.nn.transformer import TransformerConfig, TransformerEncoder  # noqa: E402
from lit_models.components.optim import Lion, Tiger  # noqa: E402

OPTIMIZERS = {"adamw": lambda params: torch.optim.AdamW(params, lr=1e-4), "lion": lambda params: Lion(params, lr=1e-5),
              "tiger": lambda params: Tiger(params, lr=1e-3)}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(value.numel() * value.element_size() for state in optimizer.state.values()
               for value in state.values() if isinstance(value, torch.Tensor) and value.dim() > 0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = []
    for name, make in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = TransformerEncoder(TransformerConfig(vocab_size=21128, hidden_size=args.hidden, num_layers=args.layers,
                                                     num_heads=args.heads, ffn_size=4 * args.hidden))
        params = list(model.parameters())
        optimizer = make(params)
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
        weights = sum(p.numel() * p.element_size() for p in params)
        state = state_bytes(optimizer)
        rows.append([name, f"{sum(p.numel() for p in params) / 1e6:.1f}M", f"{state / 2**20:.1f}",
                     f"{state / weights:.2f}"])
    write_table(["optimizer", "parameters", "state MiB", "state / weights"], rows, args.out,
                f"Optimizer state, {args.layers} × {args.hidden} encoder (fp32)")


if __name__ == "__main__":
    main()

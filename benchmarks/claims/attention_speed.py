"""Forward + backward time and peak memory of one attention layer against the sequence length
(kexue.fm/archives/8610; benchmarks/claims/linear_speed.sh): the hub's softmax layer (SDPA with its boolean
mask), the hub's linear attention, and bare SDPA without a mask (the flash kernel on a GPU)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
from common import DEVICE, DTYPE, timed_or_oom, write_table  # noqa: E402
from lit_models.components.nn.attention import LinearAttention, MultiHeadAttention  # noqa: E402


class FlashSoftmax(MultiHeadAttention):
    """Softmax attention without a mask: what SDPA's flash kernel runs when every key is visible."""

    def mix(self, q, k, v, key_mask, causal):
        return F.scaled_dot_product_attention(q, k, v)


LAYERS = {"softmax (hub, masked SDPA)": MultiHeadAttention, "softmax (SDPA, no mask: flash)": FlashSoftmax,
          "linear (hub)": LinearAttention}


def measure(layer_class, hidden: int, heads: int, batch: int, length: int) -> tuple[float | None, float | None]:
    layer = layer_class(hidden, heads, rope=True).to(DEVICE, DTYPE)
    x = torch.randn(batch, length, hidden, device=DEVICE, dtype=DTYPE, requires_grad=True)
    key_mask = torch.ones(batch, length, device=DEVICE, dtype=torch.long)

    def step():
        layer(x, key_mask).float().square().mean().backward()

    return timed_or_oom(step)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lengths", default="128,256,512,1024,2048,4096,8192")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = []
    for length in map(int, args.lengths.split(",")):
        for name, layer_class in LAYERS.items():
            seconds, peak = measure(layer_class, args.hidden, args.heads, args.batch, length)
            rows.append([length, name, None if seconds is None else f"{1000 * seconds:.2f}",
                         None if peak is None else f"{peak:.2f}"])
    write_table(["length", "layer", "fwd+bwd ms", "peak GiB"], rows, args.out,
                f"One attention layer, width {args.hidden}, {args.heads} heads (d_head {args.hidden // args.heads}), "
                f"batch {args.batch}, {DTYPE}")


if __name__ == "__main__":
    main()

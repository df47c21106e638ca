#!/usr/bin/env bash
# Linear vs softmax attention speed (kexue.fm/archives/8610): forward + backward time and peak memory of one
# attention layer against the sequence length (128 … 8192) at width 768, 12 heads (d_head = 64), bf16 on the
# GPU. The claim: linear attention pays off only beyond n ≈ 16 · d_head (≈ 1,024 here), and softmax with flash
# kernels is as fast below that. A speed table, no training (benchmarks/claims/attention_speed.py).
. "$(dirname "$0")/lib.sh"
python benchmarks/claims/attention_speed.py $(smoke "--hidden 32 --heads 2 --lengths 16,32 --batch 2" "") \
    --out "$out/table.md"

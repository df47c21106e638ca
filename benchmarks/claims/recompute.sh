#!/usr/bin/env bash
# Recompute (kexue.fm/archives/7367): with backbone.recompute=true (gradient checkpointing per block) a
# BERT-base-size encoder trains about 3× the batch in the same memory, at about +25 % time per sample. Peak
# memory and time per sample of a training step (forward, backward, AdamW) against the batch, recompute on and
# off, scratch_base at 128 tokens, bf16 on the GPU (benchmarks/claims/recompute_memory.py).
. "$(dirname "$0")/lib.sh"
python benchmarks/claims/recompute_memory.py $(smoke "--hidden 32 --layers 2 --heads 2 --batches 2,4" "") \
    --out "$out/table.md"

#!/usr/bin/env bash
# Data-parallel scaling at a fixed per-GPU batch: trainer=ddp on 1, 2, 4, ... GPUs of one machine, one run
# at a time (nothing else on the cards), for the CoSENT bi-encoder (e5-small-zh on BQ, 64 pairs per GPU) and
# the masked LM (backbone=scratch_base on data=corpus, 32 sentences per GPU); bf16-mixed. Prints a table of
# pairs (or sentences)/s, tokens/s and the scaling efficiency: rate on N GPUs / (N × rate on 1 GPU).
#
#   GPUS="1 2" STEPS=300 bash benchmarks/ddp_scaling.sh [OVERRIDE ...]
#
# The first WARMUP (default 30) steps of each run are not timed (hub.callbacks.Throughput.warmup_batches).
set -euo pipefail
out=${BENCH_DIR:-outputs/benchmarks}/ddp_scaling
steps=${STEPS:-300}
mkdir -p "$out"
common=(trainer=ddp trainer.precision=bf16-mixed logger=csv test=false "trainer.max_steps=$steps"
        +trainer.limit_val_batches=0 "~callbacks.model_checkpoint" "~callbacks.last_checkpoint" +trainer.enable_checkpointing=false "callbacks.throughput.warmup_batches=${WARMUP:-30}")
bi_encoder=(experiment=cosent_vs_sbert backbone=pretrained data=bq loss=cosent data.batch_size=64)
masked_lm=(task=masked_lm data=corpus loss=lm backbone=scratch_base data.max_sentences=200000 data.batch_size=32)
for gpus in ${GPUS:-1 2}; do
  for model in bi_encoder masked_lm; do
    args="$model[@]"
    python run.py "${!args}" "${common[@]}" "trainer.devices=$gpus" "$@" hydra.run.dir="$out/$model-$gpus" \
        > "$out/$model-$gpus.log" 2>&1 || echo "$model on $gpus GPUs failed: see $out/$model-$gpus.log"
  done
done
python - "$out" <<'EOF'
import json, sys
from pathlib import Path

rows = {}
for path in Path(sys.argv[1]).glob("*/results.json"):
    model, gpus = path.parent.name.rsplit("-", 1)
    rows[model, int(gpus)] = json.loads(path.read_text()).get("throughput") or {}
print("| model | GPUs | examples/s | tokens/s | scaling efficiency | data wait |")
print("|---|---|---|---|---|---|")
for model, gpus in sorted(rows):
    speed, one = rows[model, gpus], rows.get((model, 1), {})
    rate = speed.get("examples_per_s")
    if not rate:
        print(f"| {model} | {gpus} | failed | | | |")
        continue
    efficiency = f"{rate / (gpus * one['examples_per_s']):.0%}" if one.get("examples_per_s") else "n/a"
    wait = speed["data_wait_s"] / max(speed["train_time_s"], 1e-9)
    print(f"| {model} | {gpus} | {rate:,.0f} | {speed['tokens_per_s']:,.0f} | {efficiency} | {wait:.0%} |")
EOF

#!/usr/bin/env bash
# CoSENT vs Sentence-BERT with a pretrained encoder (kexue.fm/archives/8847), on a GPU; prints one table.
#
#   bash benchmarks/cosent_vs_sbert.sh stsb                          # STS-B zh, train/valid/test
#   bash benchmarks/cosent_vs_sbert.sh bq data.train_limit=20000     # BQ, first 20k train pairs
#
# Extra arguments are Hydra overrides. Needs HUB_DATA_DIR (or data/) and the backbone's model folder
# (models/e5-small-zh by default). GPU utilization is sampled with nvidia-smi every 0.5 s.
set -euo pipefail
data=$1; shift
out=${BENCH_DIR:-outputs/benchmarks}/cosent_vs_sbert/$data
mkdir -p "$out"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$out/gpu.csv" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
python run.py -m experiment=cosent_vs_sbert backbone=pretrained trainer=gpu logger=csv data="$data" \
    loss=cosent,sbert hydra.sweep.dir="$out" "$@"
kill $sampler 2>/dev/null || true
python benchmarks/table.py "$out" --gpu-csv "$out/gpu.csv"

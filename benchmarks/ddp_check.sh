#!/usr/bin/env bash
# Is data-parallel training the same training? On a machine with 2 GPUs, for the CoSENT bi-encoder of
# experiment=cosent_vs_sbert (e5-small-zh, STS-B zh), global batch 32:
#   1. the gradients of one step on one fixed batch, 1 process × 32 vs trainer=ddp 2 × 16
#      (benchmarks/ddp_gradients.py; fp32, dropout off);
#   2. test Spearman over seeds 1, 2, 3: `python run.py -m trainer=ddp trainer.devices=2 data.batch_size=16
#      seed=1,2,3` (a Hydra multirun of DDP jobs, one folder and results.json per job) vs 1 GPU × 32,
#      compared by compare.py (mean ± sd, Welch's p).
#
#   bash benchmarks/ddp_check.sh [OVERRIDE ...]     # extra overrides for every training run
#
# SEEDS (default 1,2,3). The 1-GPU runs go side by side on GPU 0 while the DDP jobs run one after another.
set -euo pipefail
out=${BENCH_DIR:-outputs/benchmarks}/ddp_check
seeds=${SEEDS:-1,2,3}
mkdir -p "$out"

python benchmarks/ddp_gradients.py "$out/gradients"
python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/ddp_gradients.py "$out/gradients"
python benchmarks/ddp_gradients.py "$out/gradients" --compare 2>/dev/null | tee "$out/gradients.md"

common=(experiment=cosent_vs_sbert backbone=pretrained data=stsb loss=cosent trainer.precision=bf16-mixed
        logger=csv "seed=$seeds" "$@")
CUDA_VISIBLE_DEVICES=0 python run.py -m "${common[@]}" trainer=gpu data.batch_size=32 hydra/launcher=joblib \
    hydra.launcher.n_jobs=3 hydra.sweep.dir="$out/gpu1x32" > "$out/gpu1x32.log" 2>&1 &
python run.py -m "${common[@]}" trainer=ddp trainer.devices=2 data.batch_size=16 \
    hydra.sweep.dir="$out/ddp2x16" > "$out/ddp2x16.log" 2>&1 || echo "the DDP multirun failed: $out/ddp2x16.log"
wait || echo "the 1-GPU multirun failed: $out/gpu1x32.log"
find "$out/ddp2x16" "$out/gpu1x32" -name results.json | sort
python compare.py "$out/gpu1x32" "$out/ddp2x16" --out "$out/report" || true

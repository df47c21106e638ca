#!/usr/bin/env bash
# Training speed side by side, in one call on one GPU: the hub (default speed settings) against the hub with its
# speedups switched off (speed=off), against other trainers on the same model, data and batch; one table per
# section. Each row records its steady-state rate, its process wall time and its test metric.
#
#   bash benchmarks/speed.sh [section ...]     # sections: sts32 sts256 afqmc mlm profile (default: the first four)
#
#   sts32   CoSENT bi-encoder, e5-small-zh, STS-B, batch 32, 5 epochs: hub, hub speed=off,
#           sentence-transformers' trainer (benchmarks/st_cosent.py), a bare PyTorch loop (benchmarks/bare_loop.py)
#   sts256  the same at batch 256: hub, hub speed=off
#   afqmc   classifier, e5-small-zh, AFQMC, batch 32, max length 128, 1 epoch: hub, hub speed=off, the Hugging
#           Face Trainer (benchmarks/hf_trainer_classifier.py)
#   mlm     masked LM, backbone=scratch_base, batch 256 rows of up to 128 tokens, MLM_STEPS steps (600): packed
#           rows (default speed settings; with speed.compile=true; with speed=off) vs one sentence per row,
#           validation every 200 steps; MFU = 6 · parameters · tokens/s over the
#           card's bf16 matmul rate measured in the same call (benchmarks/matmul_peak.py)
#   profile torch.profiler over steady-state steps of the sts32, sts256 and packed mlm hub rows
#           (benchmarks/profile_step.py): time per step against the device's busy time, the top operations on
#           each side, and cProfile's view of the host (loop, callbacks, collate) over the steps after those
#
# ROWS="NAME ...": run only the rows of those names. ROW_TIMEOUT: seconds each row may take (300).
# Needs HUB_DATA_DIR and $HUB_MODELS_DIR/e5-small-zh. Rows land in $BENCH_DIR/speed/<section>/<row>/.
set -uo pipefail
out=${BENCH_DIR:-outputs/benchmarks}/speed
models=${HUB_MODELS_DIR:-models}
e5=$models/e5-small-zh
sts="experiment=cosent_vs_sbert backbone=pretrained data=stsb trainer=gpu logger=csv callbacks.throughput.warmup_batches=20"
mlm="task=masked_lm loss=lm data=corpus backbone=scratch_base trainer=gpu logger=csv data.batch_size=256 \
     trainer.max_steps=${MLM_STEPS:-600} trainer.val_check_interval=200 trainer.check_val_every_n_epoch=null \
     callbacks.throughput.warmup_batches=20"
afqmc="experiment=clue/afqmc backbone=pretrained trainer=gpu logger=csv trainer.max_epochs=1 callbacks.throughput.warmup_batches=20"

row() {  # row SECTION NAME COMMAND...: run COMMAND, keep its output and its process wall time
  [[ -n ${ROWS:-} && " $ROWS " != *" $2 "* ]] && return   # ROWS="hub hf_trainer": only the rows named
  local dir=$out/$1/$2
  shift 2
  mkdir -p "$dir"
  local t0
  t0=$(date +%s.%N)
  timeout "${ROW_TIMEOUT:-300}" "$@" > "$dir/log.txt" 2>&1
  local rc=$?
  local t1
  t1=$(date +%s.%N)
  echo "$(python3 -c "print(round($t1 - $t0, 1))") $rc" > "$dir/process.txt"
  echo "start $t0 end $t1" > "$dir/clock.txt"   # against the log's timestamps: where start-up and exit go
}
hub() {  # hub SECTION NAME OVERRIDES...
  local section=$1 name=$2
  shift 2
  row "$section" "$name" python3 run.py hydra.run.dir="$out/$section/$name" "$@"
}

for section in ${@:-sts32 sts256 afqmc mlm}; do
  case $section in
    sts32)
      row sts32 sentence_transformers python3 benchmarks/st_cosent.py --model "$e5" --data "$HUB_DATA_DIR/stsb_zh" \
          --out "$out/sts32/sentence_transformers/result.json"
      hub sts32 hub $sts
      hub sts32 hub_speed_off $sts speed=off
      row sts32 bare_loop python3 benchmarks/bare_loop.py --model "$e5" --data "$HUB_DATA_DIR/stsb_zh" \
          --out "$out/sts32/bare_loop/result.json" ;;
    sts256)
      hub sts256 hub $sts data.batch_size=256
      hub sts256 hub_speed_off $sts data.batch_size=256 speed=off ;;
    afqmc)
      hub afqmc hub $afqmc
      hub afqmc hub_speed_off $afqmc speed=off
      row afqmc hf_trainer python3 benchmarks/hf_trainer_classifier.py --model "$e5" \
          --data "$HUB_DATA_DIR/afqmc" --out "$out/afqmc/hf_trainer/result.json" ;;
    mlm)
      row mlm matmul_peak python3 benchmarks/matmul_peak.py --out "$out/mlm/matmul_peak/result.json"
      hub mlm packed $mlm data.packing=true
      hub mlm packed_compiled $mlm data.packing=true speed.compile=true
      hub mlm packed_speed_off $mlm data.packing=true speed=off
      hub mlm one_sentence_per_row $mlm data.packing=false ;;
    profile)
      mkdir -p "$out/profile"
      python3 benchmarks/profile_step.py $sts trainer.max_epochs=2 --start 200 --steps 50 \
          --out "$out/profile/sts32.txt" > "$out/profile/sts32.log" 2>&1
      python3 benchmarks/profile_step.py $sts data.batch_size=256 --start 44 --steps 9 \
          --out "$out/profile/sts256.txt" > "$out/profile/sts256.log" 2>&1
      python3 benchmarks/profile_step.py $mlm data.packing=true --start 60 --steps 20 \
          --out "$out/profile/mlm.txt" > "$out/profile/mlm.log" 2>&1
      head -1 "$out"/profile/*.txt
      continue ;;
    *) echo "unknown section $section" >&2; exit 2 ;;
  esac
  python3 benchmarks/speed_table.py "$out/$section"
done

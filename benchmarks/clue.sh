#!/usr/bin/env bash
# The CLUE baselines (experiment=clue/<task>, kexue.fm/archives/8739) and the cross-encoder table of
# kexue.fm/archives/9341 (experiment=cosent_interactive: CoSENT vs cross-entropy on STS-B zh and BQ 20k),
# every run side by side on one GPU (a small encoder leaves most of it idle); prints one table.
#
#   bash benchmarks/clue.sh [OVERRIDE ...]          # extra Hydra overrides for every run
#
# TASKS: the CLUE tasks to run (default below; "task:name" adds a run named task_name, whose EPOCHS_/VAL_/ARGS_task_name
# come after its task's); EPOCHS_<task>: that task's epochs (default: the experiment's
# 10); VAL_<task>: its trainer.val_check_interval; ARGS_<task>: more overrides for it; MAX_TIME: a cap on each run's training ("DD:HH:MM:SS");
# CROSS=0 skips the cross-encoder runs. Submission files land in $BENCH_DIR/clue/<task>/predictions/.
set -euo pipefail
out=${BENCH_DIR:-outputs/benchmarks}/clue
mkdir -p "$out/cross_encoder"
common=(trainer=gpu logger=csv "$@")
[[ -n ${MAX_TIME:-} ]] && common+=("trainer.max_time=$MAX_TIME")

for entry in ${TASKS:-afqmc tnews ocnli csl wsc cluener cmrc2018 c3}; do
  task=${entry%%:*} run=${entry/:/_}   # "afqmc:lr5" is a second run of afqmc, in $out/afqmc_lr5
  extra=()
  for name in "$task" "$run"; do      # the run's own settings after (and over) its task's
    epochs=EPOCHS_$name val=VAL_$name args=ARGS_$name
    [[ -n ${!epochs:-} ]] && extra+=("trainer.max_epochs=${!epochs}")
    [[ -n ${!val:-} ]] && extra+=("trainer.val_check_interval=${!val}")
    [[ -n ${!args:-} ]] && read -ra more <<< "${!args}" && extra+=("${more[@]}")
    [[ $run == "$task" ]] && break
  done
  python run.py "experiment=clue/$task" "${common[@]}" "${extra[@]}" hydra.run.dir="$out/$run" \
      > "$out/$run.log" 2>&1 &
done
if [[ ${CROSS:-1} != 0 ]]; then
  for data in stsb bq; do
    for loss in cosent cross_entropy; do
      python run.py experiment=cosent_interactive backbone=pretrained "data=$data" data.train_limit=20000 \
          "loss=$loss" "${common[@]}" hydra.run.dir="$out/cross_encoder/$data-$loss" \
          > "$out/cross_encoder/$data-$loss.log" 2>&1 &
    done
  done
fi
wait || true
python benchmarks/table.py "$out"

#!/usr/bin/env bash
# Masked-LM pretraining of backbone=scratch_small on data=corpus, one swept axis at a time, on a GPU.
# Runs of one comparison see the same token budget: the same corpus, batches and number of steps.
#
#   bash benchmarks/mlm_axes.sh attention STEPS     softmax, gau, linear, local (H100: 20-33 steps/s each)
#   bash benchmarks/mlm_axes.sh optimizer STEPS     lion and tiger (adamw is the attention run's softmax)
#   bash benchmarks/mlm_axes.sh depth STEPS         48 post-norm layers: init=bert vs norm=deepnorm init=deepnorm,
#                                                   no warmup, the same lr (kexue.fm/archives/8978)
#   bash benchmarks/mlm_axes.sh pretrain STEPS ATTENTION  one run, backbone.pt in $BENCH_DIR/mlm/pretrain/ATTENTION
#   bash benchmarks/mlm_axes.sh finetune CKPT ATTENTION   CoSENT on STS-B zh from backbone.pt vs from scratch
#
# Extra arguments are Hydra overrides for every run. Prints benchmarks/table.py's table.
# PARALLEL=1 runs the variants of attention/optimizer/depth side by side on the one GPU: a small model leaves
# most of an H100 idle, so this saves wall time; tokens/s then measures each variant under that shared load.
set -euo pipefail
what=$1; arg=$2; shift 2
root=${BENCH_DIR:-outputs/benchmarks}/mlm
every=${VAL_EVERY:-250}   # validate every N steps
out=$root/$what
mlm=(task=masked_lm data=corpus loss=lm backbone=scratch_small trainer=gpu logger=csv data.max_sentences=200000
     backbone.finetune_lr=1e-3 trainer.max_epochs=1000 trainer.check_val_every_n_epoch=null)
# launch DIR ARGS...: one run in DIR; with PARALLEL in the background, its log in DIR.log
launch() {
  local dir=$1; shift
  if [[ -n ${PARALLEL:-} ]]; then
    python run.py "$@" hydra.run.dir="$dir" > "$dir.log" 2>&1 &
  else
    python run.py "$@" hydra.run.dir="$dir" || true
  fi
}
# variants GROUP VALUES ARGS...: one run per comma-separated value, in $out/VALUE
variants() {
  local group=$1 values=$2; shift 2
  local value
  for value in ${values//,/ }; do launch "$out/$value" "$@" "$group=$value"; done
}
mkdir -p "$out"
case $what in
  attention)
    variants attention softmax,gau,linear,local "${mlm[@]}" trainer.val_check_interval=$every \
        trainer.max_steps="$arg" "$@"
    wait
    python benchmarks/table.py "$out" ;;
  optimizer)
    variants optimizer lion,tiger "${mlm[@]}" attention=softmax trainer.val_check_interval=$every \
        trainer.max_steps="$arg" "$@"
    wait
    python benchmarks/table.py "$out" "$root/attention/softmax" ;;
  depth)
    common=("${mlm[@]}" backbone.num_layers=48 scheduler=constant trainer.max_steps="$arg" trainer.val_check_interval=100)
    variants init bert "${common[@]}" "$@"
    variants init deepnorm "${common[@]}" backbone.norm=deepnorm "$@"
    wait
    python benchmarks/table.py "$out" ;;
  pretrain)
    attention=$1; shift
    python run.py "${mlm[@]}" attention="$attention" trainer.val_check_interval=$every trainer.max_steps="$arg" \
        hydra.run.dir="$out/$attention" "$@"
    python benchmarks/table.py "$out/$attention" ;;
  finetune)
    attention=$1; shift
    ft=(data=stsb loss=cosent backbone=scratch_small attention="$attention" trainer=gpu logger=csv trainer.max_epochs=5)
    launch "$out/pretrained" "${ft[@]}" backbone.checkpoint="$arg" "$@"
    launch "$out/from_scratch" "${ft[@]}" "$@"
    wait
    python benchmarks/table.py "$out" ;;
  *) echo "usage: $0 attention|optimizer|depth|pretrain|finetune ..." >&2; exit 2 ;;
esac

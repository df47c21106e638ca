#!/usr/bin/env bash
# Length extrapolation (kexue.fm/archives/9431, 9577; the log-n scale of 8823): a causal LM trained at length
# T = 64 on long documents (data=documents: CMRC 2018 contexts and CSL abstracts as one token stream), then
# tested at 1×, 2×, 4× and 8× T (data.eval_max_length). Trained: softmax + RoPE, softmax_logn (train_length
# = T) and softmax + RoPE with backbone.qk_bias_only=true; the softmax runs are also tested through a window
# of T at inference (attention.inference_window=T). The claims: plain RoPE degrades beyond T; a window at
# inference and log-n scaling hold up; q/k bias helps (the author later called that result unstable).
# scratch_small (4 × 256), batch 64 rows of 64 tokens, STEPS (5000) steps = 20.5M tokens a run.
. "$(dirname "$0")/lib.sh"
T=$(smoke 16 "${T:-64}") steps=$(smoke 2 "${STEPS:-5000}")
lm=(task=causal_lm data=documents loss=lm backbone=scratch_small backbone.position=rope data.max_length="$T"
    data.batch_size=$(smoke 8 64) trainer.max_epochs=1000 trainer.max_steps="$steps" trainer.val_check_interval=$(smoke 2 500)
    trainer.check_val_every_n_epoch=null $(smoke "data.train_limit=100 data.eval_limit=10" ""))
sweep train/softmax "${lm[@]}" attention=softmax
sweep train/softmax_logn "${lm[@]}" attention=softmax_logn attention.train_length="$T"
sweep train/qk_bias_only "${lm[@]}" attention=softmax backbone.qk_bias_only=true
lengths=$T,$((2 * T)),$((4 * T)),$((8 * T))
# every trained run, tested at each length with the attention and backbone it was trained with
for run in "$out"/train/*/[0-9]*/; do
  variant=$(basename "$(dirname "$run")") n=$(basename "$run")
  trained=$(python -c "import sys, yaml; print(' '.join(o for o in yaml.safe_load(open(sys.argv[1])) \
      if o.split('=')[0] in ('attention', 'attention.train_length', 'backbone.qk_bias_only', 'seed')))" \
      "$run/.hydra/overrides.yaml")
  windows=$([[ $variant == softmax ]] && echo "null,$T" || echo null)
  python run.py -m "${lm[@]}" $trained train=false ckpt_path="$run/checkpoints/best.ckpt" \
      data.eval_max_length="$lengths" attention.inference_window="$windows" "${scale[@]}" \
      hydra.sweep.dir="$out/test/${variant}_$n"
done
REPORT_OF=$out/test report --metric test/accuracy

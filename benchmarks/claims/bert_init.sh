#!/usr/bin/env bash
# BERT's init std 0.02 vs Xavier (kexue.fm/archives/8747): at hidden 768, a 12-layer post-norm encoder trains
# better from N(0, 0.02²) than from Xavier's 1/√d scale. With the usual warmup (scheduler=linear_warmup, 10 %).
# scratch_base (12 × 768), batch 64 packed rows, STEPS (3000) steps = 24.6M tokens a run.
. "$(dirname "$0")/lib.sh"
steps=$(smoke 2 "${STEPS:-3000}")
sweep init "${mlm[@]}" "${corpus[@]}" backbone.norm=post scheduler=linear_warmup data.batch_size=$(smoke 8 64) \
    trainer.max_steps="$steps" trainer.val_check_interval=$(smoke 2 250) init=bert,xavier
report --metric test/accuracy

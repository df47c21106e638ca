#!/usr/bin/env bash
# Post-Norm depth and DeepNorm (kexue.fm/archives/8978): at 48 layers, no warmup, a learning rate at which
# plain post-norm fails, DeepNorm trains stably and ends at least as good as pre-norm.
#   1. lr_probe: post-norm, init=bert, constant lr (no warmup) at LRS (default 1e-4,3e-4,1e-3), one seed:
#      the lowest lr whose loss spikes or stalls is the comparison's LR.
#   2. at LR (default 1e-3): post-norm + init=bert, backbone.norm=deepnorm + init=deepnorm, pre-norm + init=bert.
# Model: scratch_base's width (768, 12 heads) at LAYERS=48 layers; batch 64 packed rows, STEPS (3000) steps =
# 24.6M tokens a run: BERT-base's width at 48 layers (LAYERS=96 where the budget allows).
. "$(dirname "$0")/lib.sh"
layers=$(smoke 2 "${LAYERS:-48}") steps=$(smoke 2 "${STEPS:-3000}") lr=${LR:-1e-3}
deep=("${mlm[@]}" "${corpus[@]}" backbone.num_layers="$layers" scheduler=constant data.batch_size=$(smoke 8 64)
      trainer.max_steps="$steps" trainer.val_check_interval=$(smoke 2 250))
seeds=1 sweep lr_probe "${deep[@]}" init=bert backbone.norm=post optimizer.lr="${LRS:-1e-4,3e-4,1e-3}"
sweep post "${deep[@]}" init=bert backbone.norm=post optimizer.lr="$lr"
sweep deepnorm "${deep[@]}" init=deepnorm backbone.norm=deepnorm optimizer.lr="$lr"
sweep pre "${deep[@]}" init=bert backbone.norm=pre optimizer.lr="$lr"
report --metric test/accuracy

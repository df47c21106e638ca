#!/usr/bin/env bash
# GAU-α vs softmax attention (kexue.fm/archives/8934, 8990, 9052): at equal parameters (2 GAU layers per
# attention + feed-forward layer) GAU with softmax_plus matches or beats softmax at equal cost and needs no
# warmup. Four runs per seed: GAU (softmax_plus, train_length 128) without and with warmup, softmax with and
# without warmup. LAYERS (12) softmax layers of width 768 vs 2 × LAYERS GAU layers, batch 64 packed rows,
# STEPS (3000) steps = 24.6M tokens a run; results.json gives each run's tokens/s and wall time for the
# equal-time reading of the curves.
. "$(dirname "$0")/lib.sh"
layers=$(smoke 1 "${LAYERS:-12}") steps=$(smoke 2 "${STEPS:-3000}")
common=("${mlm[@]}" "${corpus[@]}" data.batch_size=$(smoke 8 64) trainer.max_steps="$steps"
        trainer.val_check_interval=$(smoke 2 250))
sweep gau "${common[@]}" attention=gau attention.normalization=softmax_plus attention.train_length=128 \
    backbone.num_layers=$((2 * layers)) scheduler=constant,linear_warmup
sweep softmax "${common[@]}" attention=softmax backbone.num_layers="$layers" scheduler=linear_warmup,constant
report --metric test/accuracy

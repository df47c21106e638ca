#!/usr/bin/env bash
# Lion and Tiger vs AdamW (kexue.fm/archives/9473, 9512) at batch 256, and each at batch 32 ("Lion is weak at
# small batch"). Su's rule for Lion against AdamW: lr / 10 and weight decay × 10 (conf/optimizer/lion.yaml does
# both from backbone.finetune_lr, 1e-4 on scratch_base); Tiger with β = 0.965 and the post's pretraining
# α = TIGER_LR (1e-3), in a sweep of its own since its lr is relative to each parameter's RMS.
# scratch_base, 12 × 768; batch 256 for STEPS (1500) steps and batch 32 for 8 × STEPS: 49.2M tokens a run
# either way. Optimizer-state memory: state_bytes in benchmarks/claims/optimizer_state.py's table.
. "$(dirname "$0")/lib.sh"
steps=$(smoke 2 "${STEPS:-1500}")
common=("${mlm[@]}" "${corpus[@]}" scheduler=linear_warmup trainer.val_check_interval=$(smoke 2 250))
batch256=("${common[@]}" data.batch_size=$(smoke 16 256) trainer.max_steps="$steps")
batch32=("${common[@]}" data.batch_size=$(smoke 4 32) trainer.max_steps=$(smoke 2 $((8 * steps))))
sweep batch256 "${batch256[@]}" optimizer=adamw,lion
sweep batch256_tiger "${batch256[@]}" optimizer=tiger optimizer.lr="${TIGER_LR:-1e-3}"
sweep batch32 "${batch32[@]}" optimizer=adamw,lion
sweep batch32_tiger "${batch32[@]}" optimizer=tiger optimizer.lr="${TIGER_LR:-1e-3}"
python benchmarks/claims/optimizer_state.py $(smoke "--hidden 32 --layers 2 --heads 2" "") | tee "$out/state_memory.md"
report --metric test/accuracy

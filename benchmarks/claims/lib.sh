# Sourced by every benchmarks/claims/<claim>.sh: one claim of a post, tested as Hydra multiruns (3 seeds) into
# $BENCH_DIR/claims/<claim>/, ending with compare.py on that folder (report.md, report.html, curves).
#
#   SMOKE=1 bash benchmarks/claims/<claim>.sh    one seed, a 32-wide model, 2 CPU steps on a few hundred
#                                                sentences: composes every run's config and runs it end to end
#                                                (tests/test_claims.py); its numbers mean nothing
#   SEEDS=1,2 ... / LOGGER=wandb ...             fewer seeds / another logger for the full runs
#
# The masked-LM claims train on data=corpus in packed rows of 128 tokens, so a step of batch B sees B × 128
# tokens; each script's header gives its budget in tokens.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
claim=$(basename "$0" .sh)
out=${BENCH_DIR:-outputs/benchmarks}/claims/$claim
mkdir -p "$out"
if [[ -n ${SMOKE:-} ]]; then
  seeds=1
  scale=(trainer.accelerator=cpu trainer.precision=32-true logger=none hydra/launcher=basic
         backbone.hidden_size=32 backbone.num_heads=2 backbone.ffn_size=64
         trainer.max_steps=2 trainer.val_check_interval=2 trainer.check_val_every_n_epoch=null)
  corpus=(data=corpus data.max_sentences=300 data.valid_fraction=0.002 data.test_fraction=0.002)
else
  seeds=${SEEDS:-1,2,3}
  scale=(trainer=gpu "logger=${LOGGER:-csv}")
  corpus=(data=corpus data.packing=true)
fi
mlm=(task=masked_lm loss=lm backbone=scratch_base trainer.max_epochs=1000 trainer.check_val_every_n_epoch=null)

# smoke VALUE FULL: VALUE under SMOKE=1, else FULL (a claim's sizes and budgets)
smoke() { if [[ -n ${SMOKE:-} ]]; then echo "$1"; else echo "$2"; fi; }

# sweep NAME OVERRIDES...: one multirun over the seeds, its jobs in $out/NAME/<n>; the scale's overrides come
# last, so under SMOKE=1 they win over the claim's sizes
sweep() {
  local name=$1
  shift
  python run.py -m "$@" "seed=$seeds" "${scale[@]}" hydra.sweep.dir="$out/$name"
}

# report [compare.py options]: the claim's table over every run of $out (or of $REPORT_OF)
report() { python compare.py "${REPORT_OF:-$out}" --out "$out" "$@"; }

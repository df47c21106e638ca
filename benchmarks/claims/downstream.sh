#!/usr/bin/env bash
# Does pretraining quality carry downstream? The final backbone.pt of every pretraining run of deepnorm.sh,
# gau.sh and optimizers.sh, fine-tuned with CoSENT on STS-B (test Spearman) and as a classifier on TNEWS (dev
# accuracy), 3 seeds each, with the architecture it was pretrained with. Run after those three. Under SMOKE=1
# only the first checkpoint of each.
. "$(dirname "$0")/lib.sh"
claims=${BENCH_DIR:-outputs/benchmarks}/claims
for pretrained in "$claims"/{deepnorm,gau,optimizers}/*/[0-9]*/backbone.pt; do
  [[ -f $pretrained && $pretrained != */lr_probe/* ]] || continue
  first=$(ls "$(dirname "$(dirname "$(dirname "$pretrained")")")"/*/[0-9]*/backbone.pt | grep -v /lr_probe/ | head -1)
  [[ -n ${SMOKE:-} && $pretrained != "$first" ]] && continue
  run=$(dirname "$pretrained") name=$(basename "$(dirname "$(dirname "$(dirname "$pretrained")")")")
  name=${name}_$(basename "$(dirname "$run")")_$(basename "$run")
  arch=$(python -c "import sys, yaml; print(' '.join(o for o in yaml.safe_load(open(sys.argv[1])) \
      if o.split('=')[0].startswith(('attention', 'backbone.')) and 'finetune_lr' not in o))" \
      "$run/.hydra/overrides.yaml")
  tuned=(backbone=scratch_base $arch backbone.checkpoint="$pretrained" trainer.max_epochs=$(smoke 1 5)
         $(smoke "data.train_limit=64 data.eval_limit=32" ""))
  sweep "stsb/$name" task=bi_encoder data=stsb loss=cosent "${tuned[@]}"
  sweep "tnews/$name" task=classifier data=tnews loss=cross_entropy "${tuned[@]}"
done
report

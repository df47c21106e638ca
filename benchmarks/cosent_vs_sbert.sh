#!/usr/bin/env bash
# CoSENT vs Sentence-BERT with a pretrained encoder (kexue.fm/archives/8847), on a GPU; prints one table.
#
#   bash benchmarks/cosent_vs_sbert.sh stsb                          # STS-B zh, train/valid/test
#   bash benchmarks/cosent_vs_sbert.sh bq data.train_limit=20000     # BQ, first 20k train pairs
#
# Extra arguments are Hydra overrides. Needs HUB_DATA_DIR (or data/) and the backbone's model folder
# (models/e5-small-zh by default). GPU utilization is sampled with nvidia-smi every 0.5 s.
set -euo pipefail
data=$1; shift
out=${BENCH_DIR:-outputs/benchmarks}/cosent_vs_sbert/$data
mkdir -p "$out"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$out/gpu.csv" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
python run.py -m experiment=cosent_vs_sbert backbone=pretrained trainer=gpu logger=csv data="$data" \
    loss=cosent,sbert hydra.sweep.dir="$out" "$@"
kill $sampler 2>/dev/null || true
python - "$out" <<'PY'
import csv, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
util = [float(r[0]) for r in csv.reader(open(out / "gpu.csv")) if r and r[0].strip().replace(".", "").isdigit()]
busy = [u for u in util if u > 0]
print(f"\n{'data':8} {'loss':8} {'best val':>9} {'test':>7} {'pairs/s':>8} {'tokens/s':>9} {'wall s':>7}")
for path in sorted(out.glob("*/results.json")):
    r = json.load(open(path))
    t, b = r.get("throughput") or {}, r.get("best") or {}
    print(f"{r['choices']['data']:8} {r['choices']['loss']:8} {100 * b.get('value', float('nan')):9.2f} "
          f"{100 * r.get('test', {}).get('test/spearman', float('nan')):7.2f} {t.get('examples_per_s', 0):8.1f} "
          f"{t.get('tokens_per_s', 0):9.0f} {r['wall_time_s']:7.1f}")
print(f"GPU utilization over the whole script: mean {sum(util) / max(1, len(util)):.0f}% "
      f"({len(util)} samples; mean {sum(busy) / max(1, len(busy)):.0f}% over samples > 0)")
PY

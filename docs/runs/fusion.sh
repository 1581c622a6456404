#!/usr/bin/env bash
# The fusion runs behind docs/fusion.md: SimCLR + Models Genesis, fused at their default depths
# (contrastive 50 %, restorative 75 %), on PneumoniaMNIST and BreastMNIST, 100 % and 10 % labels,
# 3 seeds. Usage: bash docs/runs/fusion.sh RUNS_DIR
#   RUNS_DIR/simclr_pneumoniamnist and RUNS_DIR/genesis_pneumoniamnist come from the recipes in
#   docs/pretraining.md; the BreastMNIST checkpoints are pretrained here if missing.
# Then: python tools/summarize.py RUNS_DIR/fusion --by data label_fraction  (and docs/fusion.md)
set -euo pipefail
RUNS=${1:?usage: fusion.sh RUNS_DIR}
cd "$(dirname "$0")/../.."
for m in simclr genesis; do
  run=$RUNS/${m}_breastmnist
  [ -f "$run/checkpoint.pt" ] || python tools/pretrain.py "recipes/pretrain/${m}_breastmnist.yaml" \
    out="$run" --resume > "$run.log" 2>&1
done
for data in pneumoniamnist breastmnist; do
  for lf in 1.0 0.1; do
    for seed in 0 1 2; do
      out=$RUNS/fusion/${data}_lf${lf}_s$seed
      [ -f "$out/metrics.json" ] && continue
      python tools/ensemble.py --checkpoint "$RUNS/simclr_$data/checkpoint.pt" \
        --checkpoint "$RUNS/genesis_$data/checkpoint.pt" --data "$data" \
        --label-fraction "$lf" --seed "$seed" --out "$out" > "$out.log" 2>&1 \
        || { echo "FAILED $out"; continue; }
      echo "done $out"
    done
  done
done

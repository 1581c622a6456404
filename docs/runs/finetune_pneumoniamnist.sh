#!/usr/bin/env bash
# The fine-tuning runs behind docs/finetuning.md (PneumoniaMNIST, resnet18, 28 px, 8 epochs).
# Usage: bash docs/runs/finetune_pneumoniamnist.sh RUNS_DIR
#   RUNS_DIR holds the pretraining runs (simclr_pneumoniamnist/, genesis_pneumoniamnist/, made
#   by the commands in docs/pretraining.md); results go to RUNS_DIR/ft/. Finished runs are
#   skipped and unfinished ones resumed, so the script can be re-run after a kill.
# Then: python tools/summarize.py RUNS_DIR/ft --by checkpoint layers truncate strategy
set -euo pipefail
RUNS=${1:?usage: finetune_pneumoniamnist.sh RUNS_DIR}
EPOCHS=${EPOCHS:-8}
cd "$(dirname "$0")/../.."
one() {  # name, then finetune.py flags
  local name=$1; shift
  [ -f "$RUNS/ft/$name/metrics.json" ] && return 0
  python tools/finetune.py --data pneumoniamnist --epochs "$EPOCHS" --out "$RUNS/ft/$name" \
    --resume "$@" > "$RUNS/ft/$name.log" 2>&1 || { echo "FAILED $name"; return 0; }
  echo "done $name $(tail -1 "$RUNS/ft/$name.log" | cut -c1-100)"
}
quarters() {  # ckpt name
  local ck=$RUNS/$1_pneumoniamnist/checkpoint.pt
  for seed in 0 1 2; do
    for layers in 0-25 25-50 50-75 75-100 0-100; do
      one "$1_${layers}_s$seed" --checkpoint "$ck" --layers "$layers" --seed "$seed"
    done
    one "$1_0-75_t75_s$seed" --checkpoint "$ck" --layers 0-75 --truncate 75 --seed "$seed"
  done
}
quarters simclr
for seed in 0 1 2; do
  one "scratch_0-100_s$seed" --checkpoint none --arch resnet18 --layers 0-100 --seed "$seed"
done
quarters genesis
for seed in 0 1 2; do
  for s in lp lp-ft gradual-lf gradual-fl l1-sp l2-sp auto-rgn discriminative; do
    one "simclr_${s}_s$seed" --checkpoint "$RUNS/simclr_pneumoniamnist/checkpoint.pt" \
      --strategy "$s" --seed "$seed"
  done
done

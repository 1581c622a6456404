#!/usr/bin/env bash
# The small check of docs/auto.md (NOT issue 15's Must-show evaluation): two quick checkpoints
# (SimCLR 3 epochs, Models Genesis 4 epochs, both on the PneumoniaMNIST train images), their
# depth probes, and recipes/study/auto.yaml cut down to PneumoniaMNIST 10 % and BreastMNIST
# 100 %, 2 seeds: auto against the 8 fixed selections, 72 fine-tuning cells.
# Usage: bash docs/runs/auto_check.sh RUNS_DIR   (resumes after a kill; about 40 CPU-minutes)
set -euo pipefail
RUNS=${1:?usage: auto_check.sh RUNS_DIR}
cd "$(dirname "$0")/../.."
export SSL_FT_DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
mkdir -p "$RUNS"
[ -f "$RUNS/qs/checkpoint.pt" ] || python tools/pretrain.py recipes/quickstart.yaml \
  out="$RUNS/qs" --resume
[ -f "$RUNS/genesis/checkpoint.pt" ] || python tools/pretrain.py \
  recipes/pretrain/genesis_pneumoniamnist.yaml out="$RUNS/genesis" train.epochs=4 \
  train.save_every=0 eval.every=2 --resume
for d in "pneumoniamnist 0.1" "breastmnist 1.0"; do
  set -- $d
  python tools/probe_depths.py --checkpoint "$RUNS/qs/checkpoint.pt" \
    --label "SimCLR, 3 epochs (contrastive)" --checkpoint "$RUNS/genesis/checkpoint.pt" \
    --label "Genesis, 4 epochs (restorative)" --checkpoint none --label "random init" \
    --arch resnet18 --data "$1" --label-fraction "$2" --seed 0 --seed 1 --out "$RUNS/probe_$1"
done
python tools/study.py recipes/study/auto.yaml out="$RUNS/study" threads=1 \
  "checkpoints.simclr=$RUNS/qs/checkpoint.pt" "checkpoints.genesis=$RUNS/genesis/checkpoint.pt" \
  "finetune.grid.data,label_fraction,epochs,batch_size,size,channels=[[pneumoniamnist,0.1,14,64,null,null],[breastmnist,1.0,14,64,null,null]]" \
  "finetune.grid.seed=[0,1]"
python docs/runs/auto_rules.py "$RUNS/study"   # the rule against the alternatives

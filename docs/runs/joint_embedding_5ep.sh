#!/usr/bin/env bash
# The 5-epoch check of docs/pretraining.md ("Five epochs of each joint-embedding method"):
# each method's PneumoniaMNIST recipe for 5 epochs on the full train split with the online kNN
# every epoch, the tried fixes, SimCLR in the same budget, then a linear probe of each checkpoint
# and of a random resnet18 (3 seeds). Usage: bash docs/runs/joint_embedding_5ep.sh RUNS_DIR
set -euo pipefail
RUNS=${1:?usage: joint_embedding_5ep.sh RUNS_DIR}
cd "$(dirname "$0")/../.."
DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
run() {  # run NAME METHOD [overrides...]
  local name=$1 method=$2; shift 2
  [ -f "$RUNS/$name/checkpoint.pt" ] && return
  python tools/pretrain.py "recipes/pretrain/${method}_pneumoniamnist.yaml" data.root="$DATA" \
    out="$RUNS/$name" train.epochs=5 eval.every=1 train.threads=1 "$@"
}
run byol byol
run byol_m0.9 byol method_args.momentum=0.9
run vicreg vicreg
run barlow_twins barlow_twins
run dino dino
run dino_bn dino method_args.batch_norm=true
run dino_bn_m0.99 dino method_args.batch_norm=true method_args.momentum=0.99
run simclr simclr
for name in byol byol_m0.9 vicreg barlow_twins dino dino_bn dino_bn_m0.99 simclr; do
  [ -f "$RUNS/$name/probe.json" ] || python tools/probe.py --checkpoint "$RUNS/$name/checkpoint.pt" \
    --data pneumoniamnist --data-root "$DATA" --out "$RUNS/$name/probe.json"
done
[ -f "$RUNS/probe_random.json" ] || python tools/probe.py --checkpoint none --arch resnet18 \
  --data pneumoniamnist --data-root "$DATA" --seed 0 --seed 1 --seed 2 --out "$RUNS/probe_random.json"

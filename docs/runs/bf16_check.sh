#!/usr/bin/env bash
# Does bf16 autocast cost probe AUC? (issue 16: "bf16 used where it is >= 1.3x fp32 without a
# loss in probe AUC"). The same SimCLR recipe (recipes/pretrain/simclr_pneumoniamnist.yaml,
# 40 epochs) pretrained in bf16 (the default on this CPU) and in fp32 for every seed of SEEDS,
# then the same linear probes of each: PneumoniaMNIST at 100 % and 10 % of the labels (3 label
# draws) and BreastMNIST at 100 %. The table: every pretraining, the mean per precision and the
# paired difference bf16 - fp32 over the seeds (mean and sd).
#   SEEDS="0 1 2" PAIR=1 bash docs/runs/bf16_check.sh RUNS [extra pretraining overrides]
# PAIR=1 pretrains a seed's two precisions at once, each pinned to its own core (taskset -c 0
# and -c 1) with train.threads=1 (two 2-thread processes would collapse each other). Seed 0's
# runs are RUNS/simclr_pneumoniamnist (bf16: the Khan & Fang study's model,
# docs/runs/studies.sh) and RUNS/simclr_pneumoniamnist_fp32, seed N's the same with _seedN;
# finished runs are reused. Results: RUNS/bf16_check/*.json and the table on stdout.
set -euo pipefail
RUNS=${1:?usage: bf16_check.sh RUNS [overrides]}
shift
SEEDS=${SEEDS:-0}
cd "$(dirname "$0")/../.."
export SSL_FT_DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
OUT=$RUNS/bf16_check
mkdir -p "$OUT"
run_dir() {  # precision seed
  local d=$RUNS/simclr_pneumoniamnist
  [ "$1" = fp32 ] && d=${d}_fp32
  [ "$2" = 0 ] || d=${d}_seed$2
  echo "$d"
}
pretrain() {  # precision seed core ("": not pinned) [overrides]
  local prec=$1 seed=$2 core=$3 run; shift 3
  run=$(run_dir "$prec" "$seed")
  [ -f "$run/checkpoint.pt" ] && return 0
  local pin=(); [ -n "$core" ] && pin=(taskset -c "$core")
  "${pin[@]}" python tools/pretrain.py recipes/pretrain/simclr_pneumoniamnist.yaml out="$run" \
    train.precision="$prec" seed="$seed" "$@" --resume > "$run.log" 2>&1
}
for seed in $SEEDS; do
  if [ "${PAIR:-0}" = 1 ]; then
    pretrain bf16 "$seed" 0 train.threads=1 "$@" & pretrain fp32 "$seed" 1 train.threads=1 "$@"
    wait
  else
    pretrain bf16 "$seed" "" "$@"; pretrain fp32 "$seed" "" "$@"
  fi
  for prec in bf16 fp32; do
    ck=$(run_dir $prec "$seed")/checkpoint.pt
    python tools/probe.py --checkpoint "$ck" --data pneumoniamnist --out "$OUT/${prec}_s${seed}_pneu100.json" > /dev/null
    python tools/probe.py --checkpoint "$ck" --data pneumoniamnist --label-fraction 0.1 \
      --seed 0 --seed 1 --seed 2 --out "$OUT/${prec}_s${seed}_pneu10.json" > /dev/null
    python tools/probe.py --checkpoint "$ck" --data breastmnist --out "$OUT/${prec}_s${seed}_breast100.json" > /dev/null
  done
done
python docs/runs/bf16_table.py "$RUNS" $SEEDS

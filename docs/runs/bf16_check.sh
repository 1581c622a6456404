#!/usr/bin/env bash
# Does bf16 autocast cost probe AUC? (issue 16: "bf16 used where it is >= 1.3x fp32 without a
# loss in probe AUC"). The same SimCLR recipe (recipes/pretrain/simclr_pneumoniamnist.yaml,
# 40 epochs) pretrained in bf16 (the default on this CPU) and in fp32 for every seed of SEEDS,
# then the same linear probes of each: PneumoniaMNIST at 100 % and 10 % of the labels (3 label
# draws), and three transfer targets at 100 %, at the pretraining's 28 px grey: BreastMNIST,
# HAM10000 dermoscopy and the brain tumour MRI. The table: every pretraining, the mean per
# precision and the paired difference bf16 - fp32 over the seeds (mean and sd).
#   SEEDS="0 1 2" PAIR=1 bash docs/runs/bf16_check.sh RUNS [extra pretraining overrides]
# PAIR=1 runs the two precisions as two lanes at once, each pinned to its own core (taskset -c 0
# for bf16, -c 1 for fp32) with one thread (two 2-thread processes would collapse each other):
# a lane pretrains its precision for every seed, then probes them. Seed 0's runs are
# RUNS/simclr_pneumoniamnist (bf16) and RUNS/simclr_pneumoniamnist_fp32, seed N's the same with
# _seedN; finished runs and probes are reused. Results: RUNS/bf16_check/*.json, the table on stdout.
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
probe() {  # checkpoint out-json probe-args...
  local ck=$1 out=$2; shift 2
  [ -f "$out" ] || "${PIN[@]}" python tools/probe.py --checkpoint "$ck" "$@" --out "$out" > /dev/null
}
lane() {  # precision core ("": not pinned) [overrides]
  local prec=$1 core=$2 run ck p; shift 2
  PIN=(); [ -n "$core" ] && PIN=(taskset -c "$core")
  local threads=(); [ -n "$core" ] && threads=(train.threads=1)
  for seed in $SEEDS; do
    run=$(run_dir "$prec" "$seed")
    [ -f "$run/checkpoint.pt" ] || "${PIN[@]}" python tools/pretrain.py \
      recipes/pretrain/simclr_pneumoniamnist.yaml out="$run" train.precision="$prec" \
      seed="$seed" "${threads[@]}" "$@" --resume > "$run.log" 2>&1
  done
  for seed in $SEEDS; do
    ck=$(run_dir "$prec" "$seed")/checkpoint.pt
    p=$OUT/${prec}_s${seed}
    probe "$ck" "${p}_pneu100.json" --data pneumoniamnist
    probe "$ck" "${p}_pneu10.json" --data pneumoniamnist --label-fraction 0.1 --seed 0 --seed 1 --seed 2
    probe "$ck" "${p}_breast100.json" --data breastmnist
    probe "$ck" "${p}_ham100.json" --data ham10000_dermoscopy_unique_lesion_64 --size 28 --channels 1
    probe "$ck" "${p}_brain100.json" --data brain_tumor_mri_sartaj_64 --size 28 --channels 1
  done
}
if [ "${PAIR:-0}" = 1 ]; then
  lane bf16 0 "$@" & lane fp32 1 "$@"
  wait
else
  lane bf16 "" "$@"; lane fp32 "" "$@"
fi
python docs/runs/bf16_table.py "$RUNS" $SEEDS

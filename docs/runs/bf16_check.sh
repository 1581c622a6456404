#!/usr/bin/env bash
# Does bf16 autocast cost probe AUC? (issue 16: "bf16 used where it is >= 1.3x fp32 without a
# loss in probe AUC"). The same SimCLR recipe (recipes/pretrain/simclr_pneumoniamnist.yaml,
# 40 epochs, seed 0) pretrained once in bf16 (the default on this CPU) and once in fp32, then
# the same linear probes of both: PneumoniaMNIST at 100 % and 10 % of the labels (3 label
# draws) and BreastMNIST at 100 %.
#   bash docs/runs/bf16_check.sh RUNS [extra pretraining overrides, e.g. train.threads=1]
# RUNS/simclr_pneumoniamnist (bf16) is the Khan & Fang study's model (docs/runs/studies.sh):
# reused when it exists. Results: RUNS/bf16_check/*.json and a table on stdout.
set -euo pipefail
RUNS=${1:?usage: bf16_check.sh RUNS [overrides]}
shift
cd "$(dirname "$0")/../.."
export SSL_FT_DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
OUT=$RUNS/bf16_check
mkdir -p "$OUT"
for prec in bf16 fp32; do
  run=$RUNS/simclr_pneumoniamnist; [ $prec = fp32 ] && run=$RUNS/simclr_pneumoniamnist_fp32
  [ -f "$run/checkpoint.pt" ] || python tools/pretrain.py recipes/pretrain/simclr_pneumoniamnist.yaml \
    out="$run" train.precision=$prec "$@" --resume > "$run.log" 2>&1
  python tools/probe.py --checkpoint "$run/checkpoint.pt" --data pneumoniamnist --out "$OUT/${prec}_pneu100.json" > /dev/null
  python tools/probe.py --checkpoint "$run/checkpoint.pt" --data pneumoniamnist --label-fraction 0.1 \
    --seed 0 --seed 1 --seed 2 --out "$OUT/${prec}_pneu10.json" > /dev/null
  python tools/probe.py --checkpoint "$run/checkpoint.pt" --data breastmnist --out "$OUT/${prec}_breast100.json" > /dev/null
done
python - "$OUT" "$RUNS" <<'PY'
import json, sys
from pathlib import Path
out, runs = Path(sys.argv[1]), Path(sys.argv[2])
def auc(name, split):
    rows = json.loads((out / name).read_text())
    rows = rows if isinstance(rows, list) else rows.get("results", [rows])
    vals = [r[split]["auc"] for r in rows]
    return sum(vals) / len(vals)
from statistics import median
print("| precision | median images/s | final kNN val AUC | PneumoniaMNIST 100 % val / test "
      "| 10 % (3 draws) val / test | BreastMNIST val / test |")
print("|---|---|---|---|---|---|")
for prec, run in (("bf16", "simclr_pneumoniamnist"), ("fp32", "simclr_pneumoniamnist_fp32")):
    s = json.loads((runs / run / "summary.json").read_text())
    rows = [json.loads(x) for x in (runs / run / "metrics.jsonl").read_text().splitlines()]
    speed = median(r["images_per_s"] for r in rows if "images_per_s" in r)
    cells = [f"{auc(f'{prec}_{k}.json', 'val'):.4f} / {auc(f'{prec}_{k}.json', 'test'):.4f}"
             for k in ("pneu100", "pneu10", "breast100")]
    print(f"| {s['runtime']['precision']} | {speed:.0f} | {s['final']:.4f} | " + " | ".join(cells) + " |")
PY

#!/usr/bin/env bash
# The lp / lp-ft check of docs/finetuning.md ("lp and lp-ft: the probe first"): a 3-epoch
# quick-start SimCLR checkpoint (PneumoniaMNIST), then on BreastMNIST (seed 0) tools/probe.py
# against `--strategy lp`, and `ft` against `lp-ft` (and two of its variants) at the same
# 6 epochs x 8 steps (batch 64); then the probed head's loss with running vs batch BN statistics.
# Usage: bash docs/runs/lp_check.sh RUNS_DIR   (resumes: finished runs are skipped)
set -euo pipefail
RUNS=${1:?usage: lp_check.sh RUNS_DIR}
cd "$(dirname "$0")/../.."
DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
CK=$RUNS/lpck/checkpoint.pt
[ -f "$CK" ] || python tools/pretrain.py recipes/quickstart.yaml data.root="$DATA" \
  train.epochs=3 out="$RUNS/lpck"
OUT=$RUNS/lp_check
mkdir -p "$OUT"
[ -f "$OUT/probe.json" ] || python tools/probe.py --checkpoint "$CK" --data breastmnist \
  --data-root "$DATA" --out "$OUT/probe.json"
[ -f "$OUT/lp/metrics.json" ] || python tools/finetune.py --checkpoint "$CK" --data breastmnist \
  --data-root "$DATA" --strategy lp --out "$OUT/lp"
for run in "ft --strategy ft" "lp-ft --strategy lp-ft" \
           "lp-ft_bn-batch --strategy lp-ft strategy_args.bn=batch" \
           "lp-ft_scale1 --strategy lp-ft strategy_args.ft_lr_scale=1.0" \
           "ft_sgd --strategy ft --lr 0.01 optimizer=sgd" \
           "lp-ft_sgd --strategy lp-ft --lr 0.01 optimizer=sgd"; do
  set -- $run
  name=$1; shift
  [ -f "$OUT/$name/metrics.json" ] || python tools/finetune.py --checkpoint "$CK" \
    --data breastmnist --data-root "$DATA" --epochs 6 --batch-size 64 --seed 0 "$@" \
    --out "$OUT/$name"
done
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
probe = json.loads((out / "probe.json").read_text())[0]
print(f"| tools/probe.py | {probe['test']['auc']:.4f} | {probe['test']['acc']:.4f} | C {probe['C']:g} |")
for name in ("lp", "ft", "lp-ft", "lp-ft_bn-batch", "lp-ft_scale1", "ft_sgd", "lp-ft_sgd"):
    m = json.loads((out / name / "metrics.json").read_text())
    p = m.get("probe") or {}
    extra = f"C {p['C']:g}, probe {p['seconds']:.1f} s" if p else ""
    print(f"| {name} | {m['test']['auc']:.4f} | {m['test']['acc']:.4f} | {m['optimizer_steps']} "
          f"steps, best epoch {m['best_epoch']}; {extra} |")
PY
# the probed head's loss on 64 BreastMNIST train images, BatchNorm with running statistics (eval
# mode, what the probe was fitted on) and with batch statistics (train mode)
python - "$OUT" "$DATA" <<'PY'
import sys, numpy as np, torch
from ssl_ft.data import load_data
from ssl_ft.finetune import load_finetuned
model = load_finetuned(f"{sys.argv[1]}/lp/model.pt")
splits = load_data("breastmnist", data_root=sys.argv[2])
x = torch.from_numpy(splits.images["train"][:64].astype(np.float32)) / 255
y = torch.from_numpy(splits.labels["train"][:64])
with torch.no_grad():
    for mode in ("eval", "train"):
        model.train(mode == "train")
        loss = torch.nn.functional.cross_entropy(model(x), y)
        print(f"probed head, BatchNorm in {mode} mode: loss {float(loss):.3f}")
PY

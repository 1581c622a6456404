#!/usr/bin/env bash
# Linear probes behind the "general medical source" table of docs/pretraining.md: the frozen
# features of the general source (recipes/pretrain/general_medical_28.yaml) against a randomly
# initialised resnet18 (3 init seeds), on every dataset of ../shared/data at the source's 28 px
# grey (or the 64 px RGB source, recipes/pretrain/general_medical_64.yaml, at 64 px x3), logistic
# regression with C chosen on val, test AUC/ACC.
# Usage: bash docs/runs/general_probes.sh CHECKPOINT OUT_DIR [SIZE CHANNELS]   (default 28 1)
set -euo pipefail
CKPT=${1:?usage: general_probes.sh CHECKPOINT OUT_DIR}
OUT=${2:?usage: general_probes.sh CHECKPOINT OUT_DIR}
cd "$(dirname "$0")/../.."
export SSL_FT_DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
SIZE=${3:-28}
CHANNELS=${4:-1}
mkdir -p "$OUT"
for data in pneumoniamnist breastmnist chest_xray_kermany_64 busi_breast_ultrasound_64 \
            brain_tumor_mri_sartaj_64 ham10000_dermoscopy_unique_lesion_64 \
            lc25000_lung_colon_histology_64; do
  for src in general none; do
    # PneumoniaMNIST and BreastMNIST exist here at 28 px only (their own 64 px files would need
    # --download); the 64 px source is probed on the five 64 px datasets
    if [ "$SIZE" != 28 ] && [[ $data == *mnist ]]; then continue; fi
    json=$OUT/${src}_${data}.json
    [ -f "$json" ] && continue
    if [ $src = general ]; then c=(--checkpoint "$CKPT"); else c=(--checkpoint none --arch resnet18); fi
    echo "== $src $data"
    python tools/probe.py "${c[@]}" --data "$data" --size "$SIZE" --channels "$CHANNELS" \
      --seed 0 --seed 1 --seed 2 --out "$json.tmp" && mv "$json.tmp" "$json"
  done
done
python - "$OUT" <<'PY'
import json, sys, pathlib, statistics as st
rows = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    runs = json.loads(f.read_text())
    src = "none" if runs[0]["checkpoint"] == "none" else "general"
    auc = [r["test"]["auc"] for r in runs]
    rows.setdefault(runs[0]["data"], {})[src] = (st.mean(auc), st.stdev(auc))
print("| data | general source | random init | difference |\n|---|---|---|---|")
for data, v in rows.items():
    g, n = v.get("general"), v.get("none")
    if g and n:
        print(f"| {data} | {g[0]:.3f} ± {g[1]:.3f} | {n[0]:.3f} ± {n[1]:.3f} | {g[0] - n[0]:+.3f} |")
PY

#!/usr/bin/env bash
# Linear probes behind the "how strong is the source" table of docs/results.md (Davila study):
# the frozen features of each architecture's SimCLR source against the same architecture
# randomly initialised, on the study's three datasets at its size and channels, 3 seeds (the seed
# draws the random init and the same train subset as the study's cells of that seed).
# Then two checks of the reading (below). Usage: bash docs/runs/davila_probes.sh RUNS_DIR
# (after docs/runs/studies.sh RUNS_DIR davila)
set -euo pipefail
RUNS=${1:?usage: davila_probes.sh RUNS_DIR}
cd "$(dirname "$0")/../.."
export SSL_FT_DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
OUT=$RUNS/study/davila/probes
mkdir -p "$OUT"
for arch in resnet50 densenet121 vgg19_bn; do
  ckpt=$(ls "$RUNS"/study/davila/cells/pretrain/simclr_${arch}_*/checkpoint.pt)
  for spec in "pneumoniamnist --label-fraction 0.1" "breastmnist" \
              "ham10000_dermoscopy_unique_lesion_64 --limit 500"; do
    set -- $spec
    data=$1; shift
    for src in simclr none; do
      json=$OUT/${src}_${arch}_${data}.json
      [ -f "$json" ] && continue
      if [ $src = simclr ]; then c=(--checkpoint "$ckpt"); else c=(--checkpoint none --arch "$arch"); fi
      echo "== $src $arch $data"
      python tools/probe.py "${c[@]}" --data "$data" "$@" --size 28 --channels 1 \
        --seed 0 --seed 1 --seed 2 --out "$json.tmp" && mv "$json.tmp" "$json"
    done
  done
done
python - "$OUT" <<'PY'
import json, sys, pathlib, statistics as st
rows = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    runs = json.loads(f.read_text())  # one probe result per seed, each naming its inputs
    src = "none" if runs[0]["checkpoint"] == "none" else "simclr"
    auc = [r["test"]["auc"] for r in runs]
    rows.setdefault((runs[0]["data"], runs[0]["arch"]), {})[src] = \
        f"{st.mean(auc):.3f} ± {st.stdev(auc):.3f}"
print("| data | arch | SimCLR source | random init |\n|---|---|---|---|")
for (data, arch), v in sorted(rows.items()):
    print(f"| {data} | {arch} | {v.get('simclr', '')} | {v.get('none', '')} |")
PY

# Two checks of the reading (resnet50, BreastMNIST, 3 seeds), against the study's 6-epoch cells:
# LP-FT with its fine-tuning phase as long as ft's (6 LP + 6 FT epochs), and Auto-RGN at 10x lr.
# (These ran before lp-ft became the converged probe + ft's full budget: strategy_args.lp_epochs
# no longer exists; repeat them from commit f9c0bb3, or drop the lp_epochs argument for today's lp-ft.)
ckpt=$(ls "$RUNS"/study/davila/cells/pretrain/simclr_resnet50_*/checkpoint.pt)
for seed in 0 1 2; do
  for check in "lp-ft_12ep --strategy lp-ft --epochs 12 strategy_args.lp_epochs=6 --lr 1e-3" \
               "auto-rgn_lr1e-2 --strategy auto-rgn --epochs 6 --lr 1e-2"; do
    set -- $check
    name=$1; shift
    out=$RUNS/study/davila/checks/$name/seed$seed
    [ -f "$out/metrics.json" ] && continue
    python tools/finetune.py --checkpoint "$ckpt" --data breastmnist --size 28 --channels 1 \
      --batch-size 64 "$@" --seed $seed --out "$out" > /dev/null
  done
done
python tools/summarize.py "$RUNS"/study/davila/cells/finetune/checkpoint=simclr_resnet50,data=breastmnist,*strategy=ft-* \
  "$RUNS/study/davila/checks" --by strategy --paired strategy=ft

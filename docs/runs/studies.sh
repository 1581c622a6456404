#!/usr/bin/env bash
# The two studies behind docs/results.md. Usage: bash docs/runs/studies.sh RUNS_DIR [khan_fang|davila]
#   khan_fang: needs RUNS_DIR/{simclr,moco,genesis}_pneumoniamnist/checkpoint.pt; they are
#              pretrained here with the shipped recipes if missing one after another (measured
#              2026-12-02: 12-13 min each on one pinned core in bf16, two lanes at once, docs/results.md).
#   davila:    pretrains its three SimCLR sources itself, then runs its cells.
# Both resume: re-run the same command after a kill. Reports: RUNS_DIR/study/NAME/results.md
# The data root is $SSL_FT_DATA (default here: ../shared/data next to the repository).
set -euo pipefail
RUNS=${1:?usage: studies.sh RUNS_DIR [khan_fang|davila]}
WHICH=${2:-all}
cd "$(dirname "$0")/../.."
export SSL_FT_DATA=${SSL_FT_DATA:-$(cd .. && pwd)/shared/data}
RUNS=$(mkdir -p "$RUNS" && cd "$RUNS" && pwd)
if [ "$WHICH" != davila ]; then
  for m in simclr moco genesis; do
    run=$RUNS/${m}_pneumoniamnist
    [ -f "$run/checkpoint.pt" ] || python tools/pretrain.py "recipes/pretrain/${m}_pneumoniamnist.yaml" \
      out="$run" --resume > "$run.log" 2>&1
  done
  python tools/study.py recipes/study/khan_fang.yaml out="$RUNS/study/khan_fang" \
    "checkpoints.simclr=$RUNS/simclr_{data}/checkpoint.pt" \
    "checkpoints.moco=$RUNS/moco_{data}/checkpoint.pt" \
    "checkpoints.genesis=$RUNS/genesis_{data}/checkpoint.pt"
fi
if [ "$WHICH" != khan_fang ]; then
  python tools/study.py recipes/study/davila.yaml out="$RUNS/study/davila"
fi

#!/usr/bin/env python
"""Plot pretraining runs side by side: loss and the online kNN/probe AUC per epoch.

    python tools/plot_runs.py runs/pretrain/simclr_pneumoniamnist runs/pretrain/moco_pneumoniamnist \\
        --out docs/figures/pretraining_curves.png

Reads each run folder's metrics.jsonl; the epoch-0 point (before training) comes from the
TensorBoard log when present. ``--examples RUN`` also saves the last example reconstructions of a
restorative run (original / corrupted / restored rows) as a PNG.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ssl_ft.cli import ArgumentParser, run
from ssl_ft.errors import UserError


def _series(run_dir: Path) -> tuple[list[dict], dict[str, tuple[int, float]]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl (is it a pretraining run folder?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    start: dict[str, tuple[int, float]] = {}
    tb = run_dir / "tb"
    if tb.is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ea = EventAccumulator(str(tb))
        ea.Reload()
        for tag in ea.Tags().get("scalars", []):
            if tag.endswith("_auc"):
                zero = [e for e in ea.Scalars(tag) if e.step == 0]
                if zero:
                    start[tag.split("/")[-1]] = (0, zero[-1].value)
    return rows, start


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="plot_runs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--examples", help="a restorative run whose example images to save")
    p.add_argument("--examples-out", help="PNG for --examples (default: next to --out)")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run_dir in map(Path, args.runs):
        rows, start = _series(run_dir)
        epochs = [r["epoch"] for r in rows]
        loss = [r["loss"] for r in rows]
        ax_loss.plot(epochs, [v / loss[0] for v in loss], label=run_dir.name)
        for key in sorted({k for r in rows for k in r if k.endswith("_auc")}):
            pts = [(r["epoch"], r[key]) for r in rows if key in r]
            if key in start:
                pts = [start[key], *pts]
            ax_auc.plot(*zip(*pts, strict=True), marker="o", ms=3,
                        label=f"{run_dir.name} ({key.split('_')[0]})")
    ax_loss.set(xlabel="epoch", ylabel="loss / first-epoch loss", title="pretraining loss")
    ax_auc.set(xlabel="epoch", ylabel="validation AUC", title="online evaluation (frozen)")
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    if args.examples:
        _save_examples(Path(args.examples), args.examples_out or
                       str(Path(args.out).with_name(Path(args.examples).name + "_examples.png")))


def _save_examples(run_dir: Path, out: str) -> None:
    import io

    import numpy as np
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    ea.Reload()
    if "examples" not in ea.Tags().get("images", []):
        raise UserError(f"{run_dir} logged no example images (only restorative methods do)")
    last = ea.Images("examples")[-1]
    img = Image.open(io.BytesIO(last.encoded_image_string))
    scale = max(1, 512 // img.width)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    Image.fromarray(np.asarray(img)).save(out)
    print(f"wrote {out} (epoch {last.step})")


if __name__ == "__main__":
    sys.exit(run(main))

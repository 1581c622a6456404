"""The end-of-run summary of a pretraining: best epoch, how far the last one fell from it, and
what pretraining added over the random initialisation it started from (epoch 0), all on the
same online evaluation (kNN or linear probe on the validation split)."""

from __future__ import annotations

__all__ = ["best_epoch", "run_summary"]

#: A gain below this is read as "nothing yet" (the kNN AUC of a 2-class val split of ~500
#: images moves by about this much between two random initialisations).
NOISE = 0.005


def best_epoch(history: list[dict], key: str) -> dict | None:
    """The trained epoch (>= 1) with the highest ``key``, or ``None`` if none was scored.
    Ties go to the earlier epoch."""
    scored = [h for h in history if h.get("epoch", 0) >= 1 and key in h]
    if not scored:
        return None
    return max(scored, key=lambda h: (h[key], -h["epoch"]))


def run_summary(history: list[dict], key: str) -> dict:
    """A JSON-ready summary and its one-paragraph ``text``."""
    best = best_epoch(history, key)
    before = next((h[key] for h in history if h.get("epoch") == 0 and key in h), None)
    last = history[-1] if history else {}
    out = {"key": key, "before": before, "best_epoch": None, "best": None,
           "final_epoch": last.get("epoch"), "final": last.get(key)}
    if best is None:
        out["text"] = f"no online evaluation ({key}) was run: nothing to compare"
        return out
    out.update(best_epoch=best["epoch"], best=best[key])
    parts = [f"best {key} {best[key]:.4f} at epoch {best['epoch']} (best.pt)"]
    if out["final"] is not None and out["final_epoch"] != best["epoch"]:
        parts.append(f"final epoch {out['final_epoch']}: {out['final']:.4f} "
                     f"({out['final'] - best[key]:+.4f} from the best)")
    if before is not None:
        gain = best[key] - before
        out["gain_over_init"] = gain
        if gain > NOISE:
            parts.append(f"pretraining added {gain:+.4f} over the random init ({before:.4f})")
        else:
            parts.append(f"pretraining added nothing measurable yet over the random init "
                         f"({before:.4f}; best {gain:+.4f}): train longer or on more data")
    out["text"] = "; ".join(parts)
    return out

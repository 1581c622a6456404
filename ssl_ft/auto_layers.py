"""``layers: auto`` / ``truncate: auto``: choose the layer range and the cut, then fine-tune.

The chooser never reads the test split (it runs on :func:`~ssl_ft.auto_evidence.without_test`
data) and writes why it chose what it chose into ``metrics.json`` (``auto``) and
``out/auto.json``. Among the candidates (Khan & Fang's quarters, 0-100, 50-100, 25-75 and
0-75 t75 by default):

1. **The cut.** A linear probe's validation AUC at every candidate cut (75 and 100 by
   default). The network is cut shallower only when that probe beats the deepest cut by more
   than ``cut_margin``: the last units then lose what the task needs (Head2Toe, Evci et al.,
   ICML 2022: intermediate features can transfer better than the last ones).
2. **The range: a race of the quarters.** The candidates at that cut that are one of
   ``race_among`` (Khan & Fang's four quarters by default; under a fixed 75 % cut the three
   it keeps; at the default candidates' 75 % cut only 0-75, which then runs) start the real
   run; after ``race_rung`` of the epochs the worse half by best
   validation AUC so far stops, the rest go on to twice as many, until one is left
   (successive halving, Jamieson & Talwalkar, AISTATS 2016; SubTuning, Kaplun et al. 2023,
   also picks layers by the validation score of fine-tuning). The survivor is not restarted:
   its run continues in ``out``, so only the stopped runs cost extra.
3. **Otherwise the gradient evidence.** Where the cut keeps none of ``race_among`` (or it is
   empty), the candidate with the highest relative gradient norm ``||g|| / ||w||`` over its
   units, measured with the probe's head on a few train batches (Auto-RGN, Lee et al.,
   "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts", ICLR 2023), and with
   ``race: N`` the first ``1 + N`` by Auto-RGN raced as above. (Auto-RGN alone was the rule
   until the general medical source showed it 0.024 below the best fixed range on average;
   the race of the quarters was 0.012 below, ``docs/auto.md``.)

The probe costs one forward pass per image and a few logistic fits; the race about two
quarter-runs (four quarters for a quarter of the epochs, two for another quarter, the winner
to the end). A random initialisation (``checkpoint: none``) has nothing to keep and
trains every kept unit. ``layers: auto`` with a fixed ``truncate`` chooses the range under that
cut; ``truncate: auto`` with fixed ``layers`` chooses the cut. See ``docs/auto.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssl_ft.auto_evidence import (
    gradient_evidence,
    probe_evidence,
    range_statistics,
    subset_train,
    without_test,
)
from ssl_ft.checkpoint import write_json
from ssl_ft.config import from_dict, to_dict
from ssl_ft.data import ArraySplits, load_data
from ssl_ft.errors import UserError
from ssl_ft.finetune.config import FinetuneConfig
from ssl_ft.finetune.model import build_backbone
from ssl_ft.halving import successive_halving
from ssl_ft.models import check_input_size
from ssl_ft.models.depth import DepthMap, parse_layers, parse_percent
from ssl_ft.profile import profiling
from ssl_ft.runtime import Dist, resolve_device, set_threads

__all__ = ["CANDIDATES", "QUARTERS", "AutoConfig", "auto_config", "candidate_set",
           "gather_evidence", "parse_candidate", "record_run", "resolve_auto", "shortlist"]

#: Khan & Fang's quarters, the two halves' middle and end, end-to-end, and the 3/4 network
CANDIDATES = ("0-25", "25-50", "50-75", "75-100", "0-100", "50-100", "25-75", "0-75 t75")
#: the ranges raced by default: Khan & Fang's quarters
QUARTERS = CANDIDATES[:4]


@dataclass
class AutoConfig:
    """The chooser's options (``auto_args`` in a fine-tuning recipe)."""

    candidates: list[str] = field(default_factory=lambda: list(CANDIDATES))
    cut_margin: float = 0.01        # cut shallower only if its val probe AUC is this much higher
    race_among: list[str] = field(default_factory=lambda: list(QUARTERS))  # raced at the cut
    race: int = 0                   # without race_among at the cut: Auto-RGN runners-up raced
    race_widest: bool = False       # also race the widest candidate at the cut (end-to-end)
    race_rung: float = 0.25         # share of the epochs before the race's first halving
    probe_limit: int | None = 2000  # train images for the probes (stratified draw)
    grad_batches: int = 4           # train mini-batches for Auto-RGN
    keep_race: bool = False         # keep the stopped candidates' checkpoints

    def __post_init__(self) -> None:
        if self.race < 0 or self.grad_batches < 1:
            raise ValueError("race must be >= 0 and grad_batches >= 1")
        if not 0 < self.race_rung < 1:
            raise ValueError(f"race_rung must lie in (0, 1), got {self.race_rung}")
        for c in self.candidates:
            parse_candidate(c)
        for c in self.race_among:
            parse_layers(c)
        if len(set(self.race_among)) < len(self.race_among):
            raise ValueError(f"race_among lists a range twice: {self.race_among}")


_CANDIDATE = re.compile(r"^\s*(\S+?)\s*(?:t\s*(\S+))?\s*$")


def parse_candidate(text: str) -> tuple[str, float]:
    """``"25-50"`` -> ``("25-50", 100.0)``; ``"0-75 t75"`` -> ``("0-75", 75.0)``."""
    m = _CANDIDATE.match(str(text))
    if not m:
        raise UserError(f"auto_args.candidates: {text!r} is not 'A-B' or 'A-B tP'")
    a, b = parse_layers(m.group(1))
    p = parse_percent(m.group(2) or 100, "auto_args.candidates truncate")
    return f"{float(a):g}-{float(b):g}", float(p)


def auto_config(cfg: FinetuneConfig) -> AutoConfig:
    """The validated :class:`AutoConfig` of a recipe's ``auto_args``."""
    return from_dict(AutoConfig, cfg.auto_args, where="auto_args", prefix="auto_args.")


def _name(layers: str, truncate: float) -> str:
    return layers + (f" t{truncate:g}" if truncate < 100 else "")


def candidate_set(cfg: FinetuneConfig, auto: AutoConfig, dm: DepthMap) -> list[dict[str, Any]]:
    """The (layers, truncate) pairs to choose from, given what ``cfg`` fixes: every candidate
    (both auto), the candidate ranges under a fixed cut, or the candidate cuts (and 100) of a
    fixed range. Pairs that train the same units at the same cut are merged; pairs that train
    nothing are dropped."""
    pairs = [parse_candidate(c) for c in auto.candidates]
    if cfg.layers != "auto":
        cuts = sorted({t for _, t in pairs} | {100.0})
        pairs = [(cfg.layers, t) for t in cuts]
    elif cfg.truncate != "auto":
        pairs = [(lay, float(cfg.truncate)) for lay, _ in pairs]
    out, seen = [], {}
    for layers, truncate in pairs:
        sel = dm.select(layers, truncate, allow_empty=True)
        trained = tuple(u.index for u in sel.trained)
        if not trained or (trained, truncate) in seen:
            continue
        seen[(trained, truncate)] = layers
        out.append({"layers": layers, "truncate": truncate, "name": _name(layers, truncate),
                    "trained": list(trained), "kept": len(sel.kept)})
    if not out:
        raise UserError(f"auto: no candidate of {', '.join(auto.candidates)} trains a unit of "
                        f"{dm.arch} with layers {cfg.layers}, truncate {cfg.truncate}")
    return out


def _load(cfg: FinetuneConfig) -> ArraySplits:
    return without_test(load_data(cfg.data, data_root=cfg.data_root, size=cfg.size,
                                  channels=cfg.channels, label_fraction=cfg.label_fraction,
                                  limit=cfg.limit, seed=cfg.seed, download=cfg.download))


def gather_evidence(cfg: FinetuneConfig, auto: AutoConfig, candidates: list[dict[str, Any]],
                    dm: DepthMap, splits: ArraySplits, device: torch.device, *,
                    race: bool = True) -> dict[str, Any]:
    """The evidence the choice needs, added to the candidate dicts: the probe's val AUC at
    every candidate cut (when there are several), and Auto-RGN / Auto-SNR of the candidates at
    the chosen cut when they are ranked by it (the cut keeps none of ``race_among``, or it
    keeps several but they cannot be raced: a dry run or a single epoch). Returns the probe
    rows and the seconds spent."""
    torch.manual_seed(cfg.seed)  # a random init is the one the fine-tuning run draws
    backbone, source = build_backbone(cfg.checkpoint, splits.info, arch=cfg.arch,
                                      stem=cfg.stem, normalization=cfg.normalization)
    from ssl_ft.depth_probe import probe_units

    cuts = sorted({c["truncate"] for c in candidates})
    units = {t: probe_units(dm, [t])[0] for t in cuts}
    rows, by_unit, seconds = [], {}, 0.0
    if len(cuts) > 1 or _needs_gradients(candidates, auto, race and cfg.epochs > 1):
        # several cuts to choose from, or the single cut's probe head for Auto-RGN
        probe = probe_evidence(backbone, subset_train(splits, auto.probe_limit, cfg.seed), dm,
                               list({u.index: u for u in units.values()}.values()), source,
                               device=device)
        by_unit, seconds = {r["index"]: r for r in probe["units"]}, probe["seconds"]
        rows = [{"depth": t, "unit": units[t].name,
                 "val_auc": by_unit[units[t].index]["val_auc"]} for t in cuts]
        for c in candidates:
            c["probe_val_auc"] = by_unit[units[c["truncate"]].index]["val_auc"]
    cut = choose_cut(candidates, auto)
    at_cut = [c for c in candidates if c["truncate"] == cut]
    if _needs_gradients(at_cut, auto, race and cfg.epochs > 1):
        c_grid = [by_unit[units[cut].index]["C"]]
        grad = gradient_evidence(copy.deepcopy(backbone).truncate(units[cut].index + 1),
                                 splits, source, batches=auto.grad_batches,
                                 batch_size=cfg.batch_size, seed=cfg.seed, c_grid=c_grid,
                                 device=device)
        seconds += grad["seconds"]
        for c in at_cut:
            c.update(range_statistics(grad["units"], c["trained"]))
    return {"probe": rows, "seconds": seconds}


def _needs_gradients(at_cut: list[dict[str, Any]], auto: AutoConfig, can_race: bool) -> bool:
    """Whether the candidates at a cut are ranked by Auto-RGN: several of them, and none of
    ``race_among`` among them, or several of those but no race (a dry run, one epoch)."""
    if len({c["truncate"] for c in at_cut}) > 1:
        return False  # not one cut yet: decided once the probe has chosen it
    among = race_set(at_cut, auto)
    return len(at_cut) > 1 and (not among or (len(among) > 1 and not can_race))


def choose_cut(candidates: list[dict[str, Any]], auto: AutoConfig) -> float:
    """The deepest candidate cut, unless a shallower one's val probe AUC is more than
    ``cut_margin`` higher (the last units then lose what the task needs: Head2Toe's case for
    intermediate features). Without probe evidence (a single cut): that cut."""
    probe = cut_probes(candidates)
    deepest = max(probe)
    if probe[deepest] is None:
        return deepest
    top = max(probe, key=lambda t: (probe[t], -t))
    return top if probe[top] - probe[deepest] > auto.cut_margin else deepest


def cut_probes(candidates: list[dict[str, Any]]) -> dict[float, float | None]:
    """The val probe AUC at each candidate cut (None: not probed)."""
    return {c["truncate"]: c.get("probe_val_auc") for c in candidates}


def race_set(at_cut: list[dict[str, Any]], auto: AutoConfig) -> list[dict[str, Any]]:
    """The candidates at the cut whose layer range is one of ``race_among``, in that order."""
    def norm(layers: str) -> tuple[float, float]:
        a, b = parse_layers(layers)
        return float(a), float(b)

    by_range = {norm(c["layers"]): c for c in at_cut}
    return [by_range[norm(r)] for r in auto.race_among if norm(r) in by_range]


def shortlist(candidates: list[dict[str, Any]], auto: AutoConfig) -> tuple[list[dict], str]:
    """The candidates to race (first: the choice if nothing is raced) and why. The cut:
    :func:`choose_cut`. At that cut, the candidates of ``race_among`` (ordered by Auto-RGN
    where it was measured); where there are none, the candidates by Auto-RGN, highest first
    (Lee et al.: the units the task wants to change most, relative to their weights), the
    first ``1 + race`` of them. ``race_widest`` adds the one that trains most units."""
    cut = choose_cut(candidates, auto)
    at_cut = [c for c in candidates if c["truncate"] == cut]
    probe = cut_probes(candidates)
    why = f"cut {cut:g}"
    if len(probe) > 1:
        why += (" (val probe AUC " + ", ".join(f"{t:g}: {a:.4f}" for t, a in sorted(
            probe.items())) + f", margin {auto.cut_margin:g})")
    among = race_set(at_cut, auto)
    ranked = sorted((c for c in (among or at_cut)), key=lambda c: -c.get("rgn", 0.0))
    if any("rgn" in c for c in ranked):
        why += "; Auto-RGN at that cut " + ", ".join(f"{c['name']}: {c['rgn']:.3g}"
                                                   for c in ranked)
    picked = ranked if among else ranked[:1 + auto.race]
    widest = max(at_cut, key=lambda c: (len(c["trained"]), -c["trained"][0]))
    if auto.race_widest and widest not in picked:  # (Auto-RGN never ranks a union first)
        picked.append(widest)
    if len(picked) > 1:
        why += f"; raced {', '.join(c['name'] for c in picked)}"
    return picked, why


def _race(cfg: FinetuneConfig, picked: list[dict[str, Any]], auto: AutoConfig, folder: Path,
          device: torch.device) -> tuple[dict[str, Any], Any]:
    """Successive halving on the real schedule: every candidate trains ``race_rung`` of the
    epochs, the better half (best val AUC so far) goes on to twice as many, until one is left.
    The runs stay open between rungs (:class:`~ssl_ft.finetune.engine.Run`, one data load
    shared; each run's frozen-prefix cache gets its share of ``prefix_cache_gb``) and write
    ``last.pt`` in ``folder/<name>`` (every ``checkpoint_every_s`` and when stopped): a killed
    race resumes. Returns the winner and its open run."""
    by_name = {c["name"]: c for c in picked}
    runs: dict[str, Any] = {}
    share = cfg.prefix_cache_gb / len(picked)

    def score(name: str, rung: int) -> float:
        c = by_name[name]
        if name not in runs:
            runs[name] = _open(cfg, c, folder, share, device, runs)
        runs[name].train_to(rung)
        c["race"] = runs[name].val_curve()[:rung]
        print(f"auto race: {name} after {rung} epoch(s): best val AUC {max(c['race']):.4f}",
              file=sys.stderr)
        return max(c["race"])

    def stop(name: str, rung: int) -> None:
        by_name[name]["stopped_at"] = rung
        runs.pop(name).close(test=False)

    try:
        winner, _ = successive_halving(list(by_name), cfg.epochs, auto.race_rung, score,
                                       on_stop=stop)
    except BaseException:  # (a kill, a diverged run): every log closed, last.pt on disk
        for run in runs.values():
            run.close(test=False)
        raise
    return by_name[winner], runs[winner]


def _open(cfg: FinetuneConfig, c: dict[str, Any], folder: Path, share: float,
          device: torch.device, runs: dict[str, Any]) -> Any:
    """Candidate ``c``'s run in ``folder/<name>`` (resumed from its ``last.pt`` if a killed race
    left one), on the data the first run loaded."""
    from ssl_ft.finetune.engine import Run

    c["folder"] = str(folder / re.sub(r"[^0-9a-z.-]+", "_", c["name"]))
    run_cfg = dataclasses.replace(cfg, layers=c["layers"], truncate=c["truncate"],
                                  out=c["folder"], prefix_cache_gb=share)
    shared = next(iter(runs.values())).p.splits if runs else None
    return Run(run_cfg, Dist(), device, resume=True, progress=False, splits=shared)


def _prune(folder: Path, auto: AutoConfig) -> None:
    """Drop the race's checkpoints (the winner's went on in the run folder)."""
    if not auto.keep_race:
        for ck in folder.glob("*/*.pt"):
            ck.unlink()


def resolve_auto(cfg: FinetuneConfig, *, resume: bool = False, dry_run: bool = False,
                 device: torch.device | None = None
                 ) -> tuple[FinetuneConfig, dict[str, Any] | None, bool, Any]:
    """``cfg`` with ``layers``/``truncate`` ``auto`` replaced by the choice, the record of the
    choice (None when nothing is ``auto``), whether the run continues a paused one, and the
    race winner's open :class:`~ssl_ft.finetune.engine.Run` that goes on as the run (None
    when nothing was raced). A run resumed after the choice reads it back from
    ``out/auto.json``. ``dry_run`` gathers the evidence only (no race, nothing written) and
    returns the shortlist's first candidate."""
    if cfg.layers != "auto" and cfg.truncate != "auto":
        return cfg, None, resume, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("layers/truncate auto runs in one process; choose first (tools/"
                        "finetune.py --layers auto), then launch torchrun with the chosen "
                        "values")
    auto = auto_config(cfg)
    out = Path(cfg.out)
    record_file = out / "auto.json"
    if resume and record_file.is_file() and not dry_run:
        record = json.loads(record_file.read_text())
        return dataclasses.replace(cfg, **record["chosen"]), record, True, None
    if (out / "last.pt").exists() and not resume and not dry_run:
        raise UserError(f"run folder {out} already holds last.pt; pass --resume to continue it "
                        "or choose another --out")
    record, run = _choose(cfg, auto, race=not dry_run, device=device)
    final = dataclasses.replace(cfg, **record["chosen"])
    if dry_run:
        return final, record, resume, None
    if run is not None:
        run.move_to(final)
        _prune(out / "auto_race", auto)
    out.mkdir(parents=True, exist_ok=True)
    write_json(record_file, record)
    return final, record, resume or run is not None, run


def _choose(cfg: FinetuneConfig, auto: AutoConfig, race: bool = True,
            device: torch.device | None = None) -> tuple[dict[str, Any], Any]:
    """The record of the choice (``chosen`` = ``{layers, truncate}``) and the race winner's
    open run (None when nothing was raced)."""
    t0, c0 = time.perf_counter(), time.process_time()
    set_threads(cfg.threads, Dist())
    device = device or resolve_device(cfg.device)
    splits = _load(cfg)
    backbone, _ = build_backbone(cfg.checkpoint, splits.info, arch=cfg.arch, stem=cfg.stem)
    check_input_size(backbone, splits.info.image_size)
    dm = DepthMap.from_backbone(backbone, cfg.depth_unit)
    candidates = candidate_set(cfg, auto, dm)
    record: dict[str, Any] = {"requested": {"layers": cfg.layers, "truncate": cfg.truncate},
                              "auto_args": to_dict(auto),
                              "candidates": candidates, "evidence_s": 0.0, "race_s": 0.0}
    run = None
    if cfg.checkpoint == "none":  # nothing pretrained to keep: train all that is kept
        best = max(candidates, key=lambda c: (c["kept"], len(c["trained"]), -c["trained"][0]))
        why = "a random initialisation has no features to keep: train every kept unit"
    else:
        ev = gather_evidence(cfg, auto, candidates, dm, splits, device,
                             race=race and cfg.strategy != "lp")
        record.update(probe=ev["probe"], evidence_s=ev["seconds"])
        picked, why = shortlist(candidates, auto)
        for c in candidates:
            c["shortlisted"] = c in picked
        best = picked[0]
        if len(picked) > 1 and race and cfg.epochs > 1 and cfg.strategy != "lp":
            t1 = time.perf_counter()
            with profiling() as race_phases:  # the race's own record of where its time went
                best, run = _race(cfg, picked, auto, Path(cfg.out) / "auto_race", device)
            record["race_s"] = time.perf_counter() - t1
            record["race_profile_s"] = {k: round(v, 4) for k, v in race_phases.items()}
            why += "; race (best val AUC so far): " + ", ".join(
                f"{c['name']} {max(c['race']):.4f} after {len(c['race'])} epochs"
                for c in picked)
        elif len(picked) > 1:
            why += ("; not raced (dry run, a single epoch or lp, which trains no layer): the "
                    "first of the shortlist")
    chosen = {"layers": best["layers"], "truncate": best["truncate"]}
    record.update(chosen=chosen, reason=f"{best['name']}: {why}",
                  wall_time_s=time.perf_counter() - t0, cpu_time_s=time.process_time() - c0)
    print(f"auto chose layers {best['layers']} truncate {best['truncate']:g}: {why} "
          f"({record['wall_time_s']:.0f} s)", file=sys.stderr)
    return record, run


def record_run(out: Path, auto: dict[str, Any] | None, seconds: float,
               cpu_seconds: float | None = None, phases: dict[str, float] | None = None) -> None:
    """Add the run's wall time and CPU time of this process (chooser included; on a shared
    machine the CPU time is the fairer measure of compute), the auto record and the wall
    seconds per phase (:mod:`ssl_ft.profile`; a resumed run's are this call's only) to
    ``out/metrics.json``, once (a finished run called again keeps its numbers)."""
    path = Path(out) / "metrics.json"
    if not path.is_file():
        return
    metrics = json.loads(path.read_text())
    if "wall_time_s" in metrics:
        return
    metrics["wall_time_s"] = seconds
    if cpu_seconds is not None:
        metrics["cpu_time_s"] = cpu_seconds
    if auto is not None:
        metrics["auto"] = auto
    if phases is not None:
        metrics["profile_s"] = {k: round(v, 4) for k, v in phases.items()}
    write_json(path, metrics)

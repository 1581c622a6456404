#!/usr/bin/env python
"""Run a study (a grid of fine-tuning and fusion runs) and write its report.

    python tools/study.py recipes/study/tiny.yaml
    python tools/study.py recipes/study/khan_fang.yaml --list          # the cells, nothing run
    python tools/study.py recipes/study/tuned_strategies.yaml --dry-run  # also the tuning trials
    python tools/study.py recipes/study/khan_fang.yaml workers=2 --report-only
    python tools/study.py recipes/study/davila.yaml --executor slurm slurm.partition=gpu \
        slurm.gpus_per_node=1 slurm.timeout_min=240   # each cell a SLURM job (submitit)

Cells already finished are skipped and unfinished ones resumed, so a killed study continues
when the same command runs again. With a tune: block the tuning trials (OUT/cells/tune/) run
first and each group's seeds then use the values chosen on the validation split. The report goes
to OUT/results.md (with results.csv, summary.csv, tuning.csv and PNG figures); where the time
went (per group of cells and phase of a run) to OUT/profile.md, profile.json and profile.png.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, run


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="study recipe (see recipes/study/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override recipe keys, e.g. workers=2 out=/tmp/study")
    parser.add_argument("--list", "--dry-run", action="store_true", dest="list",
                        help="print the cells (tuning trials included, and what each tuned "
                             "cell chose or waits for) and exit; nothing runs")
    parser.add_argument("--report-only", action="store_true",
                        help="aggregate the finished cells without running any")
    parser.add_argument("--executor", choices=["local", "submitit-local", "slurm"],
                        help="where cells run (the recipe's executor key): local processes "
                             "(default), submitit jobs on this machine, or SLURM jobs; job "
                             "resources come from the slurm.* keys, e.g. slurm.partition=gpu "
                             "slurm.timeout_min=240 slurm.cpus_per_task=8 slurm.mem_gb=32 "
                             "slurm.gpus_per_node=1 (see docs/distributed.md)")
    args = parser.parse_intermixed_args(argv)
    if args.executor:
        args.overrides.append(f"executor={args.executor}")

    from ssl_ft.runlock import RunLock
    from ssl_ft.study import collect, expand, load_study, run_study, write_report
    from ssl_ft.study.profile_report import write_profile
    from ssl_ft.study.runner import list_cells
    from ssl_ft.study.tuning_report import tuning_table

    study = load_study(args.recipe, args.overrides)
    cells = expand(study)
    if args.list:
        print("\n".join(list_cells(study, cells)))
        return
    with RunLock(study.out):  # one study at a time in its folder, from the start to the report
        failed = {} if args.report_only else run_study(study, cells)
        tuning = tuning_table(cells, study.out) if study.tune is not None else None
        files = write_report(collect(cells, study.out), study.out, study.name, tuning)
        files += write_profile(cells, study.out)  # where the time went
    print(f"wrote {', '.join(str(f) for f in files)}", file=sys.stderr)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(run(main))

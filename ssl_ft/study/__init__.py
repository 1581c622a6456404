"""Studies: a grid of fine-tuning / fusion (/ pretraining) runs in one command, and a report.

    >>> from ssl_ft.study import load_study, expand, run_study, collect, write_report
    >>> study = load_study("recipes/study/tiny.yaml")
    >>> cells = expand(study)
    >>> run_study(study, cells)
    >>> write_report(collect(cells, study.out), study.out, study.name)

See ``docs/study.md``.
"""

from ssl_ft.study.grid import Cell, Study, expand, load_study
from ssl_ft.study.report import collect, p_text, paired_tests, summarize, write_report
from ssl_ft.study.runner import check_inputs, is_done, run_cell, run_study

__all__ = ["Cell", "Study", "check_inputs", "collect", "expand", "is_done", "load_study", "p_text",
           "paired_tests", "run_cell", "run_study", "summarize", "write_report"]

"""Studies: a grid of fine-tuning / fusion (/ pretraining) runs in one command, and a report.

    >>> from ssl_ft.study import collect, expand, load_study, run_study, tuning_table, write_report
    >>> study = load_study("recipes/study/tiny.yaml")
    >>> cells = expand(study)
    >>> run_study(study, cells)
    >>> write_report(collect(cells, study.out), study.out, study.name,
    ...              tuning_table(cells, study.out))   # tuning.csv (a recipe with tune:)

See ``docs/study.md``.
"""

from ssl_ft.study.grid import Cell, Study, expand, load_study
from ssl_ft.study.report import collect, p_text, paired_tests, summarize, write_report
from ssl_ft.study.runner import check_inputs, is_done, list_cells, run_cell, run_study
from ssl_ft.study.tune import Tune
from ssl_ft.study.tuning_report import tuning_table

__all__ = ["Cell", "Study", "Tune", "check_inputs", "collect", "expand", "is_done", "list_cells",
           "load_study", "p_text", "paired_tests", "run_cell", "run_study", "summarize",
           "tuning_table", "write_report"]

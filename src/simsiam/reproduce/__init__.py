"""The paper's experiments (SIMSIAM.md section 5) as grids: ``simsiam reproduce``."""

from simsiam.reproduce.experiments import EXPERIMENTS, Experiment, Row
from simsiam.reproduce.runner import SCALES, RowResult, format_table, row_config, run_experiment

__all__ = ["EXPERIMENTS", "SCALES", "Experiment", "Row", "RowResult", "format_table",
           "row_config", "run_experiment"]

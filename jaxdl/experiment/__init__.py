"""The experiment runner: sweep specs, the planner, the sweep store, executors and reports."""

from jaxdl.experiment.sweep import (Point, Spec, choice, grid, log_uniform, parse_sweep, points, randint, random,
                                    uniform, zip_)

__all__ = ["Point", "Spec", "choice", "grid", "log_uniform", "parse_sweep", "points", "randint", "random", "uniform",
           "zip_"]

"""The experiment runner: sweep specs, the planner, the sweep store, executors and reports.

A study from Python::

    from jaxdl.experiment import run_sweep, grid
    result = run_sweep(base_cfg, grid(**{"optim.lr": [1e-3, 3e-3], "seed": [0, 1]}),
                       data=jaxdl.data.from_arrays(x=X, y=y, name="mydata"), executor="processes", workers=2)
"""

from jaxdl.experiment.report import Report, make_report
from jaxdl.experiment.runner import SweepResult, run_sweep
from jaxdl.experiment.sweep import (Point, Spec, choice, grid, log_uniform, parse_sweep, points, randint, random,
                                    uniform, zip_)

__all__ = ["Point", "Report", "Spec", "SweepResult", "choice", "grid", "log_uniform", "make_report", "parse_sweep",
           "points", "randint", "random", "run_sweep", "uniform", "zip_"]

"""Sweep reports of generative runs (fake sweeps: hand-written summaries and sample PNGs, nothing trains): the
per-configuration table of generative scores ranked by validation Fréchet distance, and the figure showing each
configuration's samples from the member chosen by the validation score — never by a test score."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from jaxdl.experiment import plots as plots_lib
from jaxdl.experiment.report import SAMPLES_FIGURE, make_report
from jaxdl.experiment.store import SweepStore

LRS = (1e-3, 1e-2)
SEEDS = (0, 1, 2)
REFERENCE = {"data": "fashion_mnist", "n": 50, "frechet_real_vs_real": 0.5, "frechet_real_vs_gaussian": 60.0,
             "pr_real_vs_real": {"precision": 0.9, "recall": 0.9},
             "pr_real_vs_gaussian": {"precision": 0.6, "recall": 0.3}}


def quiet():
    from rich.console import Console

    return Console(file=io.StringIO(), width=250)


def _png(path: Path, level: float) -> None:
    """A 12 × 12 grey PNG of brightness ``level`` (each run its own, so a figure panel names its run)."""
    import matplotlib.image

    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(str(path), np.full((12, 12), level), cmap="gray", vmin=0.0, vmax=1.0)


def fake_generative_sweep(directory: Path, *, scored: bool = True) -> Path:
    """A VAE sweep: lr ∈ LRS × seed ∈ SEEDS, monitored val/nelbo. Within each configuration the seed with the best
    val Fréchet distance is neither the one with the best test Fréchet distance nor the one with the best val/nelbo.
    lr=1e-3 runs have a final ``vae_samples.png``; lr=1e-2 runs only their per-evaluation grids."""
    store = SweepStore(directory / "sweep.db")
    n = 0
    for lr in LRS:
        for seed in SEEDS:
            run_id, n = f"vae{n:09d}", n + 1
            run_dir = directory / "runs" / run_id
            store.add_group("g-vae", signature="vae", members=len(LRS) * len(SEEDS))
            store.add_run(run_id, name=f"fake-{run_id}", group_id="g-vae",
                          config={"model": {"name": "vae"}, "optim": {"lr": lr}, "seed": seed}, config_hash=run_id,
                          labels={"model": "vae"}, swept={"optim.lr": lr, "seed": seed}, run_dir=str(run_dir))
            base = 10.0 if lr == 1e-2 else 20.0  # lr=1e-2 is the better configuration by val FD
            val_fd = base + [3.0, 1.0, 2.0][seed]  # seed 1 best by val FD
            test_fd = base + [1.0, 3.0, 2.0][seed]  # seed 0 best by test FD
            nelbo = 100.0 + [2.0, 3.0, 1.0][seed]  # seed 2 best by val/nelbo
            scores = {"val": {"frechet_distance": val_fd, "precision": 0.5 + 0.1 * seed, "recall": 0.4, "real": 9},
                      "test": {"frechet_distance": test_fd, "precision": 0.6 - 0.1 * seed, "recall": 0.3 + 0.1 * seed,
                               "real": 9},
                      "samples": 50, "features": "f6 of a LeNet-5", "reference": REFERENCE}
            summary = {"name": f"fake-{run_id}", "status": "completed", "steps": 20, "final": {},
                       "best": {"step": 20}, "val": {"loss": nelbo, "nelbo": nelbo},
                       "test": {"loss": nelbo + 1, "nelbo": nelbo + 1}, "monitor": {"name": "val/nelbo", "mode": "min"},
                       "scores": scores if scored else {"skipped": "no shipped feature classifier"},
                       "wall_time_s": 1.0}
            level = n / 10.0
            for step in (10, 20):
                _png(run_dir / "samples" / f"step_{step:07d}.png", level - 0.05 * (step == 10))
            if lr == 1e-3:
                _png(run_dir / "vae_samples.png", level)
            records = [{"step": s, "val/nelbo": nelbo + 20 - s} for s in (10, 20)]
            (run_dir / "summary.json").write_text(json.dumps(summary))
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            store.finish(run_id, summary, records)
    return directory


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sweep = fake_generative_sweep(tmp_path_factory.mktemp("gen"))
    return sweep, make_report(sweep, fmt="md", console=quiet())


def test_each_configuration_shows_its_val_best_member(report):
    sweep, rep = report
    assert rep.metric == "val/nelbo"  # the main table still ranks by the monitored metric
    assert [it["optim.lr"] for it in rep.generative] == [1e-2, 1e-3]  # ranked by mean val FD
    runs = {p.parent.name: json.loads(p.read_text()) for p in (sweep / "runs").glob("*/summary.json")}
    for item in rep.generative:
        members = [row["run"] for row in rep.rows if row["optim.lr"] == item["optim.lr"]]
        val_best = min(members, key=lambda r: runs[r]["scores"]["val"]["frechet_distance"])
        test_best = min(members, key=lambda r: runs[r]["scores"]["test"]["frechet_distance"])
        nelbo_best = min(members, key=lambda r: runs[r]["val"]["nelbo"])
        assert item["chosen"] == val_best and val_best not in (test_best, nelbo_best)
        assert item["seed"] == 1 and item["n"] == 3
        test_fds = [runs[r]["scores"]["test"]["frechet_distance"] for r in members]
        assert item["test/frechet_distance mean"] == pytest.approx(np.mean(test_fds))
        assert item["test/frechet_distance std"] == pytest.approx(np.std(test_fds, ddof=1))
        # the final samples PNG, else the last per-evaluation grid
        expected = "vae_samples.png" if item["optim.lr"] == 1e-3 else "samples/step_0000020.png"
        assert item["samples"] == str(sweep / "runs" / val_best / expected)


def test_figure_and_table_are_written(report):
    import matplotlib.image

    sweep, rep = report
    figure = sweep / "plots" / SAMPLES_FIGURE
    assert figure.is_file() and rep.samples_figure == figure and figure in rep.plots
    md = (sweep / "report.md").read_text()
    assert f"![samples of each configuration's val/frechet_distance-best seed](plots/{SAMPLES_FIGURE})" in md
    header = ("| rank | model | optim.lr | val/frechet_distance (mean ± std) | test/frechet_distance (mean ± std) | "
              "test/precision (mean ± std) | test/recall (mean ± std) | n | chosen | seed | samples |")
    assert header in md and "ranked by val/frechet_distance (lower is better)" in md
    assert "never used to choose" in md
    assert "Reference (fashion_mnist, n=50 images per side): real vs real FD 0.5" in md
    for item in rep.generative:
        assert f"| {item['chosen']} | 1 |" in md
    rows = list(csv.DictReader(rep.generative_csv.open()))
    assert [r["chosen"] for r in rows] == [it["chosen"] for it in rep.generative]
    # each panel shows the chosen member's image, titled with what it is and what chose it
    fig = plots_lib.generated_samples_figure(rep.generative, ["model", "optim.lr"], "val/frechet_distance", "min")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    for ax, item in zip(panels, rep.generative):
        np.testing.assert_allclose(ax.images[0].get_array(), matplotlib.image.imread(item["samples"]))
        assert f"{item['chosen']} seed=1\nval FD {item['_best']:.4g}, test FD" in ax.get_title()
    assert "grid at step 20" in panels[0].get_title() and "final samples (vae_samples.png)" in panels[1].get_title()
    assert "lowest val/frechet_distance" in fig._suptitle.get_text()


def test_generative_scores_are_run_metrics_too(report):
    sweep, _ = report
    rep = make_report(sweep, metric="val/frechet_distance", fmt="md", plots=False, console=quiet())
    fds = [r["val/frechet_distance"] for r in rep.rows]
    assert rep.mode == "min" and fds == sorted(fds) and len(fds) == 6
    assert rep.columns[-5:-3] == ["val/frechet_distance", "test/frechet_distance"]


def test_unscored_runs_choose_by_the_validation_ranking_metric(tmp_path):
    sweep = fake_generative_sweep(tmp_path / "unscored", scored=False)
    rep = make_report(sweep, metric="test/nelbo", fmt="md", console=quiet())  # a test ranking is asked for …
    for item in rep.generative:  # … but samples are still chosen by its validation counterpart
        assert item["seed"] == 2 and item["n"] == 3
    assert "ranked by val/nelbo (lower is better)" in (sweep / "report.md").read_text()
    assert (sweep / "plots" / SAMPLES_FIGURE).is_file()

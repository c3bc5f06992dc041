"""The README's and docs/python.md's Python examples run as written, from an empty directory (not the repo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def run_blocks(blocks: list[str], cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / "doc_blocks.py"
    script.write_text("\n\n".join(blocks))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXDL_CACHE_DIR": str(cwd / "cache")}
    # run as a notebook does: code without a main file, so process-pool workers do not re-execute it
    runner = f"exec(compile(open({str(script)!r}).read(), 'doc_blocks', 'exec'))"
    return subprocess.run([sys.executable, "-c", runner], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_python_guide_runs_end_to_end(tmp_path):
    blocks = python_blocks(ROOT / "docs" / "python.md")
    assert len(blocks) >= 6
    out = run_blocks(blocks, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "regression" in out.stdout and "rmse" in out.stdout
    assert (tmp_path / "runs" / "sweeps" / "cancer" / "sweep.db").is_file()


@pytest.mark.slow
def test_readme_python_examples_run_from_any_directory(tmp_path):
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 2
    out = run_blocks(blocks, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'mse'" in out.stdout and "'rmse'" in out.stdout

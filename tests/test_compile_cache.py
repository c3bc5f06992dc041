"""The persistent compilation cache: a second process training the same config compiles nothing new and trains the
same numbers; ``JAXDL_COMPILATION_CACHE=0`` turns it off; a user's own JAX cache directory is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `jaxdl train` (the CLI entry point enables the cache) inside jaxdl.compile_cache.counting(); prints the count and
# the run's logged metrics as JSON
TRAIN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from jaxdl import compile_cache
    from jaxdl.cli import main

    workdir = Path(sys.argv[1])
    with compile_cache.counting() as n:
        code = main(["train", "configs/digits_mlp.py:smoke", "model.widths=[16]", "train.steps=6",
                     "train.eval_every=3", "train.plots=false", "train.checkpoints=false", "--workdir", str(workdir)])
    import jax
    print(json.dumps({"code": code, "count": n.as_dict(), "cache_dir": jax.config.jax_compilation_cache_dir,
                      "metrics": (workdir / "metrics.jsonl").read_text().splitlines()}))
""")


def train_in_fresh_process(tmp: Path, name: str, **env) -> dict:
    environ = {**os.environ, "JAXDL_CACHE_DIR": str(tmp / "cache"), "JAX_PLATFORMS": "cpu", **env}
    environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # a user's own JAX cache would take precedence
    if "JAXDL_COMPILATION_CACHE" not in env:
        environ.pop("JAXDL_COMPILATION_CACHE", None)
    out = subprocess.run([sys.executable, "-c", TRAIN, str(tmp / name)], cwd=ROOT, env=environ, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    return result


def _metrics(result: dict) -> list[dict]:
    # wall-clock fields differ between runs; everything the training computed must not
    rows = [json.loads(line) for line in result["metrics"]]
    return [{k: v for k, v in r.items() if "time" not in k and not k.endswith("_s") and k != "steps_per_s"}
            for r in rows]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compile_cache")
    return tmp, train_in_fresh_process(tmp, "first"), train_in_fresh_process(tmp, "second")


def test_a_second_process_compiles_nothing_new_and_trains_the_same(two_runs):
    tmp, first, second = two_runs
    assert first["cache_dir"] == str(tmp / "cache" / "xla")
    assert first["count"]["compiled"] > 0 and first["count"]["cache_writes"] == first["count"]["compiled"]
    assert second["count"]["compiled"] == 0, second["count"]
    assert second["count"]["cache_hits"] == second["count"]["requests"] > 0
    assert any((tmp / "cache" / "xla").iterdir())
    assert _metrics(first) and _metrics(second) == _metrics(first)


def test_the_cache_can_be_turned_off(tmp_path):
    # a fresh process (nothing compiled before enable()), but no training: a tiny program is enough to show that
    # nothing is read from or written to the cache
    code = textwrap.dedent("""
        import jax, json
        from jaxdl import compile_cache
        where = compile_cache.enable()
        with compile_cache.counting() as n:
            jax.jit(lambda x: x * 2 + 1)(1.0)
        print(json.dumps({"where": where and str(where), "dir": jax.config.jax_compilation_cache_dir,
                          "count": n.as_dict()}))
    """)
    env = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    runs = {}
    for switch in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "JAXDL_COMPILATION_CACHE": switch},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        runs[switch] = json.loads(out.stdout.strip().splitlines()[-1])
    off, on = runs["0"], runs["1"]
    assert off["where"] is None and off["dir"] is None and off["count"]["cache_writes"] == 0
    assert off["count"]["compiled"] == off["count"]["requests"] > 0
    assert on["where"] == on["dir"] == str(tmp_path / "cache" / "xla")
    assert on["count"]["cache_writes"] == on["count"]["compiled"] > 0  # the same program, cached when on


def test_enable_keeps_a_users_own_cache_dir_and_follows_jaxdl_cache_dir(tmp_path, monkeypatch):
    import jax

    from jaxdl import compile_cache

    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.delenv("JAXDL_COMPILATION_CACHE", raising=False)
        monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "a"))
        assert compile_cache.enable() == tmp_path / "a" / "xla"
        assert compile_cache.enable() == tmp_path / "a" / "xla"  # idempotent
        monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "b"))
        assert compile_cache.enable() == tmp_path / "b" / "xla"
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        # unbounded, JAX's default: its LRU eviction fails every write once one entry lacks an access-time file
        assert jax.config.jax_compilation_cache_max_size == -1
        compile_cache.disable()
        assert jax.config.jax_compilation_cache_dir is None
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0  # JAX's defaults, restored
        assert jax.config.jax_compilation_cache_max_size == -1
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        assert compile_cache.enable() == tmp_path / "mine"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
        monkeypatch.setenv("JAXDL_COMPILATION_CACHE", "0")
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_cache.enable() is None and jax.config.jax_compilation_cache_dir is None
    finally:
        compile_cache.disable()
        jax.config.update("jax_compilation_cache_dir", before)
        compile_cache._reset_jax_cache()

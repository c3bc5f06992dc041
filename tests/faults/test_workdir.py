"""A --workdir that is a file, or cannot be created, is a clean error (exit 2), never an OSError traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxdl.cli import main


@pytest.mark.parametrize("command", [["train", "digits_mlp:smoke"], ["sweep", "configs/digits_mlp.py", "--sweep", "seed=0,1"]])
def test_workdir_that_is_a_file_or_under_a_file(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    flag = "--workdir"
    assert main([*command, flag, str(a_file)]) == 2
    err = capsys.readouterr().err
    assert f"{a_file}: exists and is not a directory" in err and "Traceback" not in err
    assert main([*command, flag, str(a_file / "sub")]) == 2
    assert f"{a_file / 'sub'}: cannot create it" in capsys.readouterr().err

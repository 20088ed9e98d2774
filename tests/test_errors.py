"""Bad inputs through the real command line: one clear error line naming the path and the fix, exit code 1.

Each case runs ``.venv/bin/ytspark`` in a subprocess (a fresh JVM for the
Spark ones) and checks: non-zero exit, exactly one ``error:`` line on stderr,
that line names the path and says what to do, and no Python traceback.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ytspark.models.export import write_model_dir

YTSPARK = str(Path(sys.executable).with_name("ytspark"))


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([YTSPARK, *args, "--profile", "local", "--output", str(tmp / "out")],
                          capture_output=True, text=True, timeout=600)


def _one_error_line(r: subprocess.CompletedProcess, path: Path, hint: str) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1, r.stderr[-3000:]
    assert str(path) in lines[0] and hint in lines[0], lines[0]
    assert lines[0].startswith("ytspark ")
    return lines[0]


def _events(tmp: Path, case: str) -> tuple[Path, list[str], str]:
    """(path, extra CLI args, hint the error must give) for one bad --events input."""
    if case == "missing":
        return tmp / "nope", [], "does not exist"
    if case == "missing-explicit-parquet":
        return tmp / "nope", ["--format", "parquet"], "does not exist"
    if case == "empty-dir":
        (tmp / "empty").mkdir()
        return tmp / "empty", [], "is empty"
    if case == "empty-file":
        (tmp / "events.jsonl").write_bytes(b"")
        return tmp / "events.jsonl", [], "is empty"
    if case == "csv-on-parquet":
        (tmp / "pq").mkdir()
        pq.write_table(pa.table({"event_ts": [1.7e9], "user_id": ["u"], "event_type": ["watch"]}),
                       tmp / "pq" / "part-0.parquet")
        return tmp / "pq", ["--format", "csv"], "set --format"
    if case == "parquet-on-jsonl":
        (tmp / "j").mkdir()
        (tmp / "j" / "e.jsonl").write_text(json.dumps({"event_ts": 1.7e9, "user_id": "u", "event_type": "watch"}))
        return tmp / "j", ["--format", "parquet"], "set --format"
    if case == "corrupt-parquet":
        (tmp / "bad").mkdir()
        (tmp / "bad" / "part-0.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
        return tmp / "bad", [], "not damaged"
    if case == "not-json":
        (tmp / "t").mkdir()
        (tmp / "t" / "events.jsonl").write_text("this is a log line, not JSON\nnor is this\n")
        return tmp / "t", [], "set --format"
    raise ValueError(case)


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "missing-explicit-parquet", "empty-dir", "empty-file", "csv-on-parquet",
                                  "parquet-on-jsonl", "corrupt-parquet", "not-json"])
def test_bad_events_input_is_one_clear_error_line(tmp_path, case):
    path, extra, hint = _events(tmp_path, case)
    r = _cli("prepare", "--events", str(path), *extra, tmp=tmp_path)
    _one_error_line(r, path, hint)


def _model(root: Path, kind: str = "candidate", *, version: int | None = None, complete: bool = True) -> Path:
    d = Path(write_model_dir(root, kind, state_dict={"w": torch.zeros(2, 2)}, meta={"model_config": {}}))
    if version is not None:
        meta = json.loads((d / "MODEL.json").read_text())
        (d / "MODEL.json").write_text(json.dumps({**meta, "format_version": version}))
    if not complete:
        (d / "_SUCCESS").unlink()
    return d


@pytest.mark.parametrize("command", ["evaluate", "score"])
@pytest.mark.parametrize("case", ["other-version", "incomplete", "missing", "ranker-other-version"])
def test_unusable_model_dir_is_one_clear_error_line(tmp_path, command, case):
    models = tmp_path / "models"
    if case == "other-version":
        bad, hint = _model(models, version=0), "retrain"
    elif case == "incomplete":
        bad, hint = _model(models, complete=False), "retrain"
    elif case == "missing":
        bad, hint = models, "train one first"
    else:
        _model(models)
        bad, hint = _model(models, "ranker", version=99), "retrain"
    r = _cli(command, "--models", str(models), tmp=tmp_path)
    line = _one_error_line(r, bad, hint)
    if command == "evaluate" and case == "missing":
        assert "--no-model" in line


def test_evaluate_compare_values_name_the_problem(tmp_path):
    from ytspark.pipeline import compare_models
    from ytspark.models.export import ModelDirError

    with pytest.raises(ValueError, match="NAME=DIR"):
        compare_models(["just-a-path"])
    with pytest.raises(ModelDirError, match="--compare deep") as e:
        compare_models([f"deep={tmp_path / 'nothing'}"])
    assert str(tmp_path / "nothing") in str(e.value)
    assert compare_models([]) == []


def test_evaluate_compare_ranker_values_name_the_problem(tmp_path):
    from ytspark.pipeline import compare_models
    from ytspark.models.export import ModelDirError

    with pytest.raises(ValueError, match="--compare-ranker 'r128' must look like NAME=DIR"):
        compare_models(["r128"], "ranker")
    with pytest.raises(ModelDirError, match="--compare-ranker small") as e:
        compare_models([f"small={tmp_path / 'none'}"], "ranker")
    assert str(tmp_path / "none") in str(e.value)

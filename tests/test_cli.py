"""The command line: help says what each command reads and writes; bad config exits 2 naming the key."""
import subprocess
import sys

import pytest

from ytspark.cli import build_parser, main


def test_help_lists_stages_and_their_outputs():
    text = build_parser().format_help()
    for cmd in ("generate", "prepare", "pipeline"):
        assert cmd in text
    sub = build_parser()._subparsers._group_actions[0].choices
    assert "manifest.json" in sub["prepare"].format_help()
    assert "MovieLens" in sub["prepare"].format_help()


def test_config_error_exits_2_and_names_the_key(capsys):
    rc = main(["prepare", "--set", "prepare.histroy_length=3"])
    assert rc == 2
    assert "prepare.histroy_length" in capsys.readouterr().err


@pytest.mark.spark
@pytest.mark.slow
def test_missing_input_is_one_clear_line_and_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ytspark.cli", "prepare", "--profile", "local",
                        "--events", str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert f"input path '{tmp_path / 'missing'}' does not exist" in r.stderr
    assert "Traceback" not in r.stderr

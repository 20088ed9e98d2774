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


def test_closing_table_prints_both_objectives_and_n_a_where_the_data_has_none():
    from ytspark.cli import TABLE_COLUMNS, evaluation_table

    table = {"als": {"hr@10": 0.2, "hr@50": 0.4, "ndcg@10": 0.1, "coverage@10": 0.15, "gini@10": 0.8,
                     "top_channel@10": float("nan"), "wpul": 0.3, "auc": 0.7, "watch_ndcg": 0.65},
             "ytspark candidate + ranking": {"hr@10": 0.25, "true_watch_s@10": 1234.4, "true_p_click@10": 0.1}}
    lines = evaluation_table(table).splitlines()
    assert lines[0].split() == ["system"] + [h for _, h, _ in TABLE_COLUMNS]
    als = lines[1].split()
    assert als[:10] == ["als", "0.2000", "0.4000", "0.1000", "0.1500", "0.800", "n/a", "0.3000", "0.7000", "0.6500"]
    assert als[10:] == ["n/a", "n/a"]  # no truth (real logs, MovieLens)
    ranked = lines[2].split()
    assert ranked[-2:] == ["1,234", "0.1000"] and ranked.count("n/a") == 8
    assert "optimises the next watch" in lines[3] and "expected watch time per impression" in lines[3]

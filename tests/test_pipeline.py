"""ytspark.pipeline: the stages run in order, skips and inputs decide which; the CLI dispatches each command to
its pipeline function with its arguments. No Spark: the stage functions are replaced by recorders."""
from __future__ import annotations

import pytest

from ytspark import cli, pipeline
from ytspark.config import load_config


@pytest.fixture
def calls(monkeypatch):
    """Replace every stage function of ytspark.pipeline by one that records (stage, arguments)."""
    seen: list[tuple] = []

    def recorder(name):
        def run(spark, cfg, *args, **kw):
            seen.append((name, args, kw, cfg.data.events))
            return {"stage": name}
        return run

    for name in ("run_generate", "run_prepare", "run_train", "run_score", "run_evaluate", "run_check_skew"):
        monkeypatch.setattr(pipeline, name, recorder(name))
    monkeypatch.setattr(pipeline, "can_train_ranker", lambda cfg, models=None: True)
    return seen


def test_the_pipeline_runs_every_stage_in_order_on_generated_data(calls, tmp_path):
    cfg = load_config(None, [f'data.output="{tmp_path}"'])
    summary = pipeline.run_pipeline(None, cfg)
    assert [c[0] for c in calls] == ["run_generate", "run_prepare", "run_train", "run_train", "run_score",
                                     "run_evaluate"]
    assert [c[1][0] for c in calls if c[0] == "run_train"] == ["candidate", "ranker"]
    assert calls[1][3] == f"{tmp_path}/raw/events"  # prepare reads what generate wrote
    assert list(summary) == list(pipeline.STAGES)


def test_skipped_stages_and_given_inputs_do_not_run(calls, tmp_path, monkeypatch):
    cfg = load_config(None, [f'data.output="{tmp_path}"', 'data.events="/logs/events"'])
    summary = pipeline.run_pipeline(None, cfg, skip=["evaluate", "train-candidates"], resume=True)
    assert [c[0] for c in calls] == ["run_prepare", "run_train", "run_score"]  # no generate: the logs are given
    assert calls[1][2] == {"resume": True} and calls[0][3] == "/logs/events"
    assert list(summary) == ["prepare", "train-ranker", "score"]

    calls.clear()
    monkeypatch.setattr(pipeline, "can_train_ranker", lambda cfg, models=None: False)
    pipeline.run_pipeline(None, cfg, movielens="/ml")
    assert [c[0] for c in calls] == ["run_prepare", "run_train", "run_score", "run_evaluate"]  # no ranker
    assert calls[0][1] == ("/ml",)
    with pytest.raises(ValueError, match="unknown stage"):
        pipeline.run_pipeline(None, cfg, skip=["train"])


class _Spark:
    def stop(self):
        pass


@pytest.mark.parametrize("argv, name, args", [
    (["generate"], "run_generate", ()),
    (["prepare", "--movielens", "/ml"], "run_prepare", ("/ml",)),
    (["train-candidates", "--prepared", "/p", "--resume"], "run_train", ("candidate", "/p", None, True, None)),
    (["train-ranker", "--models", "/m", "--candidate-model", "/c"], "run_train", ("ranker", None, "/m", False, "/c")),
    (["evaluate", "--no-model", "--prepared", "/p"], "run_evaluate", ("/p", None, True, [], [])),
    (["score", "--run-date", "2026-12-01", "--models", "/m"], "run_score", (None, "/m", "2026-12-01")),
    (["pipeline", "--skip", "evaluate"], "run_pipeline", (["evaluate"], None, False)),
])
def test_each_command_calls_its_pipeline_function(calls, monkeypatch, tmp_path, argv, name, args):
    import ytspark.session

    monkeypatch.setattr(ytspark.session, "get_spark", lambda cfg, app_name: _Spark())
    monkeypatch.setattr(pipeline, "check_models", lambda *a, **kw: None)
    monkeypatch.setattr(cli, "_print_summary", lambda command, result: None)
    if name == "run_pipeline":
        monkeypatch.setattr(pipeline, "run_pipeline", lambda spark, cfg, *a: calls.append((name, a, {}, "")))
    assert cli.main([*argv, "--output", str(tmp_path)]) == 0
    assert calls == [(name, args, {}, calls[0][3])]


def test_check_skew_prints_its_table_and_exits_1_when_a_feature_differs(monkeypatch, tmp_path, capsys):
    import pandas as pd

    import ytspark.session

    table = pd.DataFrame({"feature": ["a", "b"], "rows": [5, 5], "differ": [0, 2], "note": ["", ""]})
    monkeypatch.setattr(ytspark.session, "get_spark", lambda cfg, app_name: _Spark())
    monkeypatch.setattr(pipeline, "run_check_skew", lambda spark, cfg, *a: ("/p", table))
    assert cli.main(["check-skew", "--output", str(tmp_path)]) == 1
    assert "1 feature(s) differ: ['b']" in capsys.readouterr().out


def test_every_command_has_help_saying_what_it_writes():
    sub = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(sub) == {*pipeline.STAGES, "check-skew", "pipeline"} - {"train"}
    for name, p in sub.items():
        assert p.format_help(), name
    score = sub["score"].format_help()
    assert "_manifest.json" in score and " manifest.json" not in score

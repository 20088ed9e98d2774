"""Typed configuration: profiles, overrides, and errors that name the key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ytspark.config import ConfigError, config_from_dict, load_config, parse_override, validate
from ytspark.session import effective_settings

ROOT = Path(__file__).resolve().parent.parent


def test_profile_overrides_default():
    base, local = load_config(), load_config("local")
    assert base.generate.users == 5000 and local.generate.users == 400
    assert local.prepare.history_length == base.prepare.history_length  # untouched keys inherit


def test_set_overrides_with_types():
    cfg = load_config("local", ["prepare.max_examples_per_user=7", "validate.max_reject_share=0.2",
                                "spark.master=local[1]", 'data.output="/tmp/x y"'])
    assert cfg.prepare.max_examples_per_user == 7
    assert cfg.validate.max_reject_share == 0.2
    assert cfg.spark.master == "local[1]"  # bare words are strings
    assert cfg.data.output == "/tmp/x y"


@pytest.mark.parametrize("override, message", [
    ("prepare.max_exampels_per_user=3", "unknown config key 'prepare.max_exampels_per_user'"),
    ("nope.key=1", "unknown config key 'nope'"),
    ("prepare.max_examples_per_user=lots", "'prepare.max_examples_per_user' must be an integer"),
    ("prepare.max_examples_per_user=2.5", "'prepare.max_examples_per_user' must be an integer"),
    ("validate.max_reject_share=true", "'validate.max_reject_share' must be a number"),
    ("prepare=3", "'prepare' is a section"),
    ("prepare.history_length", "must look like section.key=value"),
])
def test_wrong_key_or_type_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config("local", [override])


def test_missing_profile_is_named():
    with pytest.raises(ConfigError, match="nosuch.toml not found"):
        load_config("nosuch")


def test_round_trip_through_dict():
    cfg = load_config("local", ["prepare.seed=11"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_parse_override_nests():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


def test_spark_submit_settings_win_over_config():
    cfg = load_config("local")
    submitted = {"spark.master": "spark://host:7077", "spark.sql.shuffle.partitions": "200"}
    eff = effective_settings(cfg.spark, submitted)
    assert "spark.master" not in eff and "spark.sql.shuffle.partitions" not in eff
    assert eff["spark.driver.memory"] == cfg.spark.driver_memory
    assert effective_settings(cfg.spark, {})["spark.master"] == "local[2]"


# --- TOML dates for string keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key, text", [
    ("score.run_date=2026-12-01", "score.run_date", "2026-12-01"),  # a bare TOML date
    ('score.run_date="2026-12-01"', "score.run_date", "2026-12-01"),  # a TOML string, as before
    ("validate.as_of=2026-11-23", "validate.as_of", "2026-11-23"),
    ("generate.start_date=2026-01-01T06:30:00", "generate.start_date", "2026-01-01T06:30:00"),
    ("generate.start_date=2026-01-01T00:00:00Z", "generate.start_date", "2026-01-01T00:00:00+00:00"),
])
def test_set_takes_a_toml_date_for_a_string_key(override, key, text):
    cfg = load_config("local", [override])
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == text
    validate(cfg)


def test_profile_file_takes_a_toml_date_for_a_string_key(tmp_path):
    profile = tmp_path / "nightly.toml"
    profile.write_text("[score]\nrun_date = 2026-12-01\n[validate]\nas_of = 2026-11-30\n")
    cfg = load_config(str(profile))
    assert (cfg.score.run_date, cfg.validate.as_of) == ("2026-12-01", "2026-11-30")
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override, message", [
    ("score.seed=2026-12-01", "'score.seed' must be an integer, got 2026-12-01 (a TOML date)"),
    ("validate.max_reject_share=2026-12-01", "'validate.max_reject_share' must be a number, got 2026-12-01"),
    ("evaluate.ks=[10, 2026-12-01]", "'evaluate.ks[1]' must be an integer, got 2026-12-01"),
    ("train.progress=2026-12-01", "'train.progress' must be true or false, got 2026-12-01"),
    ("score.run_date=20261201", "'score.run_date' must be a string, got 20261201"),
])
def test_a_date_for_a_non_string_key_is_refused_by_name(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("local", [override])


def test_a_date_time_is_no_run_date():
    cfg = load_config("local", ["score.run_date=2026-12-01T10:00:00"], check=False)  # a string: it types ...
    with pytest.raises(ConfigError, match="'score.run_date' = '2026-12-01T10:00:00': must be .*YYYY-MM-DD"):
        validate(cfg)  # ... but is no date
    with pytest.raises(ConfigError, match="'score.run_date' = '2026-12-01T10:00:00'"):
        load_config("local", ["score.run_date=2026-12-01T10:00:00"])  # refused at load


# --- start-up validation ----------------------------------------------------------------------------------------

ATTN = "candidate.recency=attention"
NO_INPUTS = ["candidate.use_watches=false", "candidate.use_searches=false", "candidate.use_demographics=false",
             "candidate.use_example_age=false", "candidate.recency=none"]
# (key named in the error, overrides that make exactly that key wrong)
# A wrong value of one key: "section.key=value" (the key named in the error is the one set).
BAD = [(setting.split("=", 1)[0], [setting]) for setting in (
    "spark.shuffle_partitions=0", "spark.log_level=LOUD", 'spark.master=""', "spark.driver_memory=lots",
    "data.format=xml", 'data.output=""', "generate.users=0", "generate.videos=-5", "generate.channels=0",
    'candidate.query_gap="tomorrow"', "generate.categories=0", "generate.days=0", "generate.partitions=0",
    "generate.visits_per_user=0",
    "generate.seed=-1", "generate.start_date=yesterday", "generate.series_share=1.5", "generate.p_binge=-0.1",
    "generate.p_autoplay=2", "validate.max_reject_share=1.5", "validate.max_reject_share=-0.1",
    "validate.max_watch_seconds=0", "validate.max_watch_over_duration=-1", "validate.future_tolerance_seconds=-1",
    "validate.as_of=soon", "prepare.history_length=0", "prepare.max_examples_per_user=0",
    "prepare.example_sampling=random", "prepare.ties=strict", "prepare.tie_break=time", "prepare.completed_fraction=-0.5",
    "prepare.video_min_count=-1", "prepare.video_top_k=0", "prepare.token_min_count=-1", "prepare.token_top_k=0",
    "prepare.categorical_min_count=-1", "prepare.quantiles=1", "prepare.quantile_rel_error=1.0",
    "prepare.target_shards=0", "prepare.row_groups_per_shard=0", "prepare.sequence_windows=0",
    "prepare.sequence_stride=-1", "prepare.seed=-7", "train.launcher=mpi", "train.num_proc=0",
    "train.threads_per_proc=-1", "train.reader_workers=0", "train.shuffle_buffer=-1", "train.patience=0",
    "train.steps_per_epoch=-1", "train.seed=-1", "candidate.recency=latest",
    "candidate.recent_k=0", "candidate.seq_batch_size=0",
    "candidate.seq_lr=0", "candidate.seq_num_sampled=0", "candidate.seq_horizon=0", "candidate.seq_horizon_decay=0",
    "candidate.seq_horizon_decay=1.5", "candidate.encoder=rnn", "candidate.tau_days=0",
    "candidate.seq_loss_weight=-1", "candidate.seq_positions=-1", "candidate.num_sampled=0",
    "candidate.sampler_alpha=-0.5", "candidate.eval_k=0", "candidate.covisit_weights=[1.0, -1.0]",
    "candidate.covisit_weights=[nan]", "candidate.covisit_window=0", "candidate.covisit_top_m=0",
    "candidate.covisit_recent_k=0", "candidate.covisit_decay=0", "candidate.covisit_decay=1.5",
    "ranker.negatives_seed=-1", "ranker.hard_negatives=21",
    "ranker.hard_negatives=-1", "ranker.calibration_share=0.6", "ranker.calibration_share=-0.1",
    "ranker.objective=mean",
    "ranker.blend_weight=-0.5",  # -1 = chosen on validation, else >= 0
    "ranker.blend_weights=[]",  # objective blend, blend_weight -1 chooses among them
    "ranker.blend_weights=[0.0, -1.0]", "evaluate.ks=[]", "evaluate.ks=[0, 10]",
    "evaluate.topk=50",  # < max(ks) = 100
    "evaluate.coverage_k=0", "evaluate.coverage_k=101", "evaluate.als_ranks=[]", "evaluate.als_ranks=[0]",
    "evaluate.als_reg_params=[-0.1]", "evaluate.als_alphas=[-1.0]", "evaluate.als_max_iter=0",
    "evaluate.als_parallelism=0",
    "evaluate.chunk_users=0", "evaluate.seed=-1",
    "score.k=10",  # < score.n = 20
    "score.k=-1", "score.n=0", "score.index=bogus", "score.ivf_nlist=0", "score.ivf_nprobe=0", "score.hnsw_m=0",
    "score.ef_construction=0", "score.ef_search=0", "score.recall_sample_users=-1", "score.batch_size=0",
    "score.threads_per_task=0", "score.partitions=-1", "score.demographic_list=0", "score.run_date=2026-13-01",
    'score.run_date="12/01/2026"', "score.seed=-1", "score.max_per_channel=-1", "score.min_video_age_s=-5",
    "score.max_video_age_days=-1", 'score.table="db.recs; DROP TABLE x"', 'score.table="/some/path"',
)] + [
    *[(f"{net}.{key}", [f"{net}.{key}={value}"]) for net in ("candidate", "ranker") for key, value in (
        ("embed_dim", 0), ("batch_size", 0), ("epochs", 0), ("dropout", 1.0), ("dropout", -0.1), ("lr", 0),
        ("lr", -0.001), ("weight_decay", -1), ("hidden", "[64, 0]"))],
    ("candidate.recency", ["candidate.recency=last_k", "candidate.use_watches=false"]),
    ("candidate.use_watches", NO_INPUTS),
    ("candidate.attn_heads", ['candidate.encoder="sequence"', "candidate.attn_heads=3"]),
    ("candidate.attn_layers", [ATTN, "candidate.attn_layers=0"]),
    ("candidate.attn_heads", [ATTN, "candidate.attn_heads=0"]),
    ("candidate.attn_heads", [ATTN, "candidate.attn_heads=3"]),  # 64 is not divisible by 3
    ("ranker.negatives", ["ranker.negatives=0", "ranker.hard_negatives=0"]),
    ("score.min_video_age_s", ["score.max_video_age_days=1", "score.min_video_age_s=90000"]),
]


@pytest.mark.parametrize("key, overrides", BAD, ids=[f"{k}:{o[-1].split('=', 1)[1]}" for k, o in BAD])
def test_load_refuses_a_wrong_value_naming_the_one_key(key, overrides):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)  # validated at load
    msg = str(err.value)
    assert msg.startswith("1 invalid config value:"), msg  # only this key, nothing collateral
    assert f"config key '{key}' = " in msg and ": must be " in msg
    with pytest.raises(ConfigError, match=f"config key '{key}' = "):
        validate(load_config(None, overrides, check=False))  # the same check, callable on its own


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "conf").glob("*.toml") if p.stem != "default"))
def test_shipped_profiles_pass(profile):
    validate(load_config(profile))


def test_the_replaced_blend_key_says_what_replaces_it():
    with pytest.raises(ConfigError, match=r"'ranker.blend' was replaced: use ranker.objective \('auto' -> 'blend'"):
        load_config(None, ["ranker.blend=auto"])
    assert load_config(None).ranker.objective == "blend" and load_config(None).ranker.blend_weight == -1.0


def test_the_paper_profile_restores_the_papers_towers():
    cfg = load_config("paper")
    assert cfg.candidate.hidden == cfg.ranker.hidden == (1024, 512, 256)
    assert load_config(None).ranker.hidden != (1024, 512, 256)  # the default is the small serving tower


@pytest.mark.parametrize("overrides", [
    ["score.run_date=2026-12-01"], ['score.run_date=""'], ["score.k=20", "score.n=20"], ["candidate.dropout=0.99"],
    ["candidate.hidden=[]"], ["candidate.covisit_weights=[]"], ["ranker.objective=watch_time", "ranker.blend_weights=[]"],
    ["ranker.objective=blend", "ranker.blend_weight=0.5", "ranker.blend_weights=[]"], ["ranker.objective=next_watch"],
    ["spark.log_level=info"], ['spark.driver_memory="4096"'], ["spark.driver_memory=512m"],
    ["validate.max_reject_share=0"], ["validate.max_reject_share=1"], [ATTN, "candidate.attn_heads=4"],
    ["candidate.attn_heads=3"],  # only read with recency = attention
    ["ranker.hard_negatives=20"], ["candidate.covisit_decay=1.0"], ["evaluate.topk=5", "evaluate.ks=[1, 5]",
                                                                    "evaluate.coverage_k=5"],
    ["validate.as_of=2026-11-23T12:00:00"], ["generate.start_date=2026-01-01T00:00:00Z"],
])
def test_validate_accepts_edge_values(overrides):
    validate(load_config("local", overrides))


def test_validate_lists_every_problem_with_value_and_allowed_values():
    with pytest.raises(ValueError) as err:  # ConfigError is a ValueError
        load_config(None, ["score.index=bogus", "score.k=-1", "train.launcher=mpi", "candidate.dropout=1.0"])
    msg = str(err.value)
    assert msg.startswith("4 invalid config values:")
    assert "config key 'score.index' = 'bogus': must be one of flat | ivf | hnsw" in msg
    assert "config key 'score.k' = -1: must be >= score.n = 20" in msg
    assert "config key 'train.launcher' = 'mpi': must be one of local | horovod-spark | horovodrun" in msg
    assert "config key 'candidate.dropout' = 1.0: must be in [0, 1)" in msg


def test_every_numeric_and_list_key_is_checked():
    """Each int, float or list key of every section has a bad value in BAD (so validate checks it)."""
    import dataclasses
    import typing

    from ytspark.config import Config

    wanted = {f"{section}.{key}" for section, cls in typing.get_type_hints(Config).items()
              if dataclasses.is_dataclass(cls) for key, typ in typing.get_type_hints(cls).items()
              if typ in (int, float) or typing.get_origin(typ) is tuple}
    assert len(wanted) > 80
    assert wanted - {k for k, _ in BAD} == set()


def test_allowed_values_agree_with_the_stages():
    """config.py's copies of the enumerations are the ones the stages check (those modules are too heavy to import)."""
    from ytspark import config as C
    from ytspark import sources
    from ytspark.models.blend import OBJECTIVES
    from ytspark.models.candidate import ENCODERS, RECENCY_MODES
    from ytspark.features.params import SAMPLINGS
    from ytspark.score.index import KINDS
    from ytspark.train.launcher import LAUNCHERS

    assert C.SCORE_INDEXES == KINDS
    assert C.TRAIN_LAUNCHERS == LAUNCHERS
    assert C.CANDIDATE_RECENCY == RECENCY_MODES
    assert C.CANDIDATE_ENCODERS == ("auto", *ENCODERS)
    assert C.PREPARE_SAMPLINGS == SAMPLINGS
    assert C.RANKER_OBJECTIVES == OBJECTIVES
    assert C.DATA_FORMATS == ("auto", *sources.FORMATS)


def test_validate_refuses_whatever_the_stage_checks_refuse():
    """Every value the late checks (score job, blend, co-visitation, sampling) refuse is refused at start-up."""
    from ytspark.models.blend import check_objective
    from ytspark.models.covisit import check_params
    from ytspark.features.params import check_sampling
    from ytspark.score.job import check_score_config

    def late(cfg):
        c = cfg.candidate
        check_score_config(cfg.score)
        check_objective(cfg.ranker.objective, cfg.ranker.blend_weight, cfg.ranker.blend_weights)
        check_params(c.covisit_window, c.covisit_top_m, c.covisit_recent_k, c.covisit_decay, c.covisit_weights)
        check_sampling(cfg.prepare.example_sampling)

    late(load_config())
    refused = 0
    for key, overrides in BAD:
        cfg = load_config(None, overrides, check=False)
        try:
            late(cfg)
        except ValueError:
            refused += 1
            with pytest.raises(ConfigError, match=f"'{key}'"):
                validate(cfg)
    assert refused >= 20  # the score.*, ranker.blend*, candidate.covisit_* and example_sampling cases


# --- the command line: --run-date, and start-up validation before Spark -----------------------------------------

def test_run_date_option_becomes_score_run_date():
    from ytspark import cli

    for command in ("score", "pipeline"):
        args = cli.build_parser().parse_args([command, "--run-date", "2026-12-01"])
        assert cli._config(args).score.run_date == "2026-12-01"
    args = cli.build_parser().parse_args(["pipeline", "--set", "score.run_date=2026-11-30"])
    assert cli._config(args).score.run_date == "2026-11-30"  # --set with a bare TOML date
    args = cli.build_parser().parse_args(["pipeline", "--set", "score.run_date=2026-11-30", "--run-date", "2026-12-01"])
    assert cli._config(args).score.run_date == "2026-12-01"  # the option wins


def test_pipeline_run_date_reaches_the_score_stage(monkeypatch, tmp_path):
    from ytspark import cli, pipeline
    from ytspark.score import job

    seen = {}

    def fake_run_score(spark, cfg, prepared, models, run_date, out_root, ranker_dir=None, **kw):
        seen.update(run_date=run_date, config_run_date=cfg.score.run_date, prepared=prepared)
        return {"stub": True}

    monkeypatch.setattr(job, "run_score", fake_run_score)
    monkeypatch.setattr(pipeline, "has_model", lambda path, kind: False)
    skip = [a for s in pipeline.STAGES if s != "score" for a in ("--skip", s)]
    args = cli.build_parser().parse_args(["pipeline", "--run-date", "2026-12-01", "--output", str(tmp_path), *skip])
    summary = pipeline.run_pipeline(None, cli._config(args), args.skip, args.movielens)
    assert summary == {"score": {"stub": True}}
    assert seen == {"run_date": "2026-12-01", "config_run_date": "2026-12-01", "prepared": f"{tmp_path}/prepared"}


@pytest.mark.parametrize("argv, key", [
    (["pipeline", "--run-date", "2026-13-01"], "score.run_date"),
    (["score", "--run-date", "tomorrow"], "score.run_date"),
    (["score", "--set", "score.index=bogus"], "score.index"),
])
def test_cli_bad_value_exits_2_naming_the_key(capsys, argv, key):
    from ytspark.cli import main

    assert main(argv) == 2
    assert f"config key '{key}'" in capsys.readouterr().err


def test_cli_refuses_a_bad_value_before_spark_in_well_under_a_second(tmp_path):
    """In a fresh interpreter: exit 2 naming the key, within a second, and pyspark never imported."""
    import json
    import subprocess
    import sys

    script = """
import json, sys, time
t = time.perf_counter()
from ytspark.cli import main
out = []
for argv in (["score", "--set", "score.index=bogus"], ["pipeline", "--set", "score.k=-5"],
             ["train-candidates", "--set", "candidate.dropout=1.5"], ["prepare", "--set", "train.launcher=mpi"]):
    t = time.perf_counter()
    rc = main([*argv, "--output", sys.argv[1]])
    out.append([rc, time.perf_counter() - t])
print(json.dumps({"runs": out, "spark": any(m.split(".")[0] in ("pyspark", "py4j") for m in sys.modules)}))
"""
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert [rc for rc, _ in got["runs"]] == [2, 2, 2, 2]
    assert max(s for _, s in got["runs"]) < 1.0, got
    assert got["spark"] is False
    for key in ("score.index", "score.k", "candidate.dropout", "train.launcher"):
        assert f"config key '{key}'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


# --- one set of defaults -----------------------------------------------------------------------------------------

def test_default_toml_writes_out_the_typed_defaults_and_overrides_nothing():
    """conf/default.toml is the annotated copy of config.py's defaults: every key, the same values."""
    import dataclasses
    import tomllib

    from ytspark.config import Config

    raw = tomllib.loads((ROOT / "conf" / "default.toml").read_text())
    assert load_config(None) == Config()  # loading it changes nothing
    for name, section in dataclasses.asdict(Config()).items():
        assert set(raw.get(name, {})) == set(section), f"[{name}] in conf/default.toml lacks or adds keys"


def test_the_model_dataclasses_default_to_the_config_defaults():
    """A field of CandidateConfig / RankerConfig named as a [candidate] / [ranker] key has that key's default."""
    import dataclasses

    from ytspark.config import CandidateTrainConfig, PrepareConfig, RankerTrainConfig
    from ytspark.models.candidate import ENCODERS, CandidateConfig
    from ytspark.models.ranker import RankerConfig

    # encoder: the config's default is auto (train both), which no single model is; a model is the bag by default
    assert CandidateTrainConfig().encoder == "auto" and ENCODERS[0] == "bag"
    model_only = {"learn_tau": True, "seq_head": False, "encoder": "bag",
                  "use_video": True, "use_watches": True, "use_language": True, "use_channel": True,
                  "use_category": True, "use_recency": True, "use_video_age": True, "use_source": True}
    for model_cls, section in ((CandidateConfig, CandidateTrainConfig()), (RankerConfig, RankerTrainConfig())):
        shared = 0
        for f in dataclasses.fields(model_cls):
            if f.default is dataclasses.MISSING:
                continue  # sizes: from the prepared vocabularies
            if f.name == "max_history":
                assert f.default == PrepareConfig().history_length
            elif hasattr(section, f.name) and not (model_cls is RankerConfig and f.name == "use_watches") \
                    and f.name != "encoder":
                assert f.default == getattr(section, f.name), f"{model_cls.__name__}.{f.name}"
                shared += 1
            else:
                assert f.default == model_only[f.name], f"{model_cls.__name__}.{f.name}"
        assert shared >= 4


# Every string key is either one of a fixed set (checked at load against it) or free text checked for its form.
ENUM_KEYS = {"spark.log_level": "SPARK_LOG_LEVELS", "data.format": "DATA_FORMATS",
             "prepare.example_sampling": "PREPARE_SAMPLINGS", "prepare.ties": "PREPARE_TIES",
             "prepare.tie_break": "PREPARE_TIE_BREAKS", "score.index": "SCORE_INDEXES",
             "train.launcher": "TRAIN_LAUNCHERS", "candidate.encoder": "CANDIDATE_ENCODERS",
             "candidate.recency": "CANDIDATE_RECENCY", "ranker.objective": "RANKER_OBJECTIVES",
             "candidate.query_gap": "CANDIDATE_QUERY_GAPS"}
FREE_TEXT_KEYS = {"spark.master", "spark.app_name", "spark.driver_memory", "spark.local_dir", "data.events",
                  "data.users", "data.videos", "data.output", "data.root", "generate.start_date", "validate.as_of",
                  "score.run_date", "score.table", "score.exclude"}


def test_every_string_key_is_an_enumeration_or_declared_free_text():
    import dataclasses
    import typing

    from ytspark.config import Config

    keys = {f"{section}.{key}" for section, cls in typing.get_type_hints(Config).items()
            if dataclasses.is_dataclass(cls) for key, typ in typing.get_type_hints(cls).items() if typ is str}
    assert keys == set(ENUM_KEYS) | FREE_TEXT_KEYS


@pytest.mark.parametrize("key", sorted(ENUM_KEYS))
def test_an_enumerated_key_refuses_other_values_at_load_listing_the_allowed(key):
    from ytspark import config as C

    allowed = getattr(C, ENUM_KEYS[key])
    with pytest.raises(ConfigError) as err:
        load_config(None, [f'{key}="no-such-value"'])
    assert f"config key '{key}' = 'no-such-value': must be one of {' | '.join(allowed)}" in str(err.value)
    for value in allowed:  # each allowed value loads (with what it needs)
        extra = ["candidate.attn_heads=2"] if value in ("sequence", "auto", "attention") else []
        assert str(C._Checker(load_config("local", [f'{key}="{value}"', *extra])).value(key)) == value


@pytest.mark.parametrize("key, value, allowed", [
    ("candidate.dropout", "1.5", "in [0, 1)"), ("ranker.dropout", "-0.1", "in [0, 1)"),
    ("validate.max_reject_share", "1.01", "in [0, 1]"), ("candidate.covisit_decay", "0", "in (0, 1]"),
    ("prepare.quantile_rel_error", "1", "in [0, 1)"), ("candidate.embed_dim", "0", ">= 1"),
    ("train.num_proc", "0", ">= 1"), ("score.n", "0", ">= 1"), ("candidate.hidden", "[64, 0]", "a list of layer widths"),
])
def test_a_ranged_key_refuses_out_of_range_values_at_load_saying_the_range(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={value}"])
    assert f"config key '{key}' = " in str(err.value) and f": must be {allowed}" in str(err.value)

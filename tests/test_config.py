"""Typed configuration: profiles, overrides, and errors that name the key."""
from __future__ import annotations

import pytest

from ytspark.config import ConfigError, config_from_dict, load_config, parse_override
from ytspark.session import effective_settings


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

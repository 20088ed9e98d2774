"""The one place that builds the SparkSession.

Precedence, so config and spark-submit never fight: anything spark-submit (or
``spark-defaults.conf``) already set wins; ytspark's config only fills keys
that are still unset. ``--master`` from spark-submit is therefore honoured and
``spark.master`` from the config is used only for plain ``python``/``ytspark`` runs.
"""
from __future__ import annotations

import logging
import os
import sys

from pyspark import SparkConf
from pyspark.sql import SparkSession

from ytspark.config import Config, SparkConfig

log = logging.getLogger(__name__)


def spark_settings(cfg: SparkConfig) -> dict[str, str]:
    """The spark.* settings ytspark wants, before precedence is applied."""
    out = {
        "spark.master": cfg.master,
        "spark.app.name": cfg.app_name,
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.driver.memory": cfg.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        # Python workers use the same interpreter as the driver (the venv).
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if cfg.local_dir:
        out["spark.local.dir"] = cfg.local_dir
    out.update(cfg.extra)
    return out


def effective_settings(cfg: SparkConfig, existing: dict[str, str]) -> dict[str, str]:
    """The config settings to apply: those spark-submit (``existing``) has not already set."""
    out = {}
    for key, value in spark_settings(cfg).items():
        if key in existing:
            if existing[key] != value:
                log.info("spark setting %s=%s from spark-submit wins over config %s", key, existing[key], value)
            continue
        out[key] = value
    return out


def submitted_settings() -> dict[str, str]:
    """The spark.* settings of the JVM that spark-submit started (``--master``, ``--conf``, spark-defaults).

    Under spark-submit the driver JVM exists before Python runs (``PYSPARK_GATEWAY_PORT``
    is set), but ``SparkConf()`` only sees its settings once the gateway is
    connected; without that the config's ``spark.master`` silently replaced
    ``--master`` and a cluster job ran in local mode. Plain ``python``/``ytspark``
    runs have no JVM yet: nothing is set (and none is started here, so that
    ``spark.driver.memory`` from the config still reaches the JVM's launch).
    """
    from pyspark import SparkContext

    if SparkContext._jvm is None:
        if "PYSPARK_GATEWAY_PORT" not in os.environ:
            return {}
        SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def get_spark(config: Config | SparkConfig, app_name: str | None = None) -> SparkSession:
    """Return the active SparkSession or build one from ``config`` (spark-submit settings win)."""
    cfg = config.spark if isinstance(config, Config) else config
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    existing = submitted_settings()
    builder = SparkSession.builder
    for key, value in effective_settings(cfg, existing).items():
        builder = builder.config(key, value)
    if app_name:
        builder = builder.appName(app_name)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark

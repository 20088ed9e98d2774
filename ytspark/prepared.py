"""A prepared directory's manifest, as every later stage opens it.

``ytspark prepare`` (:func:`ytspark.prepare.job.run_prepare`) writes
``manifest.json`` (counts, vocabulary sizes, inputs, the config it ran with,
``window_end``) stamped with :data:`MANIFEST_VERSION`, and ``_SUCCESS`` last.
:func:`load_manifest` is how scoring, evaluation and the benchmarks read it:
it refuses an unfinished output or one of another manifest version, and says
what to do.
"""
from __future__ import annotations

from pyspark.sql import SparkSession

from ytspark import storage

MANIFEST_VERSION = 1


def load_manifest(spark: SparkSession, prepared_dir: str) -> dict:
    """Read a prepared directory's manifest, refusing unfinished or other-version outputs."""
    if not storage.exists(spark, f"{prepared_dir}/_SUCCESS"):
        raise FileNotFoundError(f"'{prepared_dir}' is not a finished prepare output (no _SUCCESS); run `ytspark prepare`")
    m = storage.read_json(spark, f"{prepared_dir}/manifest.json")
    if m.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError(f"'{prepared_dir}' was written by manifest version {m.get('manifest_version')}, "
                         f"this ytspark reads {MANIFEST_VERSION}; rerun `ytspark prepare`")
    return m

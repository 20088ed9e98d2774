"""The nightly table in a Spark catalog: ``score.table = "db.recommendations"``.

The folder ``<output>/recommendations/run_date=YYYY-MM-DD/`` is written and
published atomically as always (:func:`ytspark.storage.atomic_dir`); then its
run date becomes a partition of the catalog table, pointing at that folder:

- the first time, the table is created as an external Parquet table
  partitioned by ``run_date`` over ``<output>/recommendations`` (the database
  too, when missing);
- after, the run date's partition is added, or moved to the folder when it
  pointed elsewhere, and the table is refreshed.

Data is written once, and a rerun of a date replaces the folder the partition
points at, so the partition is replaced whole; a failed run publishes nothing,
so the partition keeps serving the previous folder. The catalog is whatever
the Spark session uses: Hive metastore (``spark.sql.catalogImplementation =
hive``, e.g. ``--set spark.extra."spark.sql.catalogImplementation"=hive`` or
spark-submit's settings) or Spark's built-in in-memory catalog (``local[*]``,
lasts as long as the session).
"""
from __future__ import annotations

import logging

from pyspark.sql import SparkSession
from pyspark.sql import types as T

log = logging.getLogger(__name__)

PARTITION = "run_date"


def _quote(name: str) -> str:
    return ".".join(f"`{p}`" for p in name.split("."))


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def publish_partition(spark: SparkSession, table: str, schema: T.StructType, root: str, run_date: str,
                      location: str) -> dict:
    """Make ``location`` (a published folder) the ``run_date`` partition of ``table``; returns what was done."""
    if schema.names[-1] != PARTITION:
        raise ValueError(f"the recommendations schema must end with the partition column {PARTITION}")
    q = _quote(table)
    created = False
    if not spark.catalog.tableExists(table):
        if "." in table:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(table.rsplit('.', 1)[0])}")
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)
        spark.sql(f"CREATE TABLE IF NOT EXISTS {q} ({cols}) USING parquet PARTITIONED BY (`{PARTITION}`) "
                  f"LOCATION {_sql_str(root)}")
        created = True
        log.info("score: created table %s over %s", table, root)
    else:
        cols = {c.name: c for c in spark.catalog.listColumns(table)}
        parts = [n for n, c in cols.items() if c.isPartition]
        missing = [f.name for f in schema.fields if f.name not in cols]
        if parts != [PARTITION] or missing:
            raise ValueError(
                f"score.table '{table}' exists but is not a recommendations table partitioned by {PARTITION}: "
                f"its partition columns are {parts}" + (f" and it has no column {missing[0]}" if missing else "")
                + "; drop it, or set score.table to a new name (ytspark creates it)")
    spec = f"PARTITION (`{PARTITION}` = {_sql_str(run_date)})"
    current = [r for r in spark.sql(f"SHOW PARTITIONS {q}").collect() if r[0] == f"{PARTITION}={run_date}"]
    if current:
        spark.sql(f"ALTER TABLE {q} {spec} SET LOCATION {_sql_str(location)}")
    else:
        spark.sql(f"ALTER TABLE {q} ADD {spec} LOCATION {_sql_str(location)}")
    spark.sql(f"REFRESH TABLE {q}")
    return {"name": table, "partition": f"{PARTITION}={run_date}", "created": created, "replaced": bool(current)}

"""Atomic directory publishing on any Hadoop filesystem (local, HDFS, s3a, ...).

Stages write to ``<final>.__tmp-<uuid>`` and :func:`publish` swaps it into place:
the previous directory stays intact and readable until the new one is complete.
A killed run leaves only a temporary directory that readers never look at.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import SparkSession

TMP_MARK = ".__tmp-"
OLD_MARK = ".__old-"


def _fs(spark: SparkSession, path: str):
    jvm = spark._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark._jsc.hadoopConfiguration()), p, jvm


def exists(spark: SparkSession, path: str) -> bool:
    fs, p, _ = _fs(spark, path)
    return bool(fs.exists(p))


def delete(spark: SparkSession, path: str) -> None:
    fs, p, _ = _fs(spark, path)
    if fs.exists(p):
        fs.delete(p, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file (manifest, vocab JSON) through the Hadoop filesystem API."""
    fs, p, _ = _fs(spark, path)
    out = fs.create(p, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def read_text(spark: SparkSession, path: str) -> str:
    fs, p, jvm = _fs(spark, path)
    stream = fs.open(p)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        lines = []
        while True:
            line = reader.readLine()
            if line is None:
                break
            lines.append(line)
        return "\n".join(lines)
    finally:
        stream.close()


def write_json(spark: SparkSession, path: str, obj) -> None:
    write_text(spark, path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_json(spark: SparkSession, path: str):
    return json.loads(read_text(spark, path))


def publish(spark: SparkSession, tmp: str, final: str) -> None:
    """Replace ``final`` by ``tmp`` with renames; the old copy is deleted only after the swap."""
    fs, ptmp, jvm = _fs(spark, tmp)
    _, pfinal, _ = _fs(spark, final)
    parent = pfinal.getParent()
    if parent is not None and not fs.exists(parent):
        fs.mkdirs(parent)
    old = None
    if fs.exists(pfinal):
        old = jvm.org.apache.hadoop.fs.Path(final.rstrip("/") + OLD_MARK + uuid.uuid4().hex[:8])
        if not fs.rename(pfinal, old):
            raise OSError(f"could not move {final} aside to publish {tmp}")
    if not fs.rename(ptmp, pfinal):
        if old is not None:
            fs.rename(old, pfinal)
        raise OSError(f"could not publish {tmp} as {final}")
    if old is not None:
        fs.delete(old, True)


@contextmanager
def atomic_dir(spark: SparkSession, final: str) -> Iterator[str]:
    """Yield a temporary path to write into; on success publish it as ``final``, on error delete it.

    On error the failed job's other tasks may still be running (Spark kills
    them asynchronously) and write into the temporary path after it is
    deleted, so the cleanup first waits (bounded) for the executors' running
    tasks to end, then deletes until the path stays gone.
    """
    tmp = final.rstrip("/") + TMP_MARK + uuid.uuid4().hex[:8]
    try:
        yield tmp
    except BaseException:
        try:
            _wait_for_running_tasks(spark)
            for _ in range(3):
                delete(spark, tmp)
                time.sleep(0.2)
                if not exists(spark, tmp):
                    break
        finally:
            raise
    publish(spark, tmp, final)


def _wait_for_running_tasks(spark: SparkSession, timeout_s: float = 30.0) -> None:
    """Wait until no executor reports a running task (at most ``timeout_s``; best effort)."""
    deadline = time.time() + timeout_s
    try:
        tracker = spark.sparkContext._jsc.sc().statusTracker()
        while time.time() < deadline:
            if sum(int(e.numRunningTasks()) for e in tracker.getExecutorInfos()) == 0:
                return
            time.sleep(0.2)
    except Exception:  # noqa: BLE001 - the JVM is gone or the API differs: delete anyway
        return


def resolve(root: str, path: str) -> str:
    """Join ``path`` under ``root`` and refuse results that escape it through '..'."""
    if not root or "://" in path:
        return path
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, path))
    if full != base and not full.startswith(base + os.sep):
        raise ValueError(f"path '{path}' escapes the configured data.root '{root}'; use a path inside it")
    return full

"""Every path a URL: the one storage layer of ytspark (local paths, ``file://``, ``hdfs://``, ``s3://``, ``s3a://``).

Two halves:

- **Spark side** (``exists``, ``delete``, ``write_text``, ``read_text``,
  ``write_json``, ``read_json``, ``publish``, ``atomic_dir``): the driver's
  Hadoop filesystem API through a SparkSession, for the Spark stages' outputs.
  Stages write to ``<final>.__tmp-<uuid>`` and :func:`publish` swaps it into
  place: the previous directory stays intact and readable until the new one is
  complete. A killed run leaves only a temporary directory that readers never
  look at.
- **Python side** (``save_*``/``load_*``, ``path_exists``, ``list_names``,
  ``remove``, ``staged_dir``, ``publish_dir``, ``is_published``): fsspec, no
  SparkSession, so it runs on executors and training ranks too. Model
  directories, ``LATEST``, checkpoints, metrics, manifests, vocabularies,
  quantiles, co-visitation arrays, reports and plots go through it; no other
  module opens a user-given path itself (``tests/test_storage.py`` checks).

Publishing on the Python side: :func:`save_bytes` replaces one file atomically
everywhere (write a temporary name and rename where the filesystem renames:
local, HDFS; one PUT, atomic per object, on object stores: S3, memory).
:func:`publish_dir` renames a staged directory into place where renames
exist; where a rename is a copy (S3) it removes the old marker first, copies,
and writes the ``_SUCCESS`` marker last. Either way the marker is written last,
and readers (:func:`is_published`, ``read_model_dir``) trust a directory only
when its marker is there, so they never see a half-published one.
``s3a://`` (Hadoop's name) is read as ``s3://`` on the Python side (s3fs).
"""
from __future__ import annotations

import io
import json
import os
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

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


# ============================================================ Python side: fsspec, no SparkSession

MARKER = "_SUCCESS"
# Filesystems whose rename is atomic: staged files and directories are renamed into place there.
# Everything else (s3, gs, memory, ...) is an object store: one PUT per file, copies, marker last.
_RENAMING = {"file", "local", "hdfs", "viewfs", "arrow_hdfs"}


def to_url(path: str | os.PathLike) -> str:
    """The fsspec URL of ``path``: a local path made absolute, ``s3a://`` read as ``s3://``, other URLs as given."""
    p = os.fspath(path)
    if p.startswith("s3a://"):
        return "s3://" + p[len("s3a://"):]
    if "://" not in p:
        return os.path.abspath(p)
    return p


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for paths and URLs alike (``Path`` would turn ``s3://b`` into ``s3:/b``)."""
    out = os.fspath(base).rstrip("/") or "/"
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = out + part if out.endswith("/") else f"{out}/{part}"
    return out


def filesystem(path: str | os.PathLike):
    """(fsspec filesystem, path inside it) for a local path or URL. S3 options come from the
    environment (``AWS_*``, ``AWS_ENDPOINT_URL``) or fsspec's config (``FSSPEC_S3_*``)."""
    import fsspec

    url = to_url(path)
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError, OSError) as e:
        scheme = url.split("://", 1)[0]
        hint = {"s3": "install s3fs (pip install s3fs==2026.9.0, pinned in requirements.lock)",
                "hdfs": "pyarrow's libhdfs needs a Hadoop client on this machine: set JAVA_HOME, HADOOP_HOME "
                        "and CLASSPATH=$(hadoop classpath --glob) (docs/cluster.md)"}.get(
            scheme, "use a local path, file://, hdfs://, s3:// or s3a://")
        raise ValueError(f"cannot open '{path}' ({scheme}://): {' '.join(str(e).split())}; {hint}") from e


def _renames(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool(_RENAMING.intersection(protocols))


def path_exists(path: str | os.PathLike) -> bool:
    """Whether a file or directory exists at ``path``."""
    fs, p = filesystem(path)
    return bool(fs.exists(p))


def list_names(path: str | os.PathLike) -> list[str]:
    """The sorted names (not paths) directly inside the directory ``path``; [] when it does not exist."""
    fs, p = filesystem(path)
    if not fs.exists(p):
        return []
    return sorted(os.path.basename(e.rstrip("/")) for e in fs.ls(p, detail=False) if e.rstrip("/") != p.rstrip("/"))


def list_files(path: str | os.PathLike) -> list[str]:
    """The sorted relative paths of every file under the directory ``path`` (recursively); [] when absent."""
    fs, p = filesystem(path)
    if not fs.exists(p):
        return []
    return _files_under(fs, p)


def remove(path: str | os.PathLike) -> None:
    """Delete a file or a directory tree; nothing happens when it does not exist."""
    fs, p = filesystem(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def load_bytes(path: str | os.PathLike) -> bytes:
    """The content of the file at ``path``; FileNotFoundError naming the path when it is missing."""
    fs, p = filesystem(path)
    try:
        return fs.cat_file(p)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no file at {path}") from e


def save_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path``, replacing it atomically: a reader sees the old or the new file, never half.

    Where the filesystem renames (local, HDFS) the bytes go to a temporary name beside ``path`` first;
    on object stores (S3) one PUT of the whole object is already atomic.
    """
    fs, p = filesystem(path)
    if not _renames(fs):
        fs.pipe_file(p, bytes(data))
        return
    parent = os.path.dirname(p.rstrip("/"))
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        fs.pipe_file(tmp, bytes(data))
        fs.mv(tmp, p)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def load_text(path: str | os.PathLike) -> str:
    return load_bytes(path).decode("utf-8")


def save_text(path: str | os.PathLike, text: str) -> None:
    save_bytes(path, text.encode("utf-8"))


def load_json(path: str | os.PathLike) -> Any:
    """A JSON file; ValueError naming the path when it is not JSON."""
    raw = load_bytes(path)
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); rewrite it or rerun the stage that writes it") from e


def save_json(path: str | os.PathLike, obj: Any, default=float) -> None:
    save_text(path, json.dumps(obj, indent=2, sort_keys=True, default=default))


def load_npy(path: str | os.PathLike):
    """A ``.npy`` array, never unpickled (``allow_pickle=False``: an object array raises ValueError)."""
    import numpy as np

    return np.load(io.BytesIO(load_bytes(path)), allow_pickle=False)


def save_npy(path: str | os.PathLike, arr) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    save_bytes(path, buf.getvalue())


def load_torch(path: str | os.PathLike):
    """A ``torch.save`` file of tensors and plain containers (``weights_only=True``: never unpickles objects)."""
    import torch

    return torch.load(io.BytesIO(load_bytes(path)), map_location="cpu", weights_only=True)


def save_torch(path: str | os.PathLike, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    save_bytes(path, buf.getvalue())


def is_published(path: str | os.PathLike) -> bool:
    """Whether the directory ``path`` carries its ``_SUCCESS`` marker (the only thing readers trust)."""
    return path_exists(join(path, MARKER))


def _files_under(fs, root: str) -> list[str]:
    root = root.rstrip("/")
    return sorted(f[len(root) + 1:] for f in fs.find(root) if f.rstrip("/") != root)


def publish_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the staged directory ``tmp`` the directory ``final`` (replaced whole), marker last.

    Renaming filesystems: ``tmp`` gets its marker, ``final`` is moved aside, ``tmp`` renamed into place,
    the old copy deleted. Object stores: the old marker is deleted first (readers stop trusting
    ``final``), old objects are deleted, ``tmp``'s files copied, the marker written last, ``tmp`` deleted.
    A publish killed half-way leaves either the old directory or one without a marker.
    """
    fs, ptmp = filesystem(tmp)
    _, pfinal = filesystem(final)
    ptmp, pfinal = ptmp.rstrip("/"), pfinal.rstrip("/")
    if _renames(fs):
        fs.makedirs(ptmp, exist_ok=True)
        fs.pipe_file(f"{ptmp}/{MARKER}", b"")
        parent = os.path.dirname(pfinal)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        old = None
        if fs.exists(pfinal):
            old = pfinal + OLD_MARK + uuid.uuid4().hex[:8]
            fs.mv(pfinal, old, recursive=True)
        try:
            fs.mv(ptmp, pfinal, recursive=True)
        except BaseException:
            if old is not None:
                fs.mv(old, pfinal, recursive=True)
            raise
        if old is not None:
            fs.rm(old, recursive=True)
        return
    if fs.exists(f"{pfinal}/{MARKER}"):
        fs.rm_file(f"{pfinal}/{MARKER}")
    if fs.exists(pfinal):
        fs.rm(pfinal, recursive=True)
    for rel in _files_under(fs, ptmp):
        if rel != MARKER:
            fs.copy(f"{ptmp}/{rel}", f"{pfinal}/{rel}")
    fs.pipe_file(f"{pfinal}/{MARKER}", b"")
    fs.rm(ptmp, recursive=True)


@contextmanager
def staged_dir(final: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[str]:
    """Yield a temporary directory URL to write into (with ``save_*``); on success :func:`publish_dir` it as
    ``final``, on error delete it. ``tmp`` defaults to ``<final>.__tmp-<uuid>``."""
    final = os.fspath(final).rstrip("/")
    tmp = os.fspath(tmp) if tmp is not None else final + TMP_MARK + uuid.uuid4().hex[:8]
    remove(tmp)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    publish_dir(tmp, final)

"""Readers for the input contract (events, users, videos) from Parquet, JSON Lines and CSV.

``read_table(spark, path, "events")`` returns the table as read, every contract
column present (absent optional ones as null strings) plus ``_corrupt_record``
for lines that could not be parsed. Values are *not* cast here: validation
casts them and quarantines what does not fit, so nothing is dropped on read.

Paths are anything Hadoop understands: local paths, ``file://``, ``hdfs://``,
``s3a://``...
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ytspark import schema as S

FORMATS = ("parquet", "jsonl", "csv")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


class InputError(ValueError):
    """An input path or schema is unusable; the message names the path/column and the fix."""


def _list_files(spark: SparkSession, path: str) -> list[str]:
    jvm = spark._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    fs = p.getFileSystem(spark._jsc.hadoopConfiguration())
    if not fs.exists(p):
        raise InputError(f"input path '{path}' does not exist; check data.events/users/videos or --events")
    if not fs.getFileStatus(p).isDirectory():
        return [path] if fs.getFileStatus(p).getLen() > 0 else []
    out = []
    it = fs.listFiles(p, True)
    while it.hasNext():
        st = it.next()
        name = st.getPath().getName()
        if not name.startswith(("_", ".")) and st.getLen() > 0:
            out.append(st.getPath().toString())
    return out


def error_line(e: BaseException) -> str:
    """The gist of a Spark/JVM error in one line: the root Java cause, or the first line of the message."""
    from py4j.protocol import Py4JJavaError

    if isinstance(e, Py4JJavaError):
        j = e.java_exception
        while j.getCause() is not None:
            j = j.getCause()
        text = str(j.toString())
    else:
        text = str(e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    if type(e).__name__ == "PythonException" and lines:  # a Python traceback from a worker: its last line
        return lines[-1]
    return lines[0] if lines else type(e).__name__


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException

    return (CapturedException, Py4JJavaError)


def detect_format(spark: SparkSession, path: str, fmt: str = "auto") -> str:
    """Return 'parquet', 'jsonl' or 'csv' for ``path`` (a file or a directory of files)."""
    if fmt not in (*FORMATS, "auto"):
        raise InputError(f"format '{fmt}' for '{path}' is not one of {FORMATS}; set data.format")
    files = _list_files(spark, path)  # a missing or empty path is an error whatever the format
    if not files:
        raise InputError(f"input path '{path}' is empty (no data files); point it at a table with rows")
    if fmt != "auto":
        return fmt
    kinds = set()
    for f in files:
        low = f.lower()
        for suffix in (".gz", ".bz2", ".snappy", ".zst"):
            if low.endswith(suffix) and not low.endswith(".snappy.parquet"):
                low = low[: -len(suffix)]
        kinds.update(k for ext, k in _EXTENSIONS.items() if low.endswith(ext))
    if len(kinds) != 1:
        raise InputError(
            f"cannot tell the format of '{path}' from its file names ({sorted(kinds) or 'no known extension'}); "
            f"set data.format to one of {FORMATS}"
        )
    return kinds.pop()


def _string_schema(table: str) -> T.StructType:
    cols, _ = S.TABLES[table]
    return T.StructType(
        [T.StructField(c, T.StringType(), True) for c in cols]
        + [T.StructField(S.CORRUPT_RECORD, T.StringType(), True)]
    )


def _json_lines(spark: SparkSession, path: str, table: str) -> DataFrame:
    """One row per non-blank line, parsed as a JSON object of strings.

    Spark's JSON source turns a line holding an array into one row per element
    (``[]`` into none), which would break input = accepted + rejected; reading
    lines and parsing each with ``from_json`` makes every line exactly one row,
    and a line that is not an object lands in ``_corrupt_record``.
    """
    line = F.regexp_replace(F.col("value"), "^\ufeff", "")  # a byte-order mark opening the file
    parsed = F.from_json(line, _string_schema(table),
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": S.CORRUPT_RECORD})
    return (spark.read.text(path).where(~F.col("value").rlike(r"^\s*$"))
            .select(parsed.alias("j")).select("j.*"))


def log_seq() -> Column:
    """``log_seq``, for events as read (before any shuffle): each row's position in the input, increasing in
    read order (within a file, its row order; Spark's partition-major monotonically increasing id). Prepare keeps
    it to order same-second events (``prepare.tie_break = "log"``)."""
    return F.monotonically_increasing_id().alias(S.LOG_SEQ)


def read_table(spark: SparkSession, path: str, table: str, fmt: str = "auto") -> DataFrame:
    """Read one contract table; returns every contract column plus ``_corrupt_record`` (events: plus
    ``log_seq``, :func:`log_seq`).

    Raises :class:`InputError` when the path is missing or empty, the format is
    unknown, a required column is absent, or a column has a type that cannot
    hold the contract's values (e.g. a struct where a string is expected).
    """
    if table not in S.TABLES:
        raise InputError(f"unknown table '{table}'; expected one of {sorted(S.TABLES)}")
    cols, required = S.TABLES[table]
    fmt = detect_format(spark, path, fmt)
    try:
        df, present = _read(spark, path, table, fmt)
    except _spark_errors() as e:
        raise InputError(f"cannot read {table} at '{path}' as {fmt}: {error_line(e)}; check that the files are "
                         f"{fmt} and not damaged, or set --format / data.format") from None
    missing = [c for c in required if c not in present]
    if missing:
        found = sorted(present)
        shown = [c if len(c) <= 40 else c[:37] + "..." for c in found[:12]] + (["..."] if len(found) > 12 else [])
        raise InputError(
            f"{table} table at '{path}' has no column {', '.join(repr(m) for m in missing)} "
            f"(required, expected {', '.join(cols[m].simpleString() for m in missing)}); "
            f"columns found reading it as {fmt}: {shown}; if it is not {fmt}, set --format / data.format"
        )
    types = dict(df.dtypes)
    for c in cols:
        if c in types and (types[c].startswith(("array", "struct", "map", "binary"))):
            raise InputError(
                f"{table} column '{c}' at '{path}' has type {types[c]}, expected {cols[c].simpleString()}; "
                f"write it as a plain value"
            )
    select = [F.col(c) if c in df.columns else F.lit(None).cast(T.StringType()).alias(c) for c in cols]
    if table == "events":
        select.append(log_seq())
    if S.CORRUPT_RECORD in df.columns:
        select.append(F.col(S.CORRUPT_RECORD))
    else:
        select.append(F.lit(None).cast(T.StringType()).alias(S.CORRUPT_RECORD))
    return df.select(*select)


def _read(spark: SparkSession, path: str, table: str, fmt: str) -> tuple[DataFrame, set[str]]:
    """The table as ``fmt`` (values uncast) and the set of columns its files have."""
    if fmt == "parquet":
        df = spark.read.parquet(path)
        present = set(df.columns)
    elif fmt == "csv":
        header = spark.read.option("header", True).csv(path).columns
        present = set(header)
        df = (
            spark.read.option("header", True)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", S.CORRUPT_RECORD)
            # RFC 4180 as written by Python's csv, pandas, Excel: quotes doubled inside quoted
            # fields, line breaks allowed inside them (so a file is read by one task, not split).
            .option("escape", '"')
            .option("multiLine", True)
            .schema(T.StructType([T.StructField(c, T.StringType()) for c in header]
                                 + [T.StructField(S.CORRUPT_RECORD, T.StringType())]))
            .csv(path)
        )
    else:  # jsonl
        sniff = spark.read.option("samplingRatio", 1.0).json(path)
        present = set(sniff.columns) - {S.CORRUPT_RECORD}
        df = _json_lines(spark, path, table)
    return df, present

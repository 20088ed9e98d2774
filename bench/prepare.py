"""Benchmark: events/s and peak memory of `generate` and `prepare` on local[2].

    .venv/bin/python bench/prepare.py --users 50000 500000 [--out bench/out]

For each size: generate the synthetic platform, then prepare it; records wall
time, events per second and the peak resident memory of the whole process tree
(driver JVM + Python workers), sampled every 0.2 s. Writes the figures with the
date, command, machine and commit to bench/results/prepare.json; with
--write-benchmarks also replaces the "### bench/prepare.py" table in BENCHMARKS.md
(``bench/results.py render prepare`` does the same from the JSON).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark.config import load_config  # noqa: E402
from ytspark.generate import generate  # noqa: E402
from ytspark.prepare import read_inputs, run_prepare  # noqa: E402
from ytspark.session import get_spark  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

AREA = "## prepare"


class PeakRSS:
    """Sample the RSS of this process and all its children (Spark JVM, Python workers)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, nargs="+", default=[50_000, 500_000])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    R.add_args(ap, "prepare", 'the "### bench/prepare.py" table')
    args = ap.parse_args()
    doc = {**R.stamp("prepare"), "spark_master": "local[2]", "load_before": R.load()}
    results = []
    for users in args.users:
        cfg = load_config(None, [
            "spark.master=local[2]", f"generate.users={users}", f"generate.videos={max(3000, users // 10)}",
            f"generate.channels={max(300, users // 100)}", "generate.partitions=16",
            "spark.shuffle_partitions=16", 'spark.driver_memory="8g"'])
        spark = get_spark(cfg, "ytspark-bench-prepare")
        base = Path(args.out) / f"u{users}"
        shutil.rmtree(base, ignore_errors=True)
        with PeakRSS() as mem_g:
            t = time.time()
            counts = generate(spark, cfg.generate, str(base / "raw"))
            gen_s = time.time() - t
        raw = str(base / "raw")
        cfg2 = load_config(None, [
            "spark.master=local[2]", "spark.shuffle_partitions=16", 'spark.driver_memory="8g"',
            f'data.events="{raw}/events"', f'data.users="{raw}/users"', f'data.videos="{raw}/videos"'])
        with PeakRSS() as mem_p:
            t = time.time()
            m = run_prepare(spark, cfg2, read_inputs(spark, cfg2), str(base / "prepared"))
            prep_s = time.time() - t
        n = counts["events"]
        row = {"users": users, "events": n, "generate_s": gen_s, "generate_eps": n / gen_s,
               "generate_peak_gib": mem_g.peak / 2**30, "prepare_s": prep_s, "prepare_eps": n / prep_s,
               "prepare_peak_gib": mem_p.peak / 2**30, "cand_rows": sum(m["candidates"].values()),
               "rank_rows": sum(m["ranking"].values()), "timings": m["timings"]}
        print(row, flush=True)
        results.append(row)
        spark.stop()
        shutil.rmtree(base, ignore_errors=True)
    doc.update(load_after=R.load(), runs=results)
    R.finish("prepare", doc, render, args, AREA)


def render(doc: dict) -> str:
    """The "### bench/prepare.py" table of BENCHMARKS.md from a results document."""
    lines = [
        f"### bench/prepare.py ({doc['date']})", "",
        f"Command: `{doc['command']}`  ",
        R.machine_line(doc, f", Spark {doc['spark_master']}"),
        f"Load average {'/'.join(map(str, doc['load_before']))} before, {'/'.join(map(str, doc['load_after']))} after.",
        "",
        "| users | events | generate s | generate events/s | generate peak RSS GiB | prepare s | prepare events/s "
        "| prepare peak RSS GiB | candidate rows | ranking rows | prepare breakdown (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["runs"]:
        t = r["timings"]
        lines.append(
            f"| {r['users']:,} | {r['events']:,} | {r['generate_s']:.0f} | {r['generate_eps']:,.0f} | "
            f"{r['generate_peak_gib']:.1f} | {r['prepare_s']:.0f} | {r['prepare_eps']:,.0f} | "
            f"{r['prepare_peak_gib']:.1f} | {r['cand_rows']:,} | {r['rank_rows']:,} | "
            f"validate {t['validate_s']}, vocab {t['vocab_s']}, rows {t['rows_s']}, quantiles {t['quantiles_s']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""``ytspark`` command line: one subcommand per stage, each a thin call into the library.

Every subcommand takes ``--profile`` (a file in conf/) and repeated
``--set section.key=value`` overrides; a wrong key or type stops it at start-up.
The ``jobs/*.py`` spark-submit entry points call :func:`main` with their stage.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

from ytspark.config import Config, ConfigError, load_config

log = logging.getLogger("ytspark")

_EPILOG = """Configuration: conf/default.toml, a --profile on top, then --set overrides,
e.g. --set prepare.max_examples_per_user=50 --set spark.master=local[2].
Under spark-submit, --master and --conf settings win over the config."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=os.environ.get("YTSPARK_PROFILE"),
                   help="config profile in conf/ (e.g. local) or a path to a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set prepare.history_length=30")
    p.add_argument("--output", help="root of everything written (default: data.output)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ytspark",
        description="Distributed batch recommender after YouTube's DNN paper: Spark prepare, "
                    "Petastorm + Horovod PyTorch training, FAISS + ranking nightly scoring.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a seeded synthetic video platform (events, users, videos)",
                       description="Writes Parquet tables <output>/raw/{events,users,videos} (and _truth/) "
                                   "in the input contract, simulated in Spark from generate.* settings.")
    _common(g)
    g.add_argument("--users", type=int, help="number of users (default: generate.users)")
    g.add_argument("--videos", type=int, help="number of videos (default: generate.videos)")
    g.add_argument("--seed", type=int, help="random seed (default: generate.seed)")

    pr = sub.add_parser("prepare", help="validate raw logs, fit vocabularies, write training rows",
                        description="Reads events/users/videos (Parquet, JSON Lines or CSV; local or Hadoop URLs) "
                                    "or a MovieLens folder; writes <output>/prepared with accepted tables, "
                                    "rejects, vocabularies, candidate and ranking rows, quantiles and manifest.json.")
    _common(pr)
    _inputs(pr)

    pl = sub.add_parser("pipeline", help="run the nightly pipeline: generate-or-read, prepare",
                        description="Runs the stages in order on the given inputs, or on freshly generated "
                                    "synthetic data when no --events/--movielens is given.")
    _common(pl)
    _inputs(pl)
    pl.add_argument("--skip", action="append", default=[], choices=["generate", "prepare"],
                    help="skip a stage and reuse its existing output (repeatable)")
    return parser


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", help="events table path/URL (default: data.events)")
    p.add_argument("--users", help="users table path/URL (optional)")
    p.add_argument("--videos", help="videos table path/URL (optional)")
    p.add_argument("--format", choices=["auto", "parquet", "jsonl", "csv"], help="input format (default: auto)")
    p.add_argument("--movielens", metavar="DIR", help="read a MovieLens folder (ratings.csv, movies.csv, tags.csv)")


def _config(args: argparse.Namespace) -> Config:
    over = list(args.overrides)
    if args.output:
        over.append(f"data.output={json.dumps(args.output)}")
    for key in ("events", "users", "videos", "format"):
        val = getattr(args, key, None)
        if isinstance(val, str) and val:
            over.append(f"data.{key}={json.dumps(val)}")
    if args.command == "generate":
        for key in ("users", "videos", "seed"):
            if getattr(args, key) is not None:
                over.append(f"generate.{key}={getattr(args, key)}")
    return load_config(args.profile, over)


def paths(cfg: Config) -> dict[str, str]:
    """Where each stage writes under ``data.output``."""
    from ytspark.storage import resolve

    out = resolve(cfg.data.root, cfg.data.output) if cfg.data.root else cfg.data.output
    return {"raw": f"{out}/raw", "prepared": f"{out}/prepared"}


def cmd_generate(spark, cfg: Config) -> dict:
    from ytspark.generate import generate

    target = paths(cfg)["raw"]
    t = time.time()
    counts = generate(spark, cfg.generate, target)
    log.info("generate: %s in %.1fs -> %s", counts, time.time() - t, target)
    return {"raw": target, **counts}


def _raw_tables(spark, cfg: Config, movielens: str | None):
    from ytspark.prepare import read_inputs

    if movielens:
        from ytspark.movielens import read_movielens

        return read_movielens(spark, movielens)
    return read_inputs(spark, cfg)


def cmd_prepare(spark, cfg: Config, movielens: str | None = None) -> dict:
    from ytspark.prepare import run_prepare

    raw = _raw_tables(spark, cfg, movielens)
    target = paths(cfg)["prepared"]
    m = run_prepare(spark, cfg, raw, target)
    ev = m["tables"]["events"]
    log.info("prepare: events input=%d accepted=%d rejected=%d %s", ev["input"], ev["accepted"], ev["rejected"],
             ev["reasons"])
    log.info("prepare: candidate rows %s, ranking rows %s, vocab sizes %s -> %s",
             m["candidates"], m["ranking"], m["vocab_sizes"], target)
    return {"prepared": target, "manifest": m}


def cmd_pipeline(spark, cfg: Config, args: argparse.Namespace) -> dict:
    summary: dict = {}
    if not (cfg.data.events or args.movielens):
        raw = paths(cfg)["raw"]
        if "generate" not in args.skip:
            summary["generate"] = cmd_generate(spark, cfg)
        from dataclasses import replace

        cfg = replace(cfg, data=replace(cfg.data, events=f"{raw}/events", users=f"{raw}/users",
                                        videos=f"{raw}/videos", format="parquet"))
    if "prepare" not in args.skip:
        summary["prepare"] = cmd_prepare(spark, cfg, args.movielens)
    return summary


def _print_summary(command: str, result: dict) -> None:
    if command == "generate":
        print(f"generated {result['events']:,} events for {result['users']:,} users -> {result['raw']}")
        return
    prep = result.get("prepare", result) if command == "pipeline" else result
    if "manifest" in prep:
        m = prep["manifest"]
        ev = m["tables"]["events"]
        print(f"prepared -> {prep['prepared']}")
        print(f"  events: {ev['input']:,} in = {ev['accepted']:,} accepted + {ev['rejected']:,} rejected "
              f"{ev['reasons'] or ''}")
        print(f"  by type: {m['events_by_type']}")
        print(f"  candidate rows: {m['candidates']}  ranking rows: {m['ranking']}")
        print(f"  vocab sizes: video={m['vocab_sizes']['video']:,} token={m['vocab_sizes']['token']:,}")
        print(f"  manifest: {prep['prepared']}/manifest.json  rejects: {prep['prepared']}/rejects")


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    """Entry point of the ``ytspark`` script and of ``jobs/*.py`` (which pass ``command``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if command is not None:
        argv = [command, *argv]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        cfg = _config(args)
    except ConfigError as e:
        print(f"ytspark: config error: {e}", file=sys.stderr)
        return 2
    from ytspark.session import get_spark

    spark = get_spark(cfg, app_name=f"ytspark-{args.command}")
    try:
        if args.command == "generate":
            result = cmd_generate(spark, cfg)
        elif args.command == "prepare":
            result = cmd_prepare(spark, cfg, args.movielens)
        else:
            result = cmd_pipeline(spark, cfg, args)
        _print_summary(args.command, result)
        return 0
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"ytspark {args.command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())

"""``ytspark`` command line: argument parsing, then one call into :mod:`ytspark.pipeline` per command.

Every subcommand takes ``--profile`` (a file in conf/) and repeated
``--set section.key=value`` overrides; a wrong key, type or value (checked by
:func:`ytspark.config.validate`) stops it at start-up, before Spark starts.
The ``jobs/*.py`` spark-submit entry points call :func:`main` with their stage.
What each command runs lives in :mod:`ytspark.pipeline`; this module parses,
dispatches and prints the summary.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from typing import Sequence

from ytspark import pipeline
from ytspark.config import DATA_FORMATS, TRAIN_LAUNCHERS, Config, ConfigError, load_config
from ytspark.pipeline import STAGES

# ytspark.session and ytspark.sources (pyspark) and pandas are imported inside the functions that use them:
# parsing and the config check load neither, so a wrong value exits in milliseconds.

_EPILOG = """Configuration: conf/default.toml, a --profile on top, then --set overrides,
e.g. --set prepare.max_examples_per_user=50 --set spark.master=local[2] --set score.run_date=2026-12-01.
A wrong key, type or value stops the command at start-up (exit 2), naming the key.
Under spark-submit, --master and --conf settings win over the config."""


# Each command: (one-line help, description), in the order of `ytspark --help`.
_COMMANDS = {
    "generate": ("write a seeded synthetic video platform (events, users, videos)",
                 "Writes Parquet tables <output>/raw/{events,users,videos} (and _truth/) "
                 "in the input contract, simulated in Spark from generate.* settings."),
    "prepare": ("validate raw logs, fit vocabularies, write training rows",
                "Reads events/users/videos (Parquet, JSON Lines or CSV; local or Hadoop URLs) "
                "or a MovieLens folder; writes <output>/prepared with accepted tables, "
                "rejects, vocabularies, candidate and ranking rows, quantiles and manifest.json."),
    "train-candidates": ("train the candidate-generation network (Petastorm + Horovod)",
                         "Reads <output>/prepared/candidates (or --prepared), trains on train.num_proc "
                         "ranks with train.launcher, checkpoints every epoch to "
                         "<output>/models/candidate/_work and publishes "
                         "<output>/models/candidate/<version> (+ LATEST)."),
    "train-ranker": ("train the ranking network (weighted logistic regression)",
                     "Scores the prepared impressions with the candidate model as of each "
                     "impression (or, without impressions, turns its retrieved-but-unwatched "
                     "videos into negatives) into <output>/models/ranker/_rows, starts its video "
                     "table from the candidate model, publishes <output>/models/ranker/<version>."),
    "evaluate": ("next-watch metrics of the models vs popularity and tuned ALS, report",
                 "Test target = each user's last watch, validation = the one before; whole "
                 "catalogue, watched videos excluded. Writes <output>/evaluation/report.md, "
                 "metrics.csv/json and PNG plots."),
    "score": ("nightly scoring: FAISS retrieval + ranking for every user, top-N table",
              "Writes <output>/recommendations/run_date=YYYY-MM-DD/ atomically "
              "(Parquet + _manifest.json + _SUCCESS); with score.table, also that date's "
              "partition of a catalog table. Serving rules: score.exclude, "
              "score.max_per_channel, score.min_video_age_s, score.max_video_age_days."),
    "check-skew": ("compare training ranking rows with the rows serving builds for them",
                   "For a seeded sample of the prepared ranking rows (logged impressions), builds "
                   "the ranker's inputs with the serving code as of each impression's time and "
                   "prints, per feature, how many rows differ and the largest difference "
                   "(worst first). Exits 1 when a checked feature differs."),
    "pipeline": ("run the whole nightly pipeline on your logs or generated data",
                 "generate-or-read -> prepare -> train-candidates -> train-ranker -> score -> "
                 "evaluate, on the given inputs, or on freshly generated synthetic data when "
                 "no --events/--movielens is given. Each stage can be skipped to reuse its "
                 "output; without impressions train-ranker learns from the candidate model's "
                 "retrievals."),
}
_READS_PREPARED = ("train-candidates", "train-ranker", "evaluate", "score", "check-skew")  # these take --prepared


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=os.environ.get("YTSPARK_PROFILE"),
                   help="config profile in conf/ (e.g. local) or a path to a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set prepare.history_length=30")
    p.add_argument("--output", help="root of everything written (default: data.output)")


def _command(sub, name: str, help: str, description: str, prepared: bool = False) -> argparse.ArgumentParser:
    """One subcommand, with the options every command takes (--profile, --set, --output) and, for the stages
    that read prepare's output, --prepared."""
    p = sub.add_parser(name, help=help, description=description)
    _common(p)
    if prepared:
        p.add_argument("--prepared", help="prepared directory (default: <output>/prepared)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ytspark",
        description="Distributed batch recommender after YouTube's DNN paper: Spark prepare, "
                    "Petastorm + Horovod PyTorch training, FAISS + ranking nightly scoring.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmd = {name: _command(sub, name, help, description, prepared=name in _READS_PREPARED)
           for name, (help, description) in _COMMANDS.items()}

    g = cmd["generate"]
    g.add_argument("--users", type=int, help="number of users (default: generate.users)")
    g.add_argument("--videos", type=int, help="number of videos (default: generate.videos)")
    g.add_argument("--seed", type=int, help="random seed (default: generate.seed)")

    _inputs(cmd["prepare"])
    _training(cmd["train-candidates"])

    tr = cmd["train-ranker"]
    _training(tr)
    tr.add_argument("--candidate-model", help="candidate model dir (default: <output>/models, LATEST)")

    ev = cmd["evaluate"]
    ev.add_argument("--models", help="models root or candidate model dir (default: <output>/models)")
    ev.add_argument("--no-model", action="store_true", help="baselines only")
    ev.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                    help="also score this candidate model (a models root or model dir) in the same run, "
                         "as system 'ytspark candidate (NAME)' (repeatable; e.g. ablations)")
    ev.add_argument("--compare-ranker", action="append", default=[], metavar="NAME=DIR",
                    help="also rerank the candidate model's retrievals with this ranker (a models root or ranker "
                         "model dir) in the same run, as system 'ytspark candidate + ranking (NAME)' (repeatable)")

    sc = cmd["score"]
    sc.add_argument("--models", help="models root (default: <output>/models)")
    _run_date(sc)

    sk = cmd["check-skew"]
    sk.add_argument("--sample", type=int, default=500, help="ranking rows to compare (default: 500)")
    sk.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")

    pl = cmd["pipeline"]
    _inputs(pl)
    pl.add_argument("--skip", action="append", default=[], choices=list(STAGES),
                    help="skip a stage and reuse its existing output (repeatable)")
    pl.add_argument("--resume", action="store_true", help="resume training stages from their last checkpoint")
    _run_date(pl)
    return parser


def _run_date(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-date", metavar="YYYY-MM-DD",
                   help="the scoring run's date: events up to the end of this UTC day count, output in "
                        "recommendations/run_date=YYYY-MM-DD (sets score.run_date; default: score.run_date, "
                        "else today, UTC)")


def _training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="models root (default: <output>/models)")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    p.add_argument("--launcher", choices=list(TRAIN_LAUNCHERS),
                   help="override train.launcher")
    p.add_argument("--num-proc", type=int, help="override train.num_proc (data-parallel ranks)")


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", help="events table path/URL (default: data.events)")
    p.add_argument("--users", help="users table path/URL (optional)")
    p.add_argument("--videos", help="videos table path/URL (optional)")
    p.add_argument("--format", choices=list(DATA_FORMATS), help="input format (default: auto)")
    p.add_argument("--movielens", metavar="DIR", help="read a MovieLens folder (ratings.csv, movies.csv, tags.csv)")


def _config(args: argparse.Namespace) -> Config:
    """The config of ``args``: profile, --set overrides, then the command's own options; validated.

    Raises :class:`ConfigError` (naming the key) for a wrong key, type or value, before anything starts.
    """
    over = list(args.overrides)
    if args.output:
        over.append(f"data.output={json.dumps(args.output)}")
    for key in ("events", "users", "videos", "format"):
        val = getattr(args, key, None)
        if isinstance(val, str) and val:
            over.append(f"data.{key}={json.dumps(val)}")
    if getattr(args, "launcher", None):
        over.append(f"train.launcher={json.dumps(args.launcher)}")
    if getattr(args, "num_proc", None):
        over.append(f"train.num_proc={args.num_proc}")
    if getattr(args, "run_date", None):
        over.append(f"score.run_date={json.dumps(args.run_date)}")
    if args.command == "generate":
        for key in ("users", "videos", "seed"):
            if getattr(args, key) is not None:
                over.append(f"generate.{key}={getattr(args, key)}")
    return load_config(args.profile, over)  # validated: every enumerated or ranged value


def _print_skew(prepared: str, table) -> int:
    """``ytspark check-skew``'s output: the per-feature table; 1 when a checked feature differs."""
    if table.empty:
        print(f"check-skew: {prepared} has no training impressions: the impression features are 0 both in "
              "training and at serving; nothing to compare")
        return 0
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    bad = table[(table["note"] == "") & (table["differ"] > 0)]
    print(f"check-skew: {int(table['rows'].max())} training rows of {prepared}: "
          + ("no checked feature differs" if bad.empty else f"{len(bad)} feature(s) differ: {list(bad['feature'])}"))
    return 1 if len(bad) else 0


def encoder_choice_line(choice: dict) -> str:
    """One line of ``candidate.encoder = auto``'s choice (MODEL.json ``encoder_choice``): what was published and
    both encoders' validation figures, fused (what serving retrieves with) and the network alone."""
    v = choice["validation"]
    monitor = next(iter(v.values()))["monitor"]
    fig = ", ".join(f"{e} {f['fused']:.4f} ({f['network']:.4f})" for e, f in v.items())
    return f"encoder: auto published {choice['chosen']}; validation {monitor} fused (network alone): {fig}"


def _print_summary(command: str, result: dict) -> None:
    stages = result if command == "pipeline" else {command: result}
    if "generate" in stages:
        g = stages["generate"]
        print(f"generated {g['events']:,} events for {g['users']:,} users -> {g['raw']}")
    if "prepare" in stages:
        prep = stages["prepare"]
        m = prep["manifest"]
        ev = m["tables"]["events"]
        print(f"prepared -> {prep['prepared']}")
        print(f"  events: {ev['input']:,} in = {ev['accepted']:,} accepted + {ev['rejected']:,} rejected "
              f"{ev['reasons'] or ''}")
        print(f"  by type: {m['events_by_type']}")
        print(f"  candidate rows: {m['candidates']}  ranking rows: {m['ranking']}")
        print(f"  vocab sizes: video={m['vocab_sizes']['video']:,} token={m['vocab_sizes']['token']:,}")
        print(f"  manifest: {prep['prepared']}/manifest.json  rejects: {prep['prepared']}/rejects")
    for stage in ("train-candidates", "train-ranker"):
        if stage in stages:
            r = stages[stage]
            best = ", ".join(f"{k}={v:.4f}" for k, v in r["best"].items() if isinstance(v, float))
            both = " (the stage, both encoders)" if r.get("encoder_choice") else ""
            print(f"{stage}: {r['epochs_run']} epochs, {r['global_step']} steps; {r['seconds']}s{both}; "
                  f"best epoch {r['best_epoch']}: {best}")
            print(f"  model: {r['model_dir']}")
            if r.get("encoder_choice"):
                print("  " + encoder_choice_line(r["encoder_choice"]))
    if "score" in stages:
        s = stages["score"]
        print(f"recommendations -> {s['path']}")
        print(f"  {s['users']:,} users, {s['rows']:,} rows, users by source {s['users_by_source']}, "
              f"catalogue coverage {s['coverage']['share']:.1%}, model {s['model_version']}"
              + (f", ranker {s['ranker_version']}" if s.get("ranker_version") else ""))
    if "evaluate" in stages:
        e = stages["evaluate"]
        print(f"evaluation report -> {e['report']}")
        print(evaluation_table(e["table"]))


# The closing table's columns: (metric key, header, format); a missing or NaN value prints n/a.
TABLE_COLUMNS = (("hr@10", "hr@10", "{:.4f}"), ("hr@50", "hr@50", "{:.4f}"), ("ndcg@10", "ndcg@10", "{:.4f}"),
                 ("coverage@10", "cover@10", "{:.4f}"), ("gini@10", "gini@10", "{:.3f}"),
                 ("top_channel@10", "top_ch@10", "{:.3f}"), ("wpul", "wpul", "{:.4f}"), ("auc", "auc", "{:.4f}"),
                 ("watch_ndcg", "watch_ndcg", "{:.4f}"), ("true_watch_s@10", "true_watch_s", "{:,.0f}"),
                 ("true_p_click@10", "true_p_click", "{:.4f}"))


def evaluation_table(table: dict[str, dict]) -> str:
    """The evaluation's test table as printed at the end of ``pipeline`` and ``evaluate``: both objectives'
    metrics per system, then one line saying what each stage optimises."""

    def cell(m: dict, key: str, fmt: str) -> str:
        v = m.get(key)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    width = max([34, *(len(n) + 2 for n in table)])
    lines = ["  " + f"{'system':<{width}}" + "".join(f"{h:>{max(len(h) + 2, 9)}}" for _, h, _ in TABLE_COLUMNS)]
    for name, m in table.items():
        lines.append("  " + f"{name:<{width}}" + "".join(
            f"{cell(m, key, fmt):>{max(len(h) + 2, 9)}}" for key, h, fmt in TABLE_COLUMNS))
    lines.append("  candidate generation optimises the next watch (hr, ndcg); the ranking network expected watch time "
                 "per impression (wpul, lower is better; auc; watch_ndcg on each user's held-out impressions of the "
                 "target day; true_watch_s / true_p_click of the top 10 from a generated world's truth); cover, "
                 "gini and top_ch describe the lists (catalogue share, exposure inequality, top channel's share). "
                 "n/a: no impressions, channels or truth in this data")
    return "\n".join(lines)


def _run(spark, cfg: Config, args: argparse.Namespace):
    """Dispatch ``args.command`` to its :mod:`ytspark.pipeline` function; returns its summary."""
    c = args.command
    if c == "generate":
        return pipeline.run_generate(spark, cfg)
    if c == "prepare":
        return pipeline.run_prepare(spark, cfg, args.movielens)
    if c in ("train-candidates", "train-ranker"):
        return pipeline.run_train(spark, cfg, "candidate" if c == "train-candidates" else "ranker", args.prepared,
                                  args.models, args.resume, getattr(args, "candidate_model", None))
    if c == "evaluate":
        return pipeline.run_evaluate(spark, cfg, args.prepared, args.models, args.no_model, args.compare,
                                     args.compare_ranker)
    if c == "score":
        return pipeline.run_score(spark, cfg, args.prepared, args.models, args.run_date)
    if c == "check-skew":
        return pipeline.run_check_skew(spark, cfg, args.prepared, args.sample, args.seed)
    return pipeline.run_pipeline(spark, cfg, args.skip, args.movielens, args.resume)


QUIET_LOGGERS = ("faiss.loader", "py4j", "matplotlib", "petastorm")


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    """Entry point of the ``ytspark`` script and of ``jobs/*.py`` (which pass ``command``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if command is not None:
        argv = [command, *argv]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for name in QUIET_LOGGERS:  # libraries' chatter at INFO (FAISS probing CPU features, Petastorm on plain Parquet)
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # a wrong key, type or value fails here, in milliseconds, before Spark or any stage starts
        cfg = _config(args)
    except ConfigError as e:
        print(f"ytspark: config error: {e}", file=sys.stderr)
        return 2
    try:  # a model directory that cannot be used fails before Spark starts
        if args.command in ("evaluate", "score") and not getattr(args, "no_model", False):
            pipeline.check_models(cfg, args.models, baselines_hint=args.command == "evaluate",
                                  compare=getattr(args, "compare", ()),
                                  compare_ranker=getattr(args, "compare_ranker", ()))
    except ValueError as e:
        print(f"ytspark {args.command}: error: {e}", file=sys.stderr)
        return 1
    from ytspark.session import get_spark
    from ytspark.sources import error_line

    spark = get_spark(cfg, app_name=f"ytspark-{args.command}")
    try:
        result = _run(spark, cfg, args)
        if args.command == "check-skew":
            return _print_skew(*result)
        _print_summary(args.command, result)
        return 0
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as e:
        print(f"ytspark {args.command}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 1
    except Exception as e:  # Spark/JVM errors (AnalysisException, Py4JJavaError): one line, not a Java trace
        if type(e).__module__.split(".")[0] not in ("pyspark", "py4j"):
            raise
        print(f"ytspark {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of the candidate network at 1 and 2 ranks, and its FLOP/s against this machine's matmul.

    .venv/bin/python bench/train.py --prepared out/prepared [--steps 60] [--ranks 1 2] [--batch N]
        [--encoder bag|sequence] [--profile movielens]

Runs the real training path (Petastorm shards, the training loop, launcher
``local`` for 1 rank and ``horovodrun --gloo`` for 2) for one capped epoch
per rank count, reads the examples/s the loop measured, converts it to model
FLOP/s (dense matmul FLOPs of the tower and of the sampled softmax, forward
and backward = 3x forward; embedding gathers not counted) and divides by the
dense float32 matmul FLOP/s measured with torch in the same run on all cores
(the physical limit here). Writes the figures with the date, command, machine
and commit to bench/results/train.json; with --write-benchmarks also replaces the
"### bench/train.py[ --set ...]" table in BENCHMARKS.md (``bench/results.py render
train`` does the same from the JSON).

``--encoder sequence`` measures the sequence encoder on ``sequences/train``
(prepare with ``--set candidate.encoder=sequence`` or ``auto``): a row is a
user window, so its examples/s are windows/s; the table adds the seconds of
one full epoch (all training rows at the measured rate). FLOP/s are left
out for it (attention is not in the dense-matmul count).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ytspark.config import load_config  # noqa: E402
from ytspark.models.candidate import CandidateModel  # noqa: E402
from ytspark.train.candidate_task import CandidateTask  # noqa: E402
from ytspark.train.launcher import train  # noqa: E402
from ytspark.train.sequence_task import SequenceTask  # noqa: E402
import results as R  # noqa: E402  (bench/results.py: JSON results, BENCHMARKS.md sections)

AREA = "## Training throughput"


def matmul_flops(threads: int, n: int = 2048, reps: int = 10) -> float:
    """Best-of-3 dense float32 matmul FLOP/s with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def flops_per_example(model: CandidateModel, num_sampled: int) -> float:
    """Forward + backward dense FLOPs of one training example (3x the forward matmuls)."""
    fwd = 0
    for layer in model.tower:
        if isinstance(layer, torch.nn.Linear):
            fwd += 2 * layer.in_features * layer.out_features
    n_cls = min(num_sampled, model.config.n_videos - 2) + 1
    fwd += 2 * model.config.embed_dim * n_cls
    return 3.0 * fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default=str(ROOT / "out" / "prepared"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=None,
                    help="rows per step and rank (default: the config's candidate.batch_size, or seq_batch_size "
                         "with --encoder sequence)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--encoder", choices=("bag", "sequence"), default="bag")
    ap.add_argument("--profile", default=None, help="config profile (e.g. movielens); default: default.toml only")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    R.add_args(ap, "train", 'the "### bench/train.py" table (with the --set overrides)')
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    doc = {**R.stamp("train"), "torch": torch.__version__, "overrides": args.overrides, "encoder": args.encoder,
           "profile": args.profile, "load_before": R.load()}
    peak = matmul_flops(cores)
    rows = []
    batch_key = "seq_batch_size" if args.encoder == "sequence" else "batch_size"
    batch = [f"candidate.{batch_key}={args.batch}"] if args.batch else []
    for n in args.ranks:
        launcher = "local" if n == 1 else "horovodrun"
        cfg = load_config(args.profile, [*batch, "candidate.epochs=1",
                                         "train.progress=false", f'candidate.encoder="{args.encoder}"',
                                         f"train.steps_per_epoch={args.steps}", f'train.launcher="{launcher}"',
                                         f"train.num_proc={n}", *args.overrides])
        task = (SequenceTask if args.encoder == "sequence" else CandidateTask)(cfg, args.prepared)
        fpe = 0.0 if args.encoder == "sequence" else flops_per_example(task.build_model(), cfg.candidate.num_sampled)
        with tempfile.TemporaryDirectory(prefix="ytspark-bench-") as models:
            t = time.time()
            r = train(cfg, "candidate", args.prepared, models)
            wall = time.time() - t
        ex_s = r["history"][0]["examples_per_s"]
        rows.append({"ranks": n, "launcher": launcher, "examples_per_s": ex_s, "model_gflops": ex_s * fpe / 1e9,
                     "fraction_of_matmul": ex_s * fpe / peak, "wall_s": round(wall, 1),
                     "steps": r["global_step"], "train_rows": task.train_rows(),
                     "epoch_s": round(task.train_rows() / max(ex_s, 1e-9), 1)})
        print(json.dumps(rows[-1]))
    cfg0 = load_config(args.profile, [*batch, *args.overrides])
    doc.update(load_after=R.load(), threads=cores, matmul_gflops=peak / 1e9, mflop_per_example=fpe / 1e6,
               model={"embed_dim": cfg0.candidate.embed_dim, "hidden": list(cfg0.candidate.hidden),
                      "num_sampled": cfg0.candidate.num_sampled, "batch_size": cfg0.candidate.batch_size,
                      "attn_layers": cfg0.candidate.attn_layers,
                      "attn_heads": cfg0.candidate.attn_heads, "seq_num_sampled": cfg0.candidate.seq_num_sampled,
                      "seq_batch_size": cfg0.candidate.seq_batch_size, "seq_horizon": cfg0.candidate.seq_horizon,
                      "seq_horizon_decay": cfg0.candidate.seq_horizon_decay}, rows=rows)
    R.finish("train", doc, render, args, AREA)


def variant(doc: dict) -> str:
    """The heading's variant: encoder, profile and --set overrides (empty for the default run)."""
    enc = doc.get("encoder", "bag")
    return ((f" --encoder {enc}" if enc != "bag" else "") + (f" --profile {doc['profile']}" if doc.get("profile") else "")
            + "".join(f" --set {o}" for o in doc["overrides"]))


def render(doc: dict) -> str:
    """The "### bench/train.py[ --set ...]" table of BENCHMARKS.md from a results document."""
    m = doc["model"]
    lines = [
        f"### bench/train.py{variant(doc)} ({doc['date']})", "",
        f"Command: `{doc['command']}`  ",
        R.machine_line(doc, f", torch {doc['torch']}"),
        f"Load average {'/'.join(map(str, doc['load_before']))} before, {'/'.join(map(str, doc['load_after']))} "
        "after.  ",
        (f"Model: the sequence encoder, embed {m['embed_dim']}, {m.get('attn_layers')} layers x "
         f"{m.get('attn_heads')} heads, {m.get('seq_batch_size')} windows a step, {m.get('seq_num_sampled')} "
         "sampled negatives shared by every position"
         + (f", each position's next {m['seq_horizon']} watches as targets (decay {m['seq_horizon_decay']})"
            if m.get("seq_horizon", 1) > 1 else "") + " (rows are user windows).  "
         if doc.get("encoder") == "sequence" else
         f"Model: embed {m['embed_dim']}, tower {m['hidden']}, {m['num_sampled']} sampled negatives; "
         f"{doc['mflop_per_example']:.2f} MFLOP per training example (dense matmuls, fwd+bwd).  "),
        f"Measured dense float32 matmul on {doc['threads']} threads (2048², best of 3): "
        f"**{doc['matmul_gflops']:.1f} GFLOP/s** (the limit here).", "",
        "| ranks | launcher | rows/s | model GFLOP/s | fraction of matmul limit | steps | wall s | full epoch s |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['ranks']} | {r['launcher']} | {r['examples_per_s']:,.0f} | "
          + (f"{r['model_gflops']:.1f} | {100 * r['fraction_of_matmul']:.0f}%" if r['model_gflops'] else "- | -")
          + f" | {r['steps']} | {r['wall_s']} | {r.get('epoch_s', '-')} ({r.get('train_rows', 0):,} rows) |"
          for r in doc["rows"]],
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

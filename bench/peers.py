"""Reference peer: RecBole's SASRec on the served-table harness's split, scored by the harness's own code (issue 17).

    .venv/bin/python bench/peers.py --setup                 # make the peers virtualenv (also done on a first run)
    nice -n 19 .venv/bin/python bench/peers.py --data ml    # ml-latest-small, 6 epochs
    nice -n 19 .venv/bin/python bench/peers.py --data dense # bench/dense_subset.py's subset of it (1,700 movies, >= 20)
    nice -n 19 .venv/bin/python bench/peers.py --movielens DIR [--name NAME] [--epochs N] [--work DIR]

Not part of the test suite or CI: it needs its own virtualenv. Any Python may start it: it makes (``--setup``,
or when missing or its requirements changed) ``~/.cache/ytspark/peers-venv`` (``--venv``, or
``$YTSPARK_PEERS_VENV``) with ``python3.11 -m venv`` and pip-installs :data:`REQUIREMENTS` there, then runs
itself again with that venv's Python. Pins: ``torch==2.13.0`` (the CPU wheel, as in the project; pip's
configured wheel folder has it here, elsewhere pass ``--torch-index https://download.pytorch.org/whl/cpu`` or
pip pulls a CUDA build), ``recbole==1.2.1`` (the latest), ``numpy<2`` (RecBole 1.2.1 assigns ``np.float_`` and
friends at start, gone in numpy 2), ``pandas<3`` (its inplace ``fillna`` on a column needs pandas 2's
semantics) and ``pyarrow<22`` (the harness reads Parquet; pyarrow 22 on wants numpy 2). One patch at run
time, no edit of site-packages: ``torch.load`` defaults to ``weights_only=False`` again (torch >= 2.6 made it
True; RecBole's checkpoint holds its Config object).

Protocol, the served-table check's (``../shared/eval/harness.py``, DESIGN.md): the harness module is loaded
from its file with its ``DATA`` pointed at the MovieLens folder, ``split`` writes the input (every watch but
each user's last, users with >= 3 watches, order (timestamp, movieId)) and the held-out truth, and ``score``
scores a recommendations folder in the layout it reads (``user_id, rank, video_id`` Parquet): whole catalogue
(items in the input), the user's input items removed, HR@10/50/100, NDCG@10, MRR@100 over all held-out users.

SASRec: RecBole's standard configuration (``properties/model/SASRec.yaml``: 2 layers, 2 heads, hidden 64,
inner 256, dropout 0.5/0.5, CE loss over the whole catalogue, no negative sampling; Adam lr 1e-3, batch 2048,
``MAX_ITEM_LIST_LENGTH`` 50), trained on the harness's input only, as RecBole's leave-one-out with
``{'LS': 'valid_only'}``: each user's last input watch (the second-to-last watch overall) is the validation
target, the checkpoint kept is the epoch with the best validation MRR@10 (RecBole's default), as in a standard
``run_recbole``. The atomic ``.inter`` file's timestamp is the watch's position in the user's harness order
(RecBole keeps timestamps as float32 and sorts without a tie-break, so raw seconds would reorder same-second
watches). Prediction: every held-out user's full input sequence (its last 50 watches), all items scored, the
padding id and the user's input items removed, the top 100 written for the harness.

Output: ``bench/results/peers.json`` (``--results``), one entry per data set under ``runs`` (re-running one
data set replaces its entry), with the split's sizes, seconds per training epoch and per validation pass, the
validation curve, the best epoch and the harness's figures; and a one-line summary. ``--work DIR`` keeps the
split, the atomic files, RecBole's log and checkpoint and the recommendations (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path(os.environ.get("YTSPARK_PEERS_VENV", Path.home() / ".cache" / "ytspark" / "peers-venv"))
REQUIREMENTS = ["torch==2.13.0", "recbole==1.2.1", "numpy<2", "pandas<3", "pyarrow<22", "psutil"]
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small"
HARNESS = ROOT.parent / "shared" / "eval" / "harness.py"
TOP = 100


# ------------------------------------------------------------------ the virtualenv

def _marker(venv: Path) -> Path:
    return venv / "ytspark-peers-requirements.txt"


def setup(venv: Path, python: str, torch_index: str | None, force: bool = False) -> None:
    """Make ``venv`` and install :data:`REQUIREMENTS` unless its marker already lists exactly them."""
    want = "\n".join(REQUIREMENTS) + "\n"
    if not force and _marker(venv).exists() and _marker(venv).read_text() == want:
        return
    if force or not (venv / "bin" / "python").exists():
        print(f"peers: making {venv} with {python}", flush=True)
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    if torch_index:
        pip += ["--extra-index-url", torch_index]
    print(f"peers: pip install {' '.join(REQUIREMENTS)}", flush=True)
    subprocess.run(pip + REQUIREMENTS, check=True)
    _marker(venv).write_text(want)


def _in_venv(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()


# ------------------------------------------------------------------ the harness

def load_harness(path: Path, movielens: Path):
    """The harness module from its file, its ``DATA`` pointed at ``movielens`` (nothing else of it changes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("served_table_harness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.DATA = movielens.resolve()
    return mod


def input_sequences(split_dir: Path):
    """The harness's input, each user's watches in the harness's order (timestamp, movieId): a DataFrame with
    ``user_id``, ``item_id`` and ``pos`` (0, 1, ... per user), and the held-out truth."""
    import pandas as pd

    ev = pd.read_csv(split_dir / "events.csv", dtype={"user_id": "int64", "video_id": "int64"})
    ev = ev.rename(columns={"video_id": "item_id"})
    ev = ev.sort_values(["user_id", "event_ts", "item_id"], kind="mergesort").reset_index(drop=True)
    ev["pos"] = ev.groupby("user_id").cumcount()
    # the same pairs and order the harness wrote (input_pairs.csv is in its sort order)
    pairs = pd.read_csv(split_dir / "input_pairs.csv")
    assert (pairs.user_id.to_numpy() == ev.user_id.to_numpy()).all() and \
           (pairs.item_id.to_numpy() == ev.item_id.to_numpy()).all(), "input order differs from the harness's"
    truth = pd.read_csv(split_dir / "truth.csv")
    return ev[["user_id", "item_id", "pos"]], truth


# ------------------------------------------------------------------ RecBole

def _patch_torch_load() -> None:
    """torch >= 2.6 loads with ``weights_only=True`` by default; RecBole's checkpoints hold its Config."""
    import torch

    if getattr(torch.load, "_peers_patched", False):
        return
    orig = torch.load

    def load(*a, **k):
        k.setdefault("weights_only", False)
        return orig(*a, **k)

    load._peers_patched = True
    torch.load = load


def run_sasrec(seqs, work: Path, epochs: int, seed: int, batch: int):
    """Train SASRec on ``seqs`` (RecBole, leave-one-out validation on each user's last input watch); returns
    (model, dataset, config, timings) with the best-validation checkpoint loaded."""
    import torch

    _patch_torch_load()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    name = "peers"
    d = work / "recbole" / name
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, p in seqs.itertuples(index=False):
            f.write(f"{u}\t{i}\t{p}\n")
    cfg = {
        "data_path": str(work / "recbole"), "checkpoint_dir": str(work / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50, "loss_type": "CE", "train_neg_sample_args": None,
        "epochs": epochs, "train_batch_size": batch, "learning_rate": 1e-3, "stopping_step": 10,
        "eval_args": {"split": {"LS": "valid_only"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "MRR@10",
        "use_gpu": False, "seed": seed, "reproducibility": True, "show_progress": False, "log_wandb": False,
    }
    argv, cwd = sys.argv, os.getcwd()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line
    os.chdir(work)  # RecBole writes log/ and log_tensorboard/ into the working directory
    try:
        config = Config(model="SASRec", dataset=name, config_dict=cfg)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        dataset = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, dataset)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = SASRec(config, train_data._dataset).to(config["device"])
        trainer = Trainer(config, model)
        times = {"train_epoch_s": [], "train_epoch_cpu_s": [], "valid_s": [], "valid": []}

        def timed(fn, key):
            def wrapper(*a, **k):
                t, c = time.perf_counter(), time.process_time()
                out = fn(*a, **k)
                times[key].append(round(time.perf_counter() - t, 2))
                if key == "train_epoch_s":
                    times["train_epoch_cpu_s"].append(round(time.process_time() - c, 2))
                if key == "valid_s":
                    times["valid"].append({k_: round(float(v), 4) for k_, v in out[1].items()})
                return out
            return wrapper

        trainer._train_epoch = timed(trainer._train_epoch, "train_epoch_s")
        trainer._valid_epoch = timed(trainer._valid_epoch, "valid_s")
        t = time.perf_counter()
        best_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        times["fit_s"] = round(time.perf_counter() - t, 1)
        ckpt = torch.load(trainer.saved_model_file, map_location="cpu")
        model.load_state_dict(ckpt["state_dict"])
        model.load_other_parameter(ckpt.get("other_parameter"))
        times["best_epoch"] = int(ckpt["epoch"]) + 1
        times["best_valid_mrr10"] = round(float(best_score), 4)
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return model, dataset, config, times


def recommend(model, dataset, seqs, top: int = TOP, batch: int = 256):
    """Top ``top`` items for every user of ``seqs`` from their full input sequence (last ``MAX_ITEM_LIST_LENGTH``),
    padding and the user's input items removed; a DataFrame ``user_id, rank, video_id`` (the harness's layout)."""
    import numpy as np
    import pandas as pd
    import torch
    from recbole.data.interaction import Interaction

    maxlen = model.max_seq_length
    iid = dataset.iid_field
    ids = dataset.token2id(iid, seqs.item_id.astype(str).to_numpy())
    users = seqs.user_id.to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    out = []
    model.eval()
    with torch.no_grad():
        for b in range(0, len(starts), batch):
            s, e = starts[b:b + batch], ends[b:b + batch]
            seq = torch.zeros((len(s), maxlen), dtype=torch.long)
            lens = torch.zeros(len(s), dtype=torch.long)
            for r, (a, z) in enumerate(zip(s, e)):
                tail = ids[max(a, z - maxlen):z]
                seq[r, :len(tail)] = torch.as_tensor(tail)
                lens[r] = len(tail)
            scores = model.full_sort_predict(Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens}))
            scores[:, 0] = -torch.inf  # padding id
            for r, (a, z) in enumerate(zip(s, e)):
                scores[r, torch.as_tensor(ids[a:z])] = -torch.inf  # every input item, not only the last 50
            vals, top_ids = torch.topk(scores, min(top, scores.shape[1]), dim=1)
            keep = torch.isfinite(vals).numpy()  # a user who has seen all but a few items gets a shorter list
            k = keep.shape[1]
            out.append(pd.DataFrame({
                "user_id": np.repeat(users[s], k)[keep.reshape(-1)],
                "rank": np.tile(np.arange(1, k + 1), len(s))[keep.reshape(-1)],
                "video_id": dataset.id2token(iid, top_ids.numpy()[keep]).astype("int64")}))
    return pd.concat(out, ignore_index=True)


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["ml", "dense"], default="ml",
                    help="ml: ml-latest-small; dense: bench/dense_subset.py's subset of it (1,700 movies, >= 20)")
    ap.add_argument("--movielens", type=Path, help="any MovieLens-format folder (ratings.csv, movies.csv)")
    ap.add_argument("--source", type=Path, default=MOVIELENS, help="ml-latest-small (for --data ml|dense)")
    ap.add_argument("--name", help="the data set's name in the results (default: from --data / the folder)")
    ap.add_argument("--harness", type=Path, default=HARNESS)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=2048, help="train_batch_size")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--work", type=Path, help="keep the split, RecBole's files and the recommendations here")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "peers.json")
    ap.add_argument("--no-write", action="store_true", help="print only, no results JSON")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--python", default="python3.11", help="the Python that makes the venv")
    ap.add_argument("--torch-index", help="extra pip index for the CPU torch wheel")
    ap.add_argument("--setup", action="store_true", help="(re)make the venv and exit")
    args = ap.parse_args()

    if args.setup:
        setup(args.venv, args.python, args.torch_index, force=True)
        return 0
    if not _in_venv(args.venv):
        setup(args.venv, args.python, args.torch_index)
        py = str(args.venv / "bin" / "python")
        os.execv(py, [py, str(Path(__file__).resolve()), *sys.argv[1:]])

    sys.path.insert(0, str(ROOT / "bench"))
    import results as R  # noqa: E402  (bench/results.py: date, command, machine, commit)

    work = args.work or Path(tempfile.mkdtemp(prefix="peers_"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.movielens:
        data, name = args.movielens, args.name or args.movielens.resolve().name
    elif args.data == "dense":
        from dense_subset import dense_subset  # bench/dense_subset.py

        data, name = work / "ml-dense", args.name or "dense subset (1,700 movies, users >= 20)"
        print("peers: dense subset", json.dumps(dense_subset(args.source, data, 1700, 20)), flush=True)
    else:
        data, name = args.source, args.name or "ml-latest-small"

    t0, load_start = time.perf_counter(), R.load()
    harness = load_harness(args.harness, data)
    split_dir = work / "in"
    harness.split(split_dir)  # prints the run date, as served_table.sh reads it
    seqs, truth = input_sequences(split_dir)
    model, dataset, config, times = run_sasrec(seqs, work, args.epochs, args.seed, args.batch)
    t = time.perf_counter()
    recs = recommend(model, dataset, seqs)
    recs_dir = work / "recommendations"
    recs_dir.mkdir(exist_ok=True)
    recs.to_parquet(recs_dir / "part-0.parquet", index=False)
    predict_s = round(time.perf_counter() - t, 1)
    res = harness.score(split_dir, str(recs_dir))

    import recbole
    import torch

    doc = {
        **R.stamp("peers"), "load_start": load_start, "load": R.load(), "data": name, "movielens": str(data),
        "system": "RecBole SASRec (standard config: 2 layers, 2 heads, d 64, dropout 0.5/0.5, CE, lr 1e-3, "
                  f"batch {args.batch}, max_seq_length 50)",
        "recbole": recbole.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "epochs": args.epochs, "seed": args.seed,
        "split": {"users": int(truth.user_id.nunique()), "input_watches": len(seqs),
                  "catalogue": int(seqs.item_id.nunique()), "recbole_items": int(dataset.item_num - 1)},
        **times, "sec_per_epoch": round(sum(times["train_epoch_s"]) / max(len(times["train_epoch_s"]), 1), 1),
        "cpu_sec_per_epoch": round(sum(times["train_epoch_cpu_s"]) / max(len(times["train_epoch_cpu_s"]), 1), 1),
        "predict_s": predict_s, "total_s": round(time.perf_counter() - t0, 1),
        "harness": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()},
    }
    print(f"peers: {name}: SASRec {args.epochs} epochs (best {times['best_epoch']}), {doc['sec_per_epoch']} s/epoch "
          f"({doc['cpu_sec_per_epoch']} CPU s): HR@10 {res['HR@10']:.3f} HR@50 {res['HR@50']:.3f} "
          f"HR@100 {res['HR@100']:.3f} NDCG@10 {res['NDCG@10']:.3f} MRR@100 {res['MRR@100']:.3f} "
          f"({res['users']} users)")
    if not args.no_write:
        import fcntl

        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results.with_suffix(".lock"), "w") as lock:  # two data sets may run side by side
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(args.results.read_text()) if args.results.exists() else {}
            runs = old.get("runs", {})
            runs[name] = doc
            R.write_json("peers", {"script": "peers", "date": doc["date"], "commit": doc["commit"], "runs": runs},
                         args.results)
        args.results.with_suffix(".lock").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real Spark standalone cluster on this machine (scripts/cluster.sh: a master and two
1-core workers, separate JVMs and Python workers): the same jobs, submitted with
``spark-submit --master spark://...`` (scripts/run_on_cluster.sh), give what ``local[2]`` gives.

- executor loss (issue 7): SIGKILL one worker JVM and its executor while that executor
  runs a task of prepare, and again of score; Spark retries the lost tasks on the surviving
  worker, and prepare still writes the same manifest counts, vocabularies and training rows
  as an undisturbed prepare in ``local[2]`` on the same generated data, and score the same
  recommendation lists as an undisturbed ``local[2]`` run;
- the whole nightly pipeline with Horovod ranks on the executors (``horovod.spark.run``,
  2 ranks) writes what ``local[2]`` writes: the same prepared data, and a recommendations
  table (every user gets ``score.n`` rows) with the schema and the lists of the same models
  scored in ``local[2]``.

The cluster uses free ports and its own run directory, so it never meets a cluster
that someone started by hand; it is always stopped at the end.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest

from helpers import make_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "scripts" / "cluster.sh"
SUBMIT = ROOT / "scripts" / "run_on_cluster.sh"

pytestmark = [pytest.mark.spark, pytest.mark.slow]

# Small seeded platform: enough users for every split and for impressions, small enough for 2 busy cores.
DATA = ("generate.users=120", "generate.videos=200", "generate.channels=20", "generate.days=20",
        "generate.visits_per_user=6.0", "generate.partitions=2", "prepare.max_examples_per_user=10")
SPLITS = ("train", "val", "test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


class Cluster:
    """Handle on the cluster that scripts/cluster.sh started (its environment, URLs, pid files)."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.ui_port = _free_port()
        self.env = {**os.environ, "YTSPARK_CLUSTER_DIR": str(run_dir), "YTSPARK_MASTER_PORT": str(_free_port()),
                    "YTSPARK_MASTER_WEBUI_PORT": str(self.ui_port), "YTSPARK_WORKER_WEBUI_PORT": str(_free_port())}
        self.env.pop("SPARK_HOME", None)  # the scripts find pyspark's own
        self.master = f"spark://127.0.0.1:{self.env['YTSPARK_MASTER_PORT']}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        """Start the master and workers (scripts/cluster.sh start); stop them whatever happens, printing the output."""
        try:
            r = self.script("start")
            assert r.returncode == 0, f"cluster.sh start failed:\n{r.stdout}\n{r.stderr}"
            yield self
        finally:
            r = self.script("stop", timeout=120)
            print(r.stdout, r.stderr)

    def script(self, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
        return subprocess.run([str(CLUSTER), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def state(self) -> dict:
        return _get_json(f"http://127.0.0.1:{self.ui_port}/json/")

    def pid(self, name: str) -> int:
        return int((self.dir / f"{name}.pid").read_text())

    def submit(self, job: str, args: list[str], *, master: str | None = None, timeout: int = 1800,
               submit_args: str = "", wait: bool = True):
        """scripts/run_on_cluster.sh with YTSPARK_JOB=job (on this cluster, or on ``master``)."""
        env = {**self.env, "YTSPARK_JOB": job, "YTSPARK_MASTER": master or self.master,
               "YTSPARK_SUBMIT_ARGS": f"--conf spark.ui.showConsoleProgress=false {submit_args}"}
        proc = subprocess.Popen([str(SUBMIT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        if not wait:
            return proc
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{job} on {master or self.master} failed:\n{err[-6000:]}\n{out[-2000:]}"
        return out, err


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("cluster")).running() as c:
        yield c


@pytest.fixture(scope="module")
def raw(spark, tmp_path_factory) -> Path:
    """The seeded synthetic platform, written once (local[2] session of the suite)."""
    from ytspark.generate import generate

    out = tmp_path_factory.mktemp("raw")
    generate(spark, make_config(*DATA).generate, str(out))
    return out


def _input_args(raw: Path) -> list[str]:
    return ["--events", str(raw / "events"), "--users", str(raw / "users"), "--videos", str(raw / "videos"),
            "--format", "parquet", "--set", 'validate.as_of="2026-11-23"', *[a for d in DATA for a in ("--set", d)]]


@pytest.fixture(scope="module")
def prepared_local(spark, raw, tmp_path_factory) -> Path:
    """prepare in the suite's local[2] session: the undisturbed reference."""
    from ytspark.pipeline import run_prepare
    from ytspark.config import load_config

    out = tmp_path_factory.mktemp("local")
    args = _input_args(raw)
    overrides = [args[i + 1] for i in range(len(args)) if args[i] == "--set"]
    data = {k: args[args.index(f"--{k}") + 1] for k in ("events", "users", "videos", "format")}
    cfg = load_config("local", [*overrides, *[f"data.{k}={json.dumps(v)}" for k, v in data.items()],
                                f"data.output={json.dumps(str(out))}"])
    run_prepare(spark, cfg)
    return out / "prepared"


def _rows(path: Path) -> list[tuple]:
    """Every row of a Parquet directory as a tuple (lists as tuples), sorted: order-free content."""
    table = pq.read_table(str(path))
    cols = [table.column(n).to_pylist() for n in table.column_names]
    rows = [tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in zip(*cols)]
    return sorted(rows, key=repr)


def _assert_same_prepared(got: Path, want: Path) -> None:
    mg, mw = (json.loads((p / "manifest.json").read_text()) for p in (got, want))
    for key in ("tables", "events_by_type", "window_end", "vocab_sizes", "candidates", "ranking", "row_groups"):
        assert mg[key] == mw[key], key
    for name in sorted(p.name for p in (want / "vocab").glob("*.json")):
        assert json.loads((got / "vocab" / name).read_text()) == json.loads((want / "vocab" / name).read_text()), name
    assert mw["candidates"]["train"] > 0 and mw["ranking"]["train"] > 0
    for kind in ("candidates", "ranking"):
        for split in SPLITS:
            g, w = pq.read_schema(next((got / kind / split).glob("*.parquet"))), None
            w = pq.read_schema(next((want / kind / split).glob("*.parquet")))
            assert g.equals(w), f"{kind}/{split} schema"
            assert _rows(got / kind / split) == _rows(want / kind / split), f"{kind}/{split} rows"
    for table in ("events", "users", "videos", "rejects"):
        assert _rows(got / table) == _rows(want / table), table


def _our_apps(cluster: Cluster) -> list[str]:
    state = cluster.state()
    return [a["name"] for a in state["activeapps"] + state["completedapps"]]


def test_cluster_is_up_with_two_one_core_workers(cluster):
    state = cluster.state()
    alive = [w for w in state["workers"] if w["state"] == "ALIVE"]
    assert len(alive) == 2 and all(w["cores"] == 1 for w in alive)
    assert cluster.script("start").returncode == 0  # idempotent: nothing new started
    assert len([w for w in cluster.state()["workers"] if w["state"] == "ALIVE"]) == 2
    r = cluster.script("status")
    assert r.returncode == 0 and "2 worker(s) alive" in r.stdout


def _executor_of(worker_pid: int) -> tuple[int, str] | None:
    """(pid, executor id) of the executor JVM a worker launched, if it has one now."""
    kids = subprocess.run(["pgrep", "-P", str(worker_pid)], capture_output=True, text=True).stdout.split()
    for k in kids:
        try:
            argv = Path(f"/proc/{k}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--executor-id" in argv:
            return int(k), argv[argv.index(b"--executor-id") + 1].decode()
    return None


def _kill_worker_mid_job(cluster: Cluster, proc: subprocess.Popen, ui_port: int, min_jobs: int) -> dict:
    """SIGKILL worker2 and its executor once ``min_jobs`` jobs are done and that executor runs a task."""
    worker = cluster.pid("worker2")
    api = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    deadline = time.time() + 1500
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        ex = _executor_of(worker)
        try:
            app = _get_json(api)[0]["id"]
            done = sum(j["status"] == "SUCCEEDED" for j in _get_json(f"{api}/{app}/jobs"))
            active = {e["id"]: e["activeTasks"] for e in _get_json(f"{api}/{app}/executors")}
        except (OSError, IndexError, KeyError, ValueError):
            continue  # the driver's UI is not up yet, or between jobs
        if ex and done >= min_jobs and active.get(ex[1], 0) > 0:
            os.kill(ex[0], signal.SIGKILL)
            os.kill(worker, signal.SIGKILL)
            return {"jobs_done": done, "executor": ex[1], "active_tasks": active[ex[1]]}
    err = "\n".join(ln for ln in (proc.stdout.read() + proc.stderr.read()).splitlines()
                    if " INFO " not in ln)[-4000:] if proc.poll() is not None else "(still running at the deadline)"
    pytest.fail(f"the job ended (exit {proc.poll()}) before worker2's executor ran a task after {min_jobs} "
                f"jobs:\n{err}")


def _run_losing_a_worker(cluster: Cluster, job: str, args: list[str], min_jobs: int) -> None:
    """Submit ``job``, SIGKILL worker2 mid-job, and check the job still succeeded on the other worker."""
    ui_port = _free_port()
    proc = cluster.submit(job, args, wait=False, submit_args=f"--conf spark.ui.port={ui_port}")
    try:
        killed = _kill_worker_mid_job(cluster, proc, ui_port, min_jobs=min_jobs)
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"{job} did not survive the lost worker ({killed}):\n{err[-6000:]}"
    # it really ran on the cluster (spark-submit's --master won over the profile's local[2])
    assert f"ytspark-{job}" in _our_apps(cluster)
    # the lost executor's running task(s) failed and were retried elsewhere
    assert f"Lost executor {killed['executor']}" in err or "ExecutorLostFailure" in err, err[-3000:]
    assert sum(w["state"] == "ALIVE" for w in cluster.state()["workers"]) == 1


def test_prepare_survives_losing_a_worker(cluster, raw, prepared_local, tmp_path):
    """Issue 7, executor loss: the job completes through task retry; output equals the undisturbed run."""
    # prepare runs ~105 Spark jobs (measured from an event log): about 45 validate and fit
    # vocabularies, then the per-user row builders (Python, mapInArrow) start; kill in those
    _run_losing_a_worker(cluster, "prepare", [*_input_args(raw), "--output", str(tmp_path)], min_jobs=60)
    _assert_same_prepared(tmp_path / "prepared", prepared_local)
    # the cluster is whole again for whoever comes next
    r = cluster.script("start")
    assert r.returncode == 0, r.stderr


def test_score_survives_losing_a_worker(spark, cluster, prepared_local, tmp_path):
    """Issue 7, executor loss during the nightly scoring: the table equals an undisturbed local[2] run."""
    from helpers import write_random_candidate_model

    from ytspark.config import load_config
    from ytspark.score import run_score

    model = write_random_candidate_model(tmp_path / "models", str(prepared_local), seed=5)
    sets = ['score.run_date="2026-11-23"', "score.partitions=8", "score.batch_size=4"]
    _run_losing_a_worker(cluster, "score", ["--prepared", str(prepared_local), "--models", str(tmp_path / "models"),
                                            "--output", str(tmp_path / "cluster"),
                                            *[a for x in sets for a in ("--set", x)]], min_jobs=2)
    cfg = load_config("local", sets)
    run_score(spark, cfg, str(prepared_local), model, "2026-11-23", str(tmp_path / "local"))
    got, want = (tmp_path / d / "recommendations" / "run_date=2026-11-23" for d in ("cluster", "local"))
    assert (got / "_SUCCESS").exists() and (got / "_manifest.json").exists()

    def lists(path: Path) -> list[tuple]:
        t = pq.read_table(str(path), columns=["user_id", "rank", "video_id", "source", "model_version"])
        return sorted(zip(*[t.column(c).to_pylist() for c in t.column_names]))

    assert lists(got) == lists(want) and len(lists(want)) == 120 * cfg.score.n
    r = cluster.script("start")
    assert r.returncode == 0, r.stderr


def _horovod_tasks(event_dir: Path) -> dict[int, list[str]]:
    """Per ``horovod.spark.run`` Spark job (job group "Horovod Spark Run"): the executor id of each task."""
    stages: dict[int, int] = {}
    out: dict[int, list[str]] = {}
    for f in event_dir.iterdir():
        for line in f.open():
            e = json.loads(line)
            if e["Event"] == "SparkListenerJobStart" and \
                    e.get("Properties", {}).get("spark.job.description") == "Horovod Spark Run":
                stages.update({s: e["Job ID"] for s in e["Stage IDs"]})
                out[e["Job ID"]] = []
            elif e["Event"] == "SparkListenerTaskEnd" and e["Stage ID"] in stages:
                if e["Task End Reason"]["Reason"] == "Success":
                    out[stages[e["Stage ID"]]].append(e["Task Info"]["Executor ID"])
    return out


@pytest.mark.horovod
def test_pipeline_on_cluster_matches_local(spark, cluster, raw, prepared_local, tmp_path):
    """generate-or-read -> prepare -> 2 Horovod ranks on the executors (x2 networks) -> score -> evaluate,
    submitted to the cluster; then the same models score in local[2]: the same table."""
    from ytspark.config import load_config
    from ytspark.score import run_score

    small = ["--set", "candidate.epochs=1", "--set", "ranker.epochs=1", "--set", "candidate.hidden=[64]",
             "--set", "ranker.hidden=[64]", "--set", 'score.run_date="2026-11-23"',
             "--set", "evaluate.als_ranks=[8]", "--set", "evaluate.als_reg_params=[0.1]",
             "--set", "evaluate.als_alphas=[10.0]", "--set", "evaluate.als_max_iter=3"]
    out_c, out_l, events = tmp_path / "cluster", tmp_path / "local", tmp_path / "eventlog"
    events.mkdir()
    cluster.submit("nightly", [*_input_args(raw), *small, "--output", str(out_c)],
                   submit_args=f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{events}")
    assert "ytspark-pipeline" in _our_apps(cluster)
    # each network's 2 Horovod ranks ran as Spark tasks on the 2 executors, one on each
    ranks = _horovod_tasks(events)
    assert len(ranks) == 2, ranks
    assert all(sorted(r) == ["0", "1"] for r in ranks.values()), ranks
    # prepare on the cluster wrote what prepare in local[2] writes
    _assert_same_prepared(out_c / "prepared", prepared_local)
    assert (out_c / "evaluation" / "report.md").exists()
    # the cluster's models, scored in local[2] (the suite's session): the same table
    cfg = load_config("local", ['score.run_date="2026-11-23"'])
    models = str(out_c / "models")
    run_score(spark, cfg, str(out_c / "prepared"), models, "2026-11-23", str(out_l), ranker_dir=models)

    def table(out: Path):
        path = out / "recommendations" / "run_date=2026-11-23"
        assert (path / "_SUCCESS").exists()
        return pq.read_table(str(path))

    c, loc = table(out_c), table(out_l)
    assert c.schema.equals(loc.schema)
    n = cfg.score.n
    users = c.column("user_id").to_pylist()
    assert len(set(users)) == 120 and c.num_rows == loc.num_rows == 120 * n
    assert all(users.count(u) == n for u in set(users))

    def lists(t) -> list[tuple]:
        cols = ["user_id", "rank", "video_id", "source", "model_version", "ranker_version"]
        cols = [x for x in cols if x in t.column_names]
        return sorted(zip(*[t.column(x).to_pylist() for x in cols]))

    assert lists(c) == lists(loc)


# ------------------------------------------------------------------ no shared disk (issue 18)


def _unshare_problem() -> str | None:
    """Why workers cannot get a private /tmp here (None when they can): a throwaway namespace tries it."""
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs ytspark-probe /tmp"],
                           capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "no unshare command (util-linux)"
    return None if r.returncode == 0 else f"'unshare -m' + tmpfs mount refused: {r.stderr.strip()[:200]}"


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory):
    """A second cluster whose workers each run in their own mount namespace with a private tmpfs over /tmp and
    over their work dir (scripts/cluster.sh, YTSPARK_WORKER_PRIVATE_TMP=1): no scratch disk is shared between
    the workers' executors (and the Horovod ranks in them) and the driver."""
    problem = _unshare_problem()
    if problem:
        pytest.skip(f"no-shared-disk cluster not possible on this machine: {problem} (RELIABILITY.md)")
    c = Cluster(tmp_path_factory.mktemp("noshare-cluster"))
    c.env["YTSPARK_WORKER_PRIVATE_TMP"] = "1"
    with c.running():
        yield c


@pytest.fixture
def shared_dir():
    """A folder every node sees: outside /tmp (which each worker has privately), removed afterwards."""
    import shutil
    import uuid

    d = ROOT / "out" / f"test-noshare-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.horovod
def test_no_shared_disk_horovod_training_on_the_executors_and_score(spark, private_cluster, prepared_local,
                                                                      shared_dir, tmp_path):
    """Issue 18: with --output a file:// URL on a folder all nodes see, and every worker's /tmp and work dir
    private, 2 Horovod ranks on the executors publish the model where the driver's score finds it. A write to an
    executor-local path (a URL taken for a relative path, a temporary file handed between processes) is lost
    with the worker's namespace and fails the run."""
    import shutil
    import tempfile

    # the workers really have their own /tmp: a file the driver's side puts there is not in theirs
    with tempfile.NamedTemporaryFile(prefix="ytspark-driver-only-") as mark:
        for i in (1, 2):
            root = Path(f"/proc/{private_cluster.pid(f'worker{i}')}/root")
            assert not (root / mark.name.lstrip("/")).exists() and Path(mark.name).exists()
            assert (root / str(shared_dir).lstrip("/")).is_dir()
    shutil.copytree(prepared_local, shared_dir / "prepared")
    out = f"file://{shared_dir}/out"
    events = tmp_path / "eventlog"  # written by the driver (on this side), read here
    events.mkdir()
    common = ["--prepared", f"file://{shared_dir}/prepared", "--output", out, "--set", 'score.run_date="2026-11-23"']
    # Both workers are host 127.0.0.1, so Spark would read the other executor's shuffle files straight from
    # "its" disk (spark.shuffle.readHostLocalDisk), as executors of one real host may; here that disk is
    # private, as between real hosts, so shuffle blocks go over the network as they do between hosts.
    separate_hosts = "--conf spark.shuffle.readHostLocalDisk=false"
    private_cluster.submit("train_candidates", [*common, "--set", "candidate.epochs=1", "--set", "candidate.hidden=[64]"],
                           submit_args=f"{separate_hosts} --conf spark.eventLog.enabled=true "
                                       f"--conf spark.eventLog.dir=file://{events}")
    ranks = _horovod_tasks(events)
    assert len(ranks) == 1 and sorted(next(iter(ranks.values()))) == ["0", "1"], ranks  # one rank per executor
    cand = shared_dir / "out" / "models" / "candidate"
    version = (cand / "LATEST").read_text().strip()
    assert (cand / version / "_SUCCESS").exists() and (cand / version / "weights.pt").exists()
    assert (cand / "_work" / "checkpoint.pt").exists() and (cand / "_work" / "metrics.csv").exists()
    assert not list(cand.glob(".tmp-*")) and not (shared_dir / "file:").exists()

    private_cluster.submit("score", [*common, "--set", "score.partitions=4"], submit_args=separate_hosts)
    table = shared_dir / "out" / "recommendations" / "run_date=2026-11-23"
    assert (table / "_SUCCESS").exists()
    t = pq.read_table(str(table), columns=["user_id", "model_version"])
    n = make_config().score.n
    assert len(set(t.column("user_id").to_pylist())) == 120 and t.num_rows == 120 * n
    assert set(t.column("model_version").to_pylist()) == {version}
    assert "ytspark-train-candidates" in _our_apps(private_cluster) and "ytspark-score" in _our_apps(private_cluster)

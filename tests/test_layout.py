"""The package layout: which module may import which stage, and a README per package naming its modules.

Stages, in the order data flows: prepare -> train -> score -> evaluate. A stage module may import its
own stage, the shared libraries (models/, schema, config, storage, ...) and the stage next to it; an
import across more than one stage boundary (score -> prepare, evaluate -> train) couples stages that
meet only through storage. ``ytspark/pipeline.py`` wires the stages and ``ytspark/cli.py`` parses for
it: they may import any stage. A shared library imports no stage. Read from the source (ast), so
function-level imports count too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ytspark"
STAGES = ("prepare", "train", "score", "evaluate")
ORCHESTRATION = {"pipeline.py", "cli.py"}
# Top-level modules that belong to a stage (the rest of ytspark/ is shared): the MovieLens adapter builds
# prepare's RawTables.
STAGE_OF_MODULE = {"movielens.py": "prepare"}


def _imports(path: Path) -> set[str]:
    """The ytspark modules ``path`` imports (``from ytspark import x`` counts as ``ytspark.x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ytspark":
                out |= {f"ytspark.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return {m for m in out if m.startswith("ytspark.")}


def _stage(rel: Path) -> str | None:
    """The stage of a file under ytspark/ (None: shared)."""
    if len(rel.parts) > 1:
        return rel.parts[0] if rel.parts[0] in STAGES else None
    return STAGE_OF_MODULE.get(rel.name)


def _breaks_rule(rel: Path, module: str) -> bool:
    """Whether the file ``rel`` (under ytspark/) importing ``module`` breaks the rule above."""
    if rel.as_posix() in ORCHESTRATION:
        return False
    mine = _stage(rel)
    target = module.split(".")[1]
    if target not in STAGES or target == mine:
        return False
    return mine is None or abs(STAGES.index(target) - STAGES.index(mine)) > 1


def _crossings() -> set[tuple[str, str]]:
    """(file, imported module) of every import that breaks the rule above."""
    bad = set()
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        bad |= {(rel.as_posix(), m) for m in _imports(path) if _breaks_rule(rel, m)}
    return bad


def test_no_module_imports_across_more_than_one_stage_boundary():
    bad = _crossings()
    assert not bad, (f"imports across more than one stage boundary (or from a shared library into a stage): "
                     f"{sorted(bad)}; put the shared code in a shared module, or call it from ytspark/pipeline.py")


def test_the_checker_sees_a_crossing(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from ytspark.prepare.job import run_prepare\n    from ytspark import score\n")
    assert _imports(f) == {"ytspark.prepare.job", "ytspark.score"}
    assert _breaks_rule(Path("score/job.py"), "ytspark.prepare.job")  # two boundaries
    assert _breaks_rule(Path("evaluate/systems.py"), "ytspark.train.data")
    assert _breaks_rule(Path("features/asof.py"), "ytspark.prepare.batch_candidates")  # shared -> stage
    assert _breaks_rule(Path("rows.py"), "ytspark.train.data")
    assert not _breaks_rule(Path("score/job.py"), "ytspark.train.data")  # the neighbour
    assert not _breaks_rule(Path("score/job.py"), "ytspark.features.grouping")  # a shared library
    assert not _breaks_rule(Path("movielens.py"), "ytspark.prepare.job")  # its own stage
    assert not _breaks_rule(Path("pipeline.py"), "ytspark.evaluate.job")  # orchestration


def test_jobs_only_call_the_command_line():
    """jobs/*.py are thin: they import ytspark.cli (which calls ytspark.pipeline) and nothing else of ytspark."""
    jobs = sorted((ROOT / "jobs").glob("*.py"))
    assert jobs
    for job in jobs:
        assert _imports(job) <= {"ytspark.cli"}, job.name


PACKAGES = sorted(p.parent for p in PKG.rglob("__init__.py"))


@pytest.mark.parametrize("package", PACKAGES, ids=[p.relative_to(ROOT).as_posix() for p in PACKAGES])
def test_every_package_has_a_readme_naming_each_module(package):
    """A table row (``| `name.py` | what |``, ``| `sub/` | ...``) for each module and subpackage."""
    readme = package / "README.md"
    assert readme.exists(), f"{package.relative_to(ROOT)} has no README.md"
    text = readme.read_text()
    entries = [p for p in sorted(package.iterdir()) if p.suffix == ".py" and p.name != "__init__.py"
               or p.is_dir() and (p / "__init__.py").exists()]
    # a module may become a package of the same name (generate.py -> generate/): either row names it
    rows = {line.split("`")[1].rstrip("/").removesuffix(".py") for line in text.splitlines() if line.startswith("| `")}
    missing = [p.name for p in entries if p.name.removesuffix(".py") not in rows]
    assert not missing, f"{readme.relative_to(ROOT)} does not list {missing}"

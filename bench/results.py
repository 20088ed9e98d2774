"""Benchmark results: one JSON file per script under ``bench/results/``, and the BENCHMARKS.md sections made of them.

    .venv/bin/python bench/results.py render [NAME ...]   # re-render sections from bench/results/NAME.json
    .venv/bin/python bench/results.py render --print NAME # print the markdown, leave BENCHMARKS.md alone
    .venv/bin/python bench/results.py list                # the result files, their script, date and commit

A bench script measures, then calls :func:`write_json` (its figures plus
:func:`stamp`: date, command, machine, commit) and, with ``--write-benchmarks``,
:func:`write_section` with its own ``render(doc) -> str``. No script appends to
BENCHMARKS.md: a section is replaced in place by its heading (the first line of
the rendered markdown without its trailing ``(YYYY-MM-DD)``), all other sections
stay as they are. ``render`` here does the same from the saved JSON, without
measuring: the script is ``doc["script"]`` (default: NAME), and a
``### `` section missing from the file goes to the end of the ``## `` section
named by the script's ``AREA``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
_DATE = re.compile(r"\s*\(\d{4}-\d{2}-\d{2}\)\s*$")
_HEADING = re.compile(r"^(#+) ", re.M)


# ------------------------------------------------------------------ what a run records

def commit() -> str | None:
    """``git rev-parse --short HEAD`` of this checkout, with ``+dirty`` when tracked files differ; None without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    """Cores, RAM, CPU model, architecture, Python: what a figure's machine line needs."""
    import psutil

    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "gpu": False,
            "cpu": model, "arch": platform.machine(), "python": platform.python_version()}


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is often shared: a load far above the cores inflates times)."""
    return [round(x, 2) for x in os.getloadavg()]


def stamp(script: str) -> dict:
    """Date, command (``.venv/bin/python bench/<script>.py`` + this process's arguments), machine and commit."""
    return {"script": script, "date": dt.date.today().isoformat(),
            "command": " ".join([".venv/bin/python", f"bench/{script}.py", *sys.argv[1:]]),
            "machine": machine(), "commit": commit()}


def machine_line(doc: dict, extra: str = "") -> str:
    """``Machine: ...; commit ...`` from a doc with :func:`stamp`'s fields."""
    m = doc["machine"]
    return (f"Machine: {m['cores']} cores ({m.get('cpu', m['arch'])}), {m['ram_gib']:.0f} GiB RAM, no GPU, "
            f"Python {m['python']}{extra}; commit {doc.get('commit') or 'unknown'}.  ")


def write_json(name: str, doc: dict, path: str | Path | None = None) -> Path:
    """Write ``doc`` to ``bench/results/<name>.json`` (or ``path``); returns the path."""
    p = Path(path) if path else RESULTS / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_clean(doc), indent=2, default=float) + "\n")
    print(f"wrote {p}")
    return p


def _clean(x):
    """JSON-ready: numpy scalars to Python, dict keys to str."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x.item() if type(x).__module__ == "numpy" and getattr(x, "ndim", None) == 0 else x


def add_args(ap, name: str, section: str) -> None:
    """The options every measuring script shares: ``--results``, ``--no-write``, ``--write-benchmarks``."""
    ap.add_argument("--results", help=f"results JSON (default bench/results/{name}.json)")
    ap.add_argument("--no-write", action="store_true", help="print only: no results JSON, no BENCHMARKS.md")
    ap.add_argument("--write-benchmarks", action="store_true", help=f"replace {section} of BENCHMARKS.md with this run")


def finish(name: str, doc: dict, render, args, area: str | None = None) -> str:
    """Print the run's markdown; unless ``--no-write`` write its JSON, and with ``--write-benchmarks`` its section."""
    text = render(doc)
    print(text)
    if not args.no_write:
        write_json(name, doc, args.results)
        if args.write_benchmarks:
            write_section(text, area)
    return text


def md_table(head: list[str], rows: list[list], align: str = "") -> list[str]:
    """Markdown table lines; ``align`` has one letter per column, ``l`` or ``r`` (default: the first left)."""
    align = align or "l" + "r" * (len(head) - 1)
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
            *["| " + " | ".join(map(str, r)) + " |" for r in rows]]


# ------------------------------------------------------------------ BENCHMARKS.md sections

def find_heading(text: str, head: str) -> int:
    """Offset of the line that is ``head``, alone or followed by one parenthesis such as a date; -1 if none.

    ``## Nightly scoring`` finds "## Nightly scoring (2026-12-02)", not "## Nightly scoring X" nor
    "## Nightly scoring --set x (2026-12-02)".
    """
    for m in re.finditer(r"^" + re.escape(head) + r"( \([^()\n]*\))?[ \t]*$", text, re.M):
        return m.start()
    return -1


def section_end(text: str, start: int) -> int:
    """Where the section whose heading line starts at ``start`` ends: the next heading of its level or higher
    (outside fenced code blocks)."""
    level = len(text[start:].split(" ", 1)[0])
    pos, fenced = text.find("\n", start) + 1, False
    while 0 < pos < len(text):
        line = text[pos:text.find("\n", pos) if "\n" in text[pos:] else len(text)]
        fenced ^= line.startswith("```")
        m = _HEADING.match(line)
        if m and not fenced and len(m.group(1)) <= level:
            return pos
        pos += len(line) + 1
    return len(text)


def replace_section(heading: str, markdown: str, under: str | None = None, path: Path = BENCHMARKS) -> None:
    """Replace the section ``heading`` (e.g. ``## Nightly scoring``; any later copies are removed) by ``markdown``.

    The file is re-read right before the edit (other sections may change meanwhile). A section not found goes at
    the end of the section ``under`` when given and present, else at the end of the file.
    """
    cur = path.read_text()
    at = None
    while (start := find_heading(cur, heading)) >= 0:
        cur = cur[:start] + cur[section_end(cur, start):]
        at = start if at is None else min(at, start)
    text = markdown.strip("\n") + "\n"
    if at is None and under and (u := find_heading(cur, under)) >= 0:
        at = section_end(cur, u)
    if at is None or at >= len(cur):
        cur = cur.rstrip("\n") + "\n\n" + text
    else:
        cur = cur[:at].rstrip("\n") + ("\n\n" if at else "") + text + "\n" + cur[at:]
    path.write_text(cur.rstrip("\n") + "\n")


def write_section(markdown: str, under: str | None = None, path: Path = BENCHMARKS) -> str:
    """Replace the section that ``markdown`` renders (its heading: the first line less a trailing date)."""
    heading = _DATE.sub("", markdown.lstrip("\n").split("\n", 1)[0])
    replace_section(heading, markdown, under, path)
    print(f"updated {path.name}: {heading}")
    return heading


# ------------------------------------------------------------------ render from the saved JSON

def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def render(name: str, write: bool = True) -> str:
    """The markdown of ``bench/results/<name>.json`` by its script's ``render(doc)``; written into BENCHMARKS.md."""
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    mod = _script(doc.get("script", name))
    if not hasattr(mod, "render"):
        raise SystemExit(f"bench/{doc.get('script', name)}.py has no render(doc)")
    text = mod.render(doc)
    if write:
        write_section(text, getattr(mod, "AREA", None))
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="re-render BENCHMARKS.md sections from bench/results/NAME.json")
    r.add_argument("names", nargs="*", help="result names (default: every file whose script has render())")
    r.add_argument("--print", dest="only_print", action="store_true", help="print the markdown, write nothing")
    sub.add_parser("list", help="the result files with their script, date and commit")
    args = ap.parse_args(argv)
    files = sorted(p.stem for p in RESULTS.glob("*.json"))
    if args.cmd == "list":
        for n in files:
            d = json.loads((RESULTS / f"{n}.json").read_text())
            print(f"{n:<20} bench/{d.get('script', n)}.py  {d.get('date', '?')}  commit {d.get('commit') or '?'}")
        return 0
    names = args.names or [n for n in files
                           if hasattr(_script(json.loads((RESULTS / f"{n}.json").read_text()).get("script", n)),
                                      "render")]
    for n in names:
        text = render(n, write=not args.only_print)
        if args.only_print:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

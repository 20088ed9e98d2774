"""The evaluation report: ``report.md``, PNG plots, ``metrics.csv`` and ``metrics.json``, written atomically.

``write_report(out_dir, metrics_by_system, curves, hr_at_k, extra_tables)``
builds everything in ``<out_dir>.__tmp-<uuid>`` and publishes it with
:func:`ytspark.storage.staged_dir` (a rename, or on S3 a copy with
``_SUCCESS`` last), so a reader never sees half a report and a failed run
keeps the old one. ``out_dir`` is a local path or any storage URL; plots are
rendered to bytes and written through storage.
"""
from __future__ import annotations

import csv
import io
import math
import textwrap
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ytspark import storage  # noqa: E402

Rows = list[dict]


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.6g}"  # metrics to 4 decimals; 10.0 -> 10, 51.46 -> 51.46
    return str(v)


def markdown_table(rows: Rows, columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts); columns default to the union of keys in first-seen order."""
    if not rows:
        return "(none)\n"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _metric_rows(metrics_by_system: dict[str, dict]) -> Rows:
    return [{"system": name, **m} for name, m in metrics_by_system.items()]


def plot_hr_at_k(hr_at_k: dict[str, list[tuple[int, float]]], path: str) -> None:
    """HR@K against K, one line per system."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in hr_at_k.items():
        ks, hr = zip(*pts) if pts else ((), ())
        ax.plot(ks, hr, label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("HR@K")
    ax.set_title("Hit rate of the next watch within the top K")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def plot_curves(curves: dict[str, Rows], path: str, x: str = "epoch") -> list[str]:
    """Per-epoch metrics of each network: one panel per numeric key, one line per network. Returns the keys."""
    keys = list(dict.fromkeys(k for rows in curves.values() for r in rows for k, v in r.items()
                              if k != x and isinstance(v, (int, float)) and not isinstance(v, bool)))
    if not keys:
        return []
    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.2 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, rows in curves.items():
            pts = [(r.get(x, i + 1), r[key]) for i, r in enumerate(rows) if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=name)
        ax.set_title(key)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    _save_figure(fig, path)
    return keys


def plot_calibration(panels: dict[str, dict], path: str) -> None:
    """One reliability panel per entry: {"rows": [(bin, mean predicted, mean observed, n)], "x": .., "y": ..}
    (axis labels; "log": True for log-log axes), with the diagonal of perfect calibration."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4), squeeze=False)
    for ax, (title, p) in zip(axes.flat, panels.items()):
        rows = p["rows"]
        pred = [r[1] for r in rows]
        obs = [r[2] for r in rows]
        ax.plot(pred, obs, marker="o", label="per decile of the prediction")
        hi = max(pred + obs + [1e-12])
        lo = min(v for v in pred + obs + [hi] if v > 0) if p.get("log") else 0
        ax.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1, label="perfect calibration")
        if p.get("log"):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(textwrap.fill(title, 48), fontsize=9)
        ax.set_xlabel(p.get("x", "mean predicted"))
        ax.set_ylabel(p.get("y", "mean observed"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: str) -> None:
    """Render ``fig`` as PNG bytes and write them to ``path`` (any storage URL); closes the figure."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    storage.save_bytes(path, buf.getvalue())


def write_report(out_dir: str, metrics_by_system: dict[str, dict], curves: dict[str, Rows] | None = None,
                 hr_at_k: dict[str, list[tuple[int, float]]] | None = None,
                 extra_tables: dict[str, Rows] | None = None, title: str = "ytspark evaluation",
                 notes: Sequence[str] = (), calibration: dict[str, dict] | None = None) -> str:
    """Write the report folder and return the path of ``report.md``.

    Args:
        out_dir: local folder or storage URL, replaced whole.
        metrics_by_system: system name -> flat metrics (the main table).
        curves: network name -> per-epoch list of metric dicts (``epoch`` key optional).
        hr_at_k: system name -> [(K, HR@K)] points.
        extra_tables: section title -> rows (dicts), rendered as Markdown tables.
        notes: lines printed under the title (protocol, data, timings).
        calibration: panel title -> {"rows": [(bin, predicted, observed, n, *more)], "x", "y"} (a PNG
            of reliability curves, and the rows as tables; optional "columns": a name for each element
            of a row, and "note": a line printed above the table).
    """
    out_dir = storage.to_url(out_dir).rstrip("/")
    with storage.staged_dir(out_dir) as tmp:
        rows = _metric_rows(metrics_by_system)
        md = [f"# {title}", ""] + [f"{n}  " for n in notes] + ["", "## Metrics", "", markdown_table(rows)]
        if hr_at_k:
            plot_hr_at_k(hr_at_k, f"{tmp}/hr_at_k.png")
            md += ["## HR@K against K", "", "![HR@K](hr_at_k.png)", ""]
        if curves:
            keys = plot_curves(curves, f"{tmp}/curves.png")
            if keys:
                md += ["## Training and validation curves", "", "![curves](curves.png)", ""]
        if calibration:
            plot_calibration(calibration, f"{tmp}/calibration.png")
            md += ["## Calibration", "", "![calibration](calibration.png)", ""]
            for name, p in calibration.items():
                cols = p.get("columns") or ["bin", p.get("x", "predicted"), p.get("y", "observed"), "n"]
                md += [f"### {name}", ""] + ([p["note"], ""] if p.get("note") else []) + [markdown_table(
                    [{c: (int(v) if i in (0, 3) else v) for i, (c, v) in enumerate(zip(cols, r))} for r in p["rows"]])]
        for name, table in (extra_tables or {}).items():
            md += [f"## {name}", "", markdown_table(table)]
        storage.save_text(f"{tmp}/report.md", "\n".join(md))
        storage.save_json(f"{tmp}/metrics.json", {"metrics": metrics_by_system, "extra_tables": extra_tables or {},
                                                  "calibration": calibration or {}})
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        storage.save_text(f"{tmp}/metrics.csv", buf.getvalue())
    return f"{out_dir}/report.md"

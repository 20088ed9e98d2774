"""Small builders shared by tests: configs and hand-written raw logs."""
from __future__ import annotations

import json
from pathlib import Path


def make_config(*overrides: str):
    """The ``local`` profile with ``--set``-style overrides; ``as_of`` fixed so 'future' is stable."""
    from ytspark.config import load_config

    return load_config("local", ['validate.as_of="2026-11-23"', *overrides])


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14, a fixed origin for hand-built logs


def watch(user: str, day: float, video: str, watch_s: float = 100.0, video_s: float = 100.0) -> dict:
    return {"event_ts": T0 + day * DAY, "user_id": user, "event_type": "watch", "video_id": video,
            "watch_seconds": watch_s, "video_seconds": video_s}


def search(user: str, day: float, query: str) -> dict:
    return {"event_ts": T0 + day * DAY, "user_id": user, "event_type": "search", "query": query}


def impression(user: str, day: float, video: str, clicked: int, watch_s: float | None = None) -> dict:
    r = {"event_ts": T0 + day * DAY, "user_id": user, "event_type": "impression", "video_id": video,
         "clicked": clicked}
    if watch_s is not None:
        r["watch_seconds"] = watch_s
    return r

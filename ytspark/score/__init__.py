"""The nightly scoring stage: serving inputs, FAISS retrieval, optional ranking, fallback lists, atomic top-N tables."""
from ytspark.score.features import as_of_ts, serving_columns, serving_events
from ytspark.score.index import build_index, measure_recall, search
from ytspark.score.job import run_score

__all__ = ["as_of_ts", "build_index", "measure_recall", "run_score", "search", "serving_columns", "serving_events"]

"""The ranking network as a training :class:`~ytspark.train.loop.Task` (same loop and launcher as candidates).

Reads ``<prepared>/ranking/{train,val}`` (one row per impression), trains
weighted logistic regression (clicked rows weighted by watch time, others by
1) and validates with AUC, the paper's weighted per-user loss and the
calibration of exp(logit) against observed watch time. The monitored metric is
``1 - weighted per-user loss`` (higher is better) on logged impressions, and
on candidate negatives (whose validation rows are each target's full
retrieved slate) ``slate_ndcg@10``, the next-watch NDCG@10 of reranking.
The export stores the serving blend chosen on the validation rows
(:mod:`ytspark.models.blend`) in MODEL.json ``blend``. With a candidate model
directory and ``ranker.init_from_candidate`` the shared video table starts
from the candidate model's video embeddings.

Rows: with ``rank_rows`` (what :func:`ytspark.train.rank_rows.build_rank_rows`
wrote: the candidate model's logit as ``retrieval_score``, as serving feeds
it, or candidate negatives for logs without impressions) the task reads that
directory and its quantiles. Without it (no candidate model) it reads the
prepared impressions, whose ``retrieval_score`` is a placeholder 0, and so
trains without the source group (``use_source=False``): serving's logits would
be a feature the network never saw.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from ytspark import schema as S
from ytspark.config import Config
from ytspark.models import score_calibration
from ytspark.models.blend import check_objective, choose_weight, paper_blend, slate_metrics
from ytspark.models.rank_features import rank_batch_from_numpy
from ytspark.models.rank_metrics import auc, weighted_per_user_loss
from ytspark.models.rank_metrics import calibration as calibration_table
from ytspark.models.ranker import RankerConfig, RankerModel, weighted_logistic_loss
from ytspark.rows import read_split
from ytspark.train.data import read_json

FIELDS = [S.USER_ID, S.RANK_VIDEO, S.CAND_WATCH_HIST, S.RANK_USER_LANGUAGE, S.RANK_VIDEO_LANGUAGE, S.RANK_CHANNEL,
          S.RANK_CATEGORY, S.RANK_SOURCE, *S.RANK_CONTINUOUS, S.RANK_CLICKED, S.RANK_WATCH_SECONDS, S.RANK_WEIGHT]
EVAL_CHUNK = 8192


class WeightedLogistic(nn.Module):
    def __init__(self, model: RankerModel):
        super().__init__()
        self.model = model

    def forward(self, batch) -> torch.Tensor:
        return weighted_logistic_loss(self.model(batch), batch.clicked, batch.weight)


@torch.no_grad()
def predict_logit(model: RankerModel, cols: dict) -> np.ndarray:
    """The ranker's logit for every row of ``cols`` (log of the expected watch time)."""
    n = len(cols[S.RANK_VIDEO])
    out = [model(rank_batch_from_numpy({k: v[lo:lo + EVAL_CHUNK] for k, v in cols.items()}, serving=True)).numpy()
           for lo in range(0, n, EVAL_CHUNK)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def evaluate_ranker(model: RankerModel, cols: dict, logit: np.ndarray | None = None, cal: dict | None = None) -> dict:
    """AUC, weighted per-user loss, weighted logistic loss and calibration summary on ranking rows
    (``logit``: the model's :func:`predict_logit` of ``cols`` when already computed; ``cal``: the ranker's
    calibration map. With it, ``calibration_served`` is the served score's table per decile of the logit,
    cross-fitted: each half of the users scored by the map fitted on the other half with ``cal``'s settings,
    :func:`ytspark.models.score_calibration.cross_fit` and ``decile_table``)."""
    logit = predict_logit(model, cols) if logit is None else logit
    pred = np.exp(logit)
    clicked = np.asarray(cols[S.RANK_CLICKED])
    watch = np.asarray(cols[S.RANK_WATCH_SECONDS], np.float64)
    wpul = weighted_per_user_loss(cols[S.USER_ID], logit, clicked, watch)
    logits = torch.from_numpy(np.asarray(logit, np.float32))
    loss = float(weighted_logistic_loss(logits, torch.from_numpy(clicked.astype(np.float32)),
                                        torch.from_numpy(np.asarray(cols[S.RANK_WEIGHT], np.float32))))
    return {"auc": auc(logit, clicked), "weighted_per_user_loss": wpul["weighted_per_user_loss"],
            "one_minus_wpul": 1.0 - wpul["weighted_per_user_loss"], "loss": loss,
            "mean_pred_watch": float(pred.mean()), "mean_watch": float(watch.mean()),
            "calibration": [list(map(float, c)) for c in calibration_table(pred, watch)],
            **(_served(pred, watch, cols[S.USER_ID], cal) if cal else {})}


def _served(pred: np.ndarray, watch: np.ndarray, user_ids, cal: dict) -> dict:
    oof = score_calibration.cross_fit(pred, watch, user_ids, cal)
    return {"calibration_served": [list(map(float, c)) for c in score_calibration.decile_table(pred, oof, watch)],
            "calibration_map": {k: cal.get(k) for k in ("method", "choice", "cv_deviance", "fitted_on")}}


def calibration_panels(res: dict, split: str = "val") -> dict[str, dict]:
    """The report's calibration panels (:func:`ytspark.evaluate.report.write_report`) of an
    :func:`evaluate_ranker` result on ``split``'s rows: exp(logit) and, with a map, the served score
    (cross-fitted), per decile of the logit (the same rows in both)."""
    where = {"val": "validation", S.CALIBRATION: "held-out users' impressions"}.get(split, split)
    panels = {f"ranking network: watch time per impression ({where}), exp(logit)": {
        "rows": res["calibration"], "x": "mean exp(logit), s", "y": "mean observed watch time, s", "log": True}}
    if "calibration_served" in res:
        panels[f"ranking network: watch time per impression ({where}), served score, cross-fitted"] = {
            "rows": res["calibration_served"], "x": "mean served score, s", "y": "mean observed watch time, s",
            "log": True, "columns": list(score_calibration.TABLE_COLUMNS),
            "note": "Per decile of the logit. Cross-fitted, not in-sample: these users are split in two "
                    "(ytspark.models.score_calibration.user_fold), and each half's served score comes from the map "
                    "fitted (as at export) on the other half (cross_fit); the written score's map is fitted on all "
                    f"of them: {_map_summary(res.get('calibration_map') or {})}."}
    return panels


def _map_summary(m: dict) -> str:
    dev = m.get("cv_deviance") or {}
    chose = (f", chosen over {', '.join(k for k in dev if k != m.get('method'))} by cross-fitted Poisson deviance "
             f"({', '.join(f'{k} {v:.4g}' for k, v in dev.items())})") if dev else ""
    return f"{m.get('method', 'unknown')}{chose}"


class RankerTask:
    """Ranking on a prepared directory (impressions), optionally seeded by a candidate model."""

    kind = "ranker"
    fields = FIELDS
    monitor = "one_minus_wpul"

    def __init__(self, cfg: Config, prepared: str, candidate_model: str | None = None, rank_rows: str | None = None):
        self.cfg, self.prepared, self.candidate_model = cfg, prepared.rstrip("/"), candidate_model
        self.manifest = read_json(f"{self.prepared}/manifest.json")
        self.rank_rows = rank_rows.rstrip("/") if rank_rows else None
        if self.rank_rows:
            self.rows_dir = self.rank_rows
            self.rows_manifest = read_json(f"{self.rank_rows}/manifest.json")
            self.quantiles = read_json(f"{self.rank_rows}/quantiles.json")["ranking"]
            self.counts = self.rows_manifest["rows"]
        else:
            self.rows_dir, self.rows_manifest = f"{self.prepared}/ranking", None
            self.quantiles = read_json(f"{self.prepared}/quantiles.json")["ranking"]
            self.counts = self.manifest["ranking"]
        self.rows_mode = (self.rows_manifest or {}).get("mode", "impressions")
        if self.rows_mode == "candidate_negatives":
            self.monitor = "slate_ndcg@10"
        r = cfg.ranker
        check_objective(r.objective, r.blend_weight, r.blend_weights)
        self.config = RankerConfig.from_vocab_sizes(self.manifest["vocab_sizes"], embed_dim=r.embed_dim,
                                                    hidden=tuple(r.hidden), use_affinity=r.use_affinity,
                                                    dropout=r.dropout, use_source=self.rank_rows is not None)

    def train_path(self) -> str:
        return f"{self.rows_dir}/train"

    def val_path(self) -> str:
        return f"{self.rows_dir}/val"

    def train_rows(self) -> int:
        n = int(self.counts["train"])
        if n == 0:
            raise ValueError(f"{self.train_path()} has no rows: the input has no impressions. The ranking network "
                             "needs impression events (event_type=impression with clicked/watch_seconds), or a "
                             "candidate model whose retrievals stand in for them (run train-candidates first)")
        return n

    def fingerprint(self) -> dict:
        return {"prepared": self.prepared, "window_end": self.manifest.get("window_end"),
                "model": self.config.to_dict(), "rows": self.counts,
                "rank_rows": self.rows_manifest["key"] if self.rows_manifest else None}

    def build_model(self) -> RankerModel:
        model = RankerModel(self.config, self.quantiles)
        if self.candidate_model and self.cfg.ranker.init_from_candidate:
            from ytspark.models.export import read_model_dir

            md = read_model_dir(self.candidate_model, "candidate")
            model.init_video_embeddings(md.array("video_embeddings"))
        return model

    def loss_module(self, model: RankerModel, rank: int) -> nn.Module:
        return WeightedLogistic(model)

    def to_batch(self, cols: dict):
        return rank_batch_from_numpy(cols)

    def evaluate(self, model: RankerModel, val_cols: dict) -> dict:
        logit = predict_logit(model, val_cols)
        m = evaluate_ranker(model, val_cols, logit)
        m.pop("calibration")
        if self.rows_mode == "candidate_negatives":  # full slates: the next-watch metric of reranking
            m.update({f"slate_{k}": v for k, v in slate_metrics(
                val_cols[S.USER_ID], logit, val_cols[S.RANK_CLICKED], 10).items() if k != "n"})
        return m

    def blend(self, model: RankerModel) -> dict:
        """The blend weight of ``model`` chosen on the validation rows (:func:`ytspark.models.blend.choose_weight`),
        whatever ``ranker.objective``: the "blend" objective's weight when ``ranker.blend_weight`` is -1, and the
        trade-off table of every weight tried."""
        r = self.cfg.ranker
        if not self.rank_rows or not int(self.counts.get("val", 0)):
            return paper_blend()
        cols = read_split(self.val_path(), FIELDS)
        return choose_weight(self.rows_mode, r.blend_weights, cols[S.USER_ID], predict_logit(model, cols),
                             np.asarray(cols["retrieval_score"], np.float64), cols[S.RANK_CLICKED],
                             cols[S.RANK_WATCH_SECONDS])

    def calibration_split(self) -> str | None:
        """The rows the served score's map is fitted on: ``calibration`` (training impressions of held-out users,
        ``ranker.calibration_share``) when the rows have them, else ``val``; None when neither has rows."""
        for split in (S.CALIBRATION, "val"):
            if int(self.counts.get(split, 0)):
                return split
        return None

    def calibration(self, model: RankerModel) -> dict | None:
        """The serving score's map to watch seconds per impression (:mod:`ytspark.models.score_calibration`),
        fitted on :meth:`calibration_split`'s rows (named in the map's ``fitted_on``); None without rows."""
        split = self.calibration_split()
        if split is None:
            return None
        cols = read_split(f"{self.rows_dir}/{split}", FIELDS)
        cal = score_calibration.fit(np.exp(predict_logit(model, cols)),
                                    np.asarray(cols[S.RANK_WATCH_SECONDS], np.float64), cols[S.USER_ID])
        return {**cal, "fitted_on": split}

    def export(self, model: RankerModel) -> tuple[dict, dict, dict]:
        files = {f"vocab/{name}.json": read_json(f"{self.prepared}/vocab/{name}.json") for name in S.VOCAB_NAMES}
        files["quantiles.json"] = self.quantiles
        meta = {"blend": self.blend(model), "calibration": self.calibration(model), "model_config": self.config.to_dict(),
                "train_config": {"ranker": asdict(self.cfg.ranker), "train": asdict(self.cfg.train)},
                "prepared": self.prepared, "vocab_sizes": self.manifest["vocab_sizes"], "monitor": self.monitor,
                "candidate_model": self.candidate_model, "window_end": self.manifest.get("window_end"),
                "rank_rows": self.rows_dir, "rank_rows_mode": self.rows_mode}
        return {}, files, meta


def load_split(prepared: str, split: str, rank_rows: str | None = None, extra: tuple[str, ...] = ()) -> dict:
    """Ranking rows of ``split`` (the training fields and ``extra`` columns): from ``rank_rows`` (a ranker's
    training rows) when given, else prepared."""
    root = rank_rows.rstrip("/") if rank_rows else f"{prepared.rstrip('/')}/ranking"
    return read_split(f"{root}/{split}", [*FIELDS, *extra])

"""The evaluation stage; see README.md in this folder."""
from ytspark.evaluate.job import Evaluation, add_system, run_baselines, write_evaluation
from ytspark.evaluate.metrics import hr_curve, ranking_metrics
from ytspark.evaluate.protocol import EvalSet, fit_watches, load_eval_sets, load_targets
from ytspark.evaluate.retrieval import topk_excluding

__all__ = ["EvalSet", "Evaluation", "add_system", "fit_watches", "hr_curve", "load_eval_sets", "load_targets",
           "ranking_metrics", "run_baselines", "topk_excluding", "write_evaluation"]

"""PyTorch models: the candidate-generation and ranking networks, their losses, input tensors and metrics."""
from ytspark.models.candidate import CandidateConfig, CandidateModel
from ytspark.models.features import CandidateBatch, QuantileNormalizer, batch_from_numpy
from ytspark.models.losses import UnigramSampler, full_softmax_loss, sampled_softmax_loss
from ytspark.models.metrics import hit_rate_ndcg
from ytspark.models.rank_features import RankBatch, rank_batch_from_numpy
from ytspark.models.rank_metrics import auc, calibration, weighted_per_user_loss
from ytspark.models.ranker import RankerConfig, RankerModel, weighted_logistic_loss

__all__ = [
    "CandidateBatch", "CandidateConfig", "CandidateModel", "QuantileNormalizer", "RankBatch", "RankerConfig",
    "RankerModel", "UnigramSampler", "auc", "batch_from_numpy", "calibration", "full_softmax_loss",
    "hit_rate_ndcg", "rank_batch_from_numpy", "sampled_softmax_loss", "weighted_logistic_loss",
    "weighted_per_user_loss",
]

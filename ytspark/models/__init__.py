"""PyTorch models: the candidate-generation network, its losses, input tensors and metrics."""
from ytspark.models.candidate import CandidateConfig, CandidateModel
from ytspark.models.features import CandidateBatch, QuantileNormalizer, batch_from_numpy
from ytspark.models.losses import UnigramSampler, full_softmax_loss, sampled_softmax_loss
from ytspark.models.metrics import hit_rate_ndcg

__all__ = [
    "CandidateBatch", "CandidateConfig", "CandidateModel", "QuantileNormalizer", "UnigramSampler",
    "batch_from_numpy", "full_softmax_loss", "hit_rate_ndcg", "sampled_softmax_loss",
]

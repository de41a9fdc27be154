"""Torch models and the one training routine every method shares."""

from fedrisk.config.model import ModelConfig, TrainConfig
from fedrisk.models.nets import make_model
from fedrisk.models.training import TrainHistory, epoch_batches, predict_proba, run_epochs, train

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "TrainHistory",
    "epoch_batches",
    "make_model",
    "predict_proba",
    "run_epochs",
    "train",
]

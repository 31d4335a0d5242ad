"""The child network whose learning rate is controlled: data, models, training loop. No Ray."""

from lrservice.child.data import ChildData, DatasetUnavailable, load_dataset
from lrservice.child.features import FEATURE_NAMES, observation_features
from lrservice.child.models import build_model
from lrservice.child.trainer import ChildTrainer, Evaluation, TrainResult, cached_task_data, load_task_data

__all__ = [
    "ChildData", "ChildTrainer", "DatasetUnavailable", "Evaluation", "FEATURE_NAMES", "TrainResult",
    "build_model", "cached_task_data", "load_dataset", "load_task_data", "observation_features",
]

"""Lightning glue around the VATT library (the library never imports this)."""

from vatt.schedules import warmup_cosine

from .callbacks import (
    EmbeddingViews,
    FinalValidation,
    HParamsSummary,
    LastCheckpoint,
    LoggingInterval,
    ModelSummary,
    NonFiniteError,
    NonFiniteGuard,
    Preemption,
    RandomState,
    RunConfig,
)
from .pretrain import VATTPretrainModule
from .strategies import fsdp_strategy

__all__ = ["VATTPretrainModule", "warmup_cosine", "fsdp_strategy", "LastCheckpoint", "LoggingInterval", "ModelSummary", "RandomState", "RunConfig",
           "Preemption", "FinalValidation", "NonFiniteGuard", "NonFiniteError", "HParamsSummary", "EmbeddingViews"]

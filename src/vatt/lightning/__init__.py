"""Lightning glue around the VATT library (the library never imports this)."""

from .callbacks import (
    EmbeddingViews,
    HParamsSummary,
    LastCheckpoint,
    NonFiniteError,
    NonFiniteGuard,
    Preemption,
    RandomState,
    RunConfig,
)
from .pretrain import VATTPretrainModule, warmup_cosine
from .strategies import fsdp_strategy

__all__ = ["VATTPretrainModule", "warmup_cosine", "fsdp_strategy", "LastCheckpoint", "RandomState", "RunConfig",
           "Preemption", "NonFiniteGuard", "NonFiniteError", "HParamsSummary", "EmbeddingViews"]

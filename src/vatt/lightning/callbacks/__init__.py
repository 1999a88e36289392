"""The callbacks of the training runs, one module per job (configs name them as ``vatt.lightning.callbacks.X``).

- ``checkpointing``: what a run keeps to continue (``LastCheckpoint``, ``RunConfig``,
  ``RandomState``) and the validation every run ends with (``FinalValidation``);
- ``resilience``: stop signals and non-finite steps (``Preemption``,
  ``NonFiniteGuard``, ``NonFiniteError``);
- ``reporting``: what a run says about itself (``ModelSummary``, ``LoggingInterval``,
  ``HParamsSummary``);
- ``views``: what pretraining has learned, shown during the run (``DemoProbe``,
  ``EmbeddingViews``).
"""

from .checkpointing import FinalValidation, LastCheckpoint, RandomState, RunConfig
from .reporting import HParamsSummary, LoggingInterval, ModelSummary
from .resilience import NonFiniteError, NonFiniteGuard, Preemption
from .views import DemoProbe, EmbeddingViews

__all__ = ["LastCheckpoint", "RunConfig", "RandomState", "FinalValidation", "Preemption", "NonFiniteGuard",
           "NonFiniteError", "ModelSummary", "LoggingInterval", "HParamsSummary", "DemoProbe", "EmbeddingViews"]

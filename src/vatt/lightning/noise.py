"""Third-party messages that every run would print and no user can act on, each silenced by its exact text.

Not a blanket filter: every entry names the one message, where it comes from and
why it is noise here. Anything else Lightning, litdata or PyTorch say still shows.
"""

from __future__ import annotations

import logging
import warnings


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def silence_known_noise() -> None:
    """Install the filters (idempotent)."""
    # Lightning 2.6's CombinedLoader builds a LeafSpec, which PyTorch 2.14 deprecates (Lightning's code, not ours)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # logger=mlflow: Lightning warns once per metric that MLflow drops '@' from its name (val/t2v_R@10 -> val/t2v_R10);
    # vatt.run_setup.configure_loggers says it once
    warnings.filterwarnings("ignore", message=r"MLFlow only allows '_', '/', '\.' and ' ' special characters")
    # Lightning's caution for any IterableDataset with a length; litdata's datasets split their data over workers
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # litdata, for each validation dataset of a multi-device run: validation keeps every clip on purpose (drop_last off;
    # retrieval scores them all) and runs no collective per step, so uneven batch counts over the ranks are safe
    streaming = logging.getLogger("litdata.streaming.dataset")
    if not any(isinstance(f, _DropMessage) for f in streaming.filters):
        streaming.addFilter(_DropMessage("You're operating within a distributed environment and have disabled the "
                                         "`drop_last` option"))
    # Lightning's advertisement for its cloud logger, printed by every Trainer
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessage) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessage("💡 Tip: For seamless cloud logging"))

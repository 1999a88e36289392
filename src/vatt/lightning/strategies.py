"""Hardware strategies that need Python objects, built for Hydra (``trainer=fsdp``)."""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy

from vatt.models.layers import Block


def fsdp_strategy(
    sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False, **kwargs
) -> FSDPStrategy:
    """FSDP that wraps every Transformer ``Block`` (and checkpoints its activations if asked)."""
    return FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        **kwargs,
    )

"""VATT model library: plain ``nn.Module``s, no Lightning or Hydra."""

from .layers import (
    Attention,
    AudioSegmentEmbed,
    Block,
    DropToken,
    RelativePositionBias,
    SpatioTemporalPositions,
    TemporalPositions,
    Transformer,
    VideoPatchEmbed,
    keep_count,
    resize_table,
    t5_relative_position_bucket,
)
from .heads import ClassifierHead
from .vatt import (
    PRESETS,
    SIZES,
    VATT,
    FACHead,
    ModalityEncoder,
    T5TextEncoder,
    VATTConfig,
    WordEmbed,
    build_vatt,
    count_parameters,
    create_model,
    list_models,
)
from .word_vectors import read_word_vectors, word_vector_table

__all__ = [name for name in dir() if not name.startswith("_")]

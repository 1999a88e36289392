"""VATT: Transformers for multimodal self-supervised learning from raw video, audio and text.

``vatt.create_model`` and ``vatt.losses`` are plain PyTorch; the Lightning and
Hydra glue lives in its own modules and is never imported from here.
"""

from .models import count_parameters, create_model, list_models

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "count_parameters", "__version__"]

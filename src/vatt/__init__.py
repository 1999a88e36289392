"""VATT: Transformers for multimodal self-supervised learning from raw video, audio and text.

``vatt.create_model``, ``vatt.load_pretrained`` and ``vatt.losses`` are plain
PyTorch; the Lightning and Hydra glue lives in its own modules and is never
imported from here.
"""

from .models import count_parameters, create_model, list_models
from .pretrained import load_classifier, load_pretrained, save_classifier, save_pretrained
from .zoo import list_pretrained

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "count_parameters", "load_pretrained", "save_pretrained", "load_classifier",
           "save_classifier", "list_pretrained", "__version__"]

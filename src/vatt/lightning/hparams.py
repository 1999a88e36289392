"""The training config's ``model`` group (the LightningModules' arguments) as ``create_model`` arguments.

A run's config names a preset and groups the rest: ``input`` (the clip geometry:
frames, fps, image size, sample rate, words) and ``backbone`` (further
``VATTConfig`` fields). This is the one translation from that schema to the
model's; the model library itself knows nothing of it.
"""

from __future__ import annotations

from typing import Any

from vatt.models.vatt import VATTConfig

# create_model arguments that load files rather than set the architecture
FILE_KEYS = ("word_vectors", "vocab", "freeze_word_embeddings")


def input_geometry(input: dict | None) -> dict[str, int]:
    """``num_frames``, ``image_size``, ``audio_samples``, ``max_words`` of a clip geometry (``{}`` for None)."""
    if not input:
        return {}
    return {"num_frames": input["num_frames"], "image_size": input["image_size"],
            "audio_samples": int(round(input["num_frames"] / input["fps"] * input["sample_rate"])),
            "max_words": input.get("max_words", 16)}


def backbone_kwargs(
    name: str,
    droptoken: float = 0.5,
    droptoken_per_sample: bool = True,
    vocab_size: int = 2**16,
    input: dict | None = None,
    backbone: dict | None = None,
    **_: Any,
) -> dict[str, Any]:
    """``create_model`` arguments (``name`` included) from a pretraining module's hyper-parameters."""
    kwargs: dict[str, Any] = {"droptoken": droptoken, "droptoken_per_sample": droptoken_per_sample,
                              "vocab_size": vocab_size, **input_geometry(input), **(backbone or {})}
    return {"name": name, **kwargs}


def backbone_config(hparams: dict[str, Any]) -> VATTConfig:
    """The ``VATTConfig`` that a pretraining module with these hyper-parameters builds (file-loading keys left out)."""
    kwargs = {k: v for k, v in backbone_kwargs(**hparams).items() if k not in FILE_KEYS}
    return VATTConfig.from_preset(kwargs.pop("name"), **kwargs)


def compile_options(setting: bool | str | None) -> dict[str, Any] | None:
    """``model.compile``: false (None here), true (``torch.compile``'s default backend, inductor) or a backend name.

    ``aot_eager`` traces and compiles the graphs without generating kernels: a quick
    check that a model compiles, e.g. on a CPU-only machine.
    """
    if not setting:
        return None
    return {} if setting is True else {"backend": str(setting)}

"""``make convert ... check=outputs.npz``: the converted model run on inputs the authors' model saw, against its outputs.

The reference is one ``.npz`` file (``numpy.savez``) in TensorFlow's layouts, with the
values the authors' model was given (no rescaling happens here):

- inputs: ``input_video`` ``[B, T, H, W, 3]`` float; ``input_audio`` ``[B, S]`` or
  ``[B, S, 1]`` float waveform; ``input_text`` ``[B, L]`` int word ids. A pretrained
  model needs all three, a classifier the one of its modality;
- outputs, each ``[B, D]``, any of: ``video``, ``audio``, ``text`` (the towers' pooled
  [AGG] features), ``video_va``, ``video_vt``, ``audio_va``, ``text_vt`` (the FAC
  heads' common-space embeddings), ``logits`` (a classifier's scores before softmax).

A reference whose outputs are float64 is compared in float64: the converted model runs
in double precision on its inputs (also float64), so float32 rounding on either side
(up to ~2e-5 on outputs of order 2, and CPU-dependent) does not hide how close the two
computations are. ``tests/fixtures/tf_vatt/*/outputs.npz`` (float32) and
``outputs_float64.npz`` are such files, written by ``scripts/make_tf_fixtures.py``; for a
released checkpoint, run the authors' model in inference mode and save its outputs
under these names (``docs/vatt.md`` §8 says which entry of its output dictionary each
name is).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

INPUTS = ("input_video", "input_audio", "input_text")
PRETRAINED_OUTPUTS = ("video", "audio", "text", "video_va", "video_vt", "audio_va", "text_vt")
OUTPUTS = (*PRETRAINED_OUTPUTS, "logits")


class CheckError(ValueError):
    """A reference file that cannot be compared: it names the file, the key and what was expected."""


def in_float64(expected: dict[str, np.ndarray]) -> bool:
    """Whether a reference is compared in float64 (any of its outputs is float64)."""
    return any(v.dtype == np.float64 for v in expected.values())


def read_reference(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """The inputs (in this project's layouts) and the expected outputs of a reference ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise CheckError(f"check={path}: no such file; give the .npz of the authors' model's inputs and outputs")
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except Exception as e:  # noqa: BLE001 - numpy raises several kinds for a file that is not an .npz
        raise CheckError(f"check={path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    unknown = sorted(set(arrays) - set(INPUTS) - set(OUTPUTS))
    if unknown:
        raise CheckError(f"check={path}: unknown keys {unknown}; inputs are {list(INPUTS)}, outputs any of "
                         f"{list(OUTPUTS)}")
    expected = {k: v for k, v in arrays.items() if k in OUTPUTS}
    if not expected:
        raise CheckError(f"check={path}: no outputs to compare; it needs one of {list(OUTPUTS)}")
    inputs: dict[str, torch.Tensor] = {}
    real = np.float64 if in_float64(expected) else np.float32
    if "input_video" in arrays:
        v = arrays["input_video"]
        if v.ndim != 5 or v.shape[-1] != 3:
            raise CheckError(f"check={path}: input_video has shape {list(v.shape)}; expected [B, T, H, W, 3]")
        inputs["video"] = torch.from_numpy(np.ascontiguousarray(v, dtype=real)).permute(0, 4, 1, 2, 3)
    if "input_audio" in arrays:
        a = arrays["input_audio"]
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise CheckError(f"check={path}: input_audio has shape {list(arrays['input_audio'].shape)}; "
                             "expected [B, S] or [B, S, 1]")
        inputs["audio"] = torch.from_numpy(np.ascontiguousarray(a, dtype=real))
    if "input_text" in arrays:
        t = arrays["input_text"]
        if not np.issubdtype(t.dtype, np.integer):
            raise CheckError(f"check={path}: input_text is {t.dtype}; expected integer word ids")
        inputs["text"] = torch.from_numpy(t.astype(np.int64))
    return inputs, expected


def max_differences(model: torch.nn.Module, path: str | Path) -> dict[str, float]:
    """Largest absolute difference of each output of ``path`` from ``model``'s (a VATT or a tower classifier)."""
    from vatt.models.vatt import TowerClassifier

    inputs, expected = read_reference(path)
    classifier = isinstance(model, TowerClassifier)
    wanted = ("logits",) if classifier else PRETRAINED_OUTPUTS
    other = sorted(set(expected) - set(wanted))
    if other:
        kind = f"a {model.modality} classifier" if classifier else "a pretrained VATT"
        raise CheckError(f"check={path}: {other} are not outputs of {kind} (it gives {list(wanted)})")
    needed = [model.modality] if classifier else ["video", "audio", "text"]
    missing = [f"input_{m}" for m in needed if m not in inputs]
    if missing:
        raise CheckError(f"check={path}: no {missing}; the model needs them to give its outputs")
    wide = in_float64(expected)
    was_training = model.training
    if wide:  # a float64 reference: the same weights, computed in double precision (a copy; the model stays)
        model = copy.deepcopy(model).double()
    model.eval()
    try:
        with torch.no_grad():
            out = {"logits": model(inputs[model.modality])} if classifier else model(**inputs)
    finally:
        model.train(was_training)
    errors = {}
    for name, ref in expected.items():
        got = out[name].double() if wide else out[name].float()
        if tuple(got.shape) != ref.shape:
            raise CheckError(f"check={path}: {name} has shape {list(ref.shape)}, the converted model gives "
                             f"{list(got.shape)}")
        errors[name] = float((got - torch.from_numpy(ref.astype(np.float64 if wide else np.float32))).abs().max())
    return errors


def report(errors: dict[str, float], tol: float) -> tuple[bool, str]:
    """Whether every output is within ``tol``, and one line per output to print."""
    lines = [f"  {name:<9} max |difference| {err:.2e}" + ("" if err <= tol else f"  > {tol:g}")
             for name, err in errors.items()]
    ok = all(err <= tol for err in errors.values())
    head = f"check: every output within {tol:g}" if ok else \
        f"check: {sum(err > tol for err in errors.values())} of {len(errors)} outputs differ by more than {tol:g}"
    return ok, "\n".join([head, *lines])

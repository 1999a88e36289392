"""Export a checkpoint's model for downstream use or serving: ``python -m vatt.export --ckpt PATH --out PATH``.

- ``--format safetensors`` (default; ``make export ckpt=... out=FILE.safetensors``): the backbone,
  the FAC heads, the model's build arguments and the caption vocabulary in one file;
  ``vatt.load_pretrained(out)`` rebuilds the same model from it.
- ``--format onnx`` / ``--format torch`` (``make export ckpt=... out=DIR format=onnx``): the video,
  audio and text towers as ONNX files or ``torch.export`` programs with ``towers.json`` beside
  them (``vatt.serving``), then checked against the eager model.

``--ckpt`` takes what ``load_pretrained`` reads: a ``.ckpt``, an export, a model folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vatt.models import count_parameters
from vatt.pretrained import load_pretrained, save_pretrained, weights_sha256

FORMATS = ("safetensors", "onnx", "torch")


def export_serving(ckpt: str, out: str, fmt: str) -> Path:
    """The towers of ``ckpt`` in ``fmt`` under the folder ``out``, checked against the eager model."""
    from vatt import serving

    model = load_pretrained(ckpt, droptoken=0.0).eval()
    written = serving.export_towers(model, out, fmt, source=str(Path(ckpt).resolve()), sha256=weights_sha256(ckpt))
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    try:
        worst = serving.check_towers(model, out)
    except ImportError:
        print("not checked: ONNX Runtime is not installed (.venv/bin/pip install -e '.[onnx]')")
    else:
        print("largest difference from the eager model on a batch of 3 random inputs: "
              + ", ".join(f"{name} {d:.1e}" for name, d in worst.items()))
    return Path(out)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a pretraining checkpoint, e.g. logs/train/runs/<run>/checkpoints/last.ckpt")
    parser.add_argument("--out", required=True, help="the .safetensors file to write (format onnx / torch: a folder)")
    parser.add_argument("--format", default="safetensors", choices=FORMATS,
                        help="safetensors: one weights file; onnx / torch: the towers for serving (vatt.serving)")
    args = parser.parse_args(argv)
    if args.format != "safetensors":
        return export_serving(args.ckpt, args.out, args.format)
    model = load_pretrained(args.ckpt)
    if model.vocab is None:
        print("note: the checkpoint's caption vocabulary file was not found; the export has no vocabulary "
              "(text inputs then need the word ids of the original tokenizer)")
    out = save_pretrained(model, args.out, vocab=model.vocab, source=str(Path(args.ckpt).resolve()))
    print(f"wrote {out}: {count_parameters(model) / 1e6:.1f}M parameters, "
          f"{'with' if model.vocab else 'without'} a {model.config.vocab_size}-word vocabulary")
    return out


if __name__ == "__main__":
    main()

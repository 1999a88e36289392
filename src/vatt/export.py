"""Export a pretraining checkpoint for downstream use: ``python -m vatt.export --ckpt PATH --out PATH.safetensors``.

Writes the backbone, the FAC heads, the model's build arguments and the caption
vocabulary into one ``.safetensors`` file (``make export ckpt=... out=...``);
``vatt.load_pretrained(out)`` rebuilds the same model from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vatt.models import count_parameters
from vatt.pretrained import load_pretrained, save_pretrained


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a pretraining checkpoint, e.g. logs/train/runs/<run>/checkpoints/last.ckpt")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    args = parser.parse_args(argv)
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

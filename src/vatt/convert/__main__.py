"""``python -m vatt.convert --ckpt PREFIX --out FILE_OR_FOLDER [--vocab howto100m_en.txt] [--list]`` (``make convert``)."""

from __future__ import annotations

import argparse
import sys

from vatt.errors import reported


def main(argv: list[str] | None = None) -> None:
    from . import convert, describe

    parser = argparse.ArgumentParser(prog="python -m vatt.convert", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="TF checkpoint: prefix (.../ckpt-500000), its .index or its folder")
    parser.add_argument("--out", help="a .safetensors file or a folder (config.json + model.safetensors + card)")
    parser.add_argument("--vocab", help="the word list of the text tower (misc/howto100m_en.txt of misc_data.tgz)")
    parser.add_argument("--classes", help="a classifier's class names, one per line")
    parser.add_argument("--list", action="store_true", help="print every tensor and where it goes, convert nothing")
    args = parser.parse_args(argv)
    with reported("vatt.convert"):
        if args.list:
            print(describe(args.ckpt))
            return
        if not args.out:
            parser.error("--out is required (or --list)")
        result = convert(args.ckpt, args.out, vocab=args.vocab, classes=args.classes)
    what = f"{result['modality']} classifier ({result['num_classes']} classes)" if result["kind"] == "classifier" \
        else "pretrained VATT"
    print(f"{what}: {result['tensors']} tensors -> {result['out']} ({result['ignored']} optimizer/bookkeeping entries "
          f"left out; {result['seconds']} s, peak memory {result['peak_rss_mb']} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()

"""``python -m vatt.convert --ckpt PREFIX --out FILE_OR_FOLDER [--vocab howto100m_en.txt] [--list] [--check FILE.npz]``.

(``make convert``.) ``--check`` runs the converted model on the inputs of a reference
file and compares its outputs with the authors' model's (``vatt.convert.check``); it
exits with status 1 when one differs by more than ``--tol``.
"""

from __future__ import annotations

import argparse
import sys

from vatt.errors import reported


def main(argv: list[str] | None = None) -> None:
    from . import convert, describe
    from .check import read_reference

    parser = argparse.ArgumentParser(prog="python -m vatt.convert", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="TF checkpoint: prefix (.../ckpt-500000), its .index or its folder")
    parser.add_argument("--out", help="a .safetensors file or a folder (config.json + model.safetensors + card)")
    parser.add_argument("--vocab", help="the word list of the text tower (misc/howto100m_en.txt of misc_data.tgz)")
    parser.add_argument("--classes", help="a classifier's class names, one per line")
    parser.add_argument("--list", action="store_true", help="print every tensor and where it goes, convert nothing")
    parser.add_argument("--check", help="an .npz of inputs and the authors' model's outputs for them "
                        "(see vatt.convert.check): compare the converted model with it")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="largest absolute difference --check accepts (default 1e-4)")
    args = parser.parse_args(argv)
    with reported("vatt.convert"):
        if args.list:
            print(describe(args.ckpt))
            return
        if not args.out:
            parser.error("--out is required (or --list)")
        if not args.tol > 0:
            parser.error(f"--tol {args.tol}: give a positive largest difference (1e-4 by default)")
        if args.check:  # a reference that cannot be compared fails before a conversion of minutes
            read_reference(args.check)
        result = convert(args.ckpt, args.out, vocab=args.vocab, classes=args.classes)
    what = f"{result['modality']} classifier ({result['num_classes']} classes)" if result["kind"] == "classifier" \
        else "pretrained VATT"
    print(f"{what}: {result['tensors']} tensors -> {result['out']} ({result['ignored']} optimizer/bookkeeping entries "
          f"left out; {result['seconds']} s, peak memory {result['peak_rss_mb']} MB)", file=sys.stderr)
    if args.check:
        with reported("vatt.convert"):
            ok, text = check_converted(result, args.check, args.tol)
        print(text, file=sys.stderr)
        if not ok:
            sys.exit(1)


def check_converted(result: dict, reference: str, tol: float) -> tuple[bool, str]:
    """``--check``: the written model (read back as any user would load it) against the reference outputs."""
    import vatt
    from .check import max_differences, report

    load = vatt.load_classifier if result["kind"] == "classifier" else vatt.load_pretrained
    return report(max_differences(load(result["out"]), reference), tol)


if __name__ == "__main__":
    main()

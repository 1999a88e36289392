"""Regenerate ``tests/fixtures/tf_bundle``: a tiny checkpoint written by real TensorFlow.

Run it with a Python that has TensorFlow (never a dependency of this project)::

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python scripts/make_tf_bundle_fixture.py [--out tests/fixtures/tf_bundle]

It saves, with ``tf.train.Checkpoint(...).save``, a few variables under names
shaped like the authors' Keras model (``model/layer_with_weights-0/_base_layer/
vid_backbone/...``) plus an Adam optimizer that has taken one step, so that
``.OPTIMIZER_SLOT/optimizer/m`` and ``/v`` slot variables are present. Then it
reads every tensor back through TensorFlow's own reader and stores what TF
says into ``expected.npz``: ``keys`` and ``dtypes`` (TF dtype names), and per
key index ``i`` a ``shape_i`` and a ``value_i`` (bfloat16 as float32, strings
as their raw bytes in a uint8 array). The tests compare the project's pure
NumPy reader against that file without needing TensorFlow.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-identical CPU kernels

import tensorflow as tf  # noqa: E402  (after the log-level settings above)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf_bundle"


def build() -> tf.train.Checkpoint:
    """Variables named like the authors' model, and an optimizer with slots."""
    backbone = tf.Module()
    backbone.patch_embed = tf.Module()
    # 3-d float32 kernel and 1-d bias: the optimizer trains these two
    backbone.patch_embed.kernel = tf.Variable(
        np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1.5, name="kernel"
    )
    backbone.patch_embed.bias = tf.Variable(np.array([0.5, -0.25, 1e-3, 3e4], np.float32))
    backbone.temperature = tf.Variable(np.float32(0.07))  # 0-d float32
    backbone.half = tf.Variable(np.array([1.0, -2.5, 65504.0], np.float16))
    # bfloat16 keeps 8 bits of mantissa: 3.14159 is rounded by TF on the way in
    backbone.bf16 = tf.Variable(
        tf.constant([[1.0, -2.0, 0.5], [3.14159, 1e-20, -1e30]], dtype=tf.bfloat16)
    )
    backbone.int_table = tf.Variable(np.array([[-7, 0], [2**31 - 1, -(2**31)]], np.int32))
    backbone.flags = tf.Variable(np.array([True, False, True]))
    backbone.codes = tf.Variable(np.array([0, 7, 255], np.uint8))

    base = tf.Module()
    base.vid_backbone = backbone
    layer = tf.Module()
    layer._base_layer = base
    model = tf.Module()
    # Keras names the model's layers "layer_with_weights-N" in the object graph
    setattr(model, "layer_with_weights-0", layer)

    opt = tf.compat.v1.train.AdamOptimizer(learning_rate=0.1)
    trained = [backbone.patch_embed.kernel, backbone.patch_embed.bias]
    grads = [tf.ones_like(trained[0]) * 0.5, tf.constant([1.0, -1.0, 0.0, 2.0])]
    opt.apply_gradients(zip(grads, trained))
    return tf.train.Checkpoint(model=model, optimizer=opt)


def expected(prefix: str) -> dict[str, np.ndarray]:
    """What TensorFlow's own reader says the checkpoint holds."""
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    keys = sorted(dtypes)
    out: dict[str, np.ndarray] = {
        "keys": np.array(keys),
        "dtypes": np.array([dtypes[k].name for k in keys]),
    }
    for i, key in enumerate(keys):
        value = reader.get_tensor(key)
        if dtypes[key] == tf.string:
            value = np.frombuffer(value if isinstance(value, bytes) else value.item(), np.uint8)
        elif dtypes[key] == tf.bfloat16:
            value = np.asarray(value).astype(np.float32)  # exact: bfloat16 is a float32 prefix
        out[f"shape_{i}"] = np.array(shapes[key], np.int64)
        out[f"value_{i}"] = np.asarray(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to (re)write")
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("ckpt-*"), out / "checkpoint", out / "expected.npz"]:
        old.unlink(missing_ok=True)
    prefix = build().save(str(out / "ckpt"))
    np.savez(out / "expected.npz", **expected(prefix))
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {prefix} (+ checkpoint, expected.npz): {total} bytes in {out}")


if __name__ == "__main__":
    main()

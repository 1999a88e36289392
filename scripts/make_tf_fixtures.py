"""Write the TensorFlow fixtures that tests/test_convert.py converts: small VATT checkpoints as the authors save them.

Needs TensorFlow with tf-keras (``pip install -e .[tf]``); nothing else in the project does::

    python scripts/make_tf_fixtures.py              # -> tests/fixtures/tf_vatt/{ms,ma,classifier}/

The model below restates the authors' TensorFlow 2 code (google-research ``vatt/``,
written for TF 2.7 / Keras 2) at small sizes: the same Keras layer types, the same
Python attribute names (a ``tf.train.Checkpoint`` names every variable by the path of
attributes that leads to it, e.g. ``model/layer_with_weights-0/_base_layer/vid_backbone/
_base/tx/layers/0/mha/q/kernel``) and the same forward computation: pre-norm
Transformers with LayerNorm eps 1e-6 and exact GELU, the position LayerNorm on the
summed tables, [AGG] after the positions; the T5 text encoder with RMS norms before
attention and at the end, a LayerNorm with offset before the feed-forward layer, no
biases, no score scaling and one relative-position bias in layer 0 shared by all
layers; the FAC heads with BatchNorm. Every variable gets random values (norm offsets,
BatchNorm statistics and biases included: zeros would hide a mistake), an Adam step
with zero gradients adds the optimizer's slots, and ``CheckpointManager`` writes
``ckpt-7`` as in the authors' runs. ``outputs.npz`` holds the inputs and what the model
returns for them in inference mode; ``outputs_float64.npz`` the same computed in float64
(the same weights), the reference free of float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Keras 2 objects: the authors' checkpoint layout

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

EPS = 1e-6


def gelu(x):
    return tf.nn.gelu(x, approximate=False)


def split_heads(x, heads):
    b = tf.shape(x)[0]
    return tf.transpose(tf.reshape(x, (b, -1, heads, x.shape[-1] // heads)), (0, 2, 1, 3))


def join_heads(x):
    b = tf.shape(x)[0]
    x = tf.transpose(x, (0, 2, 1, 3))
    return tf.reshape(x, (b, -1, x.shape[2] * x.shape[3]))


# --------------------------------------------------------------------------- the shared Transformer (ViT, WaT, UT)


class MultiHeadAttention(keras.layers.Layer):
    def __init__(self, d_model, heads, use_bias=True, scale=True, buckets=None, max_distance=None, **kw):
        super().__init__(**kw)
        self.heads, self.scale, self.buckets, self.max_distance = heads, scale, buckets, max_distance
        self.q = keras.layers.Dense(d_model, use_bias=use_bias, name="q")
        self.k = keras.layers.Dense(d_model, use_bias=use_bias, name="k")
        self.v = keras.layers.Dense(d_model, use_bias=use_bias, name="v")
        self.o = keras.layers.Dense(d_model, use_bias=use_bias, name="o")
        self.dropout = keras.layers.Dropout(0.1)
        if buckets is not None:
            self.relative_attention_bias = keras.layers.Embedding(buckets, heads, name="relative_attention_bias")

    def bucket(self, rel):
        # T5's bucketing, bidirectional: half of the buckets for keys after the query, log-spaced beyond 8 / 16
        half = self.buckets // 2
        n = -rel
        ret = tf.cast(n < 0, tf.int32) * half
        n = tf.abs(n)
        exact = half // 2
        large = exact + tf.cast(tf.math.log(tf.cast(n, tf.float32) / exact) / np.log(self.max_distance / exact)
                                * (half - exact), tf.int32)
        return ret + tf.where(n < exact, n, tf.minimum(large, half - 1))

    def position_bias(self, length):
        pos = tf.range(length)
        values = self.relative_attention_bias(self.bucket(pos[None, :] - pos[:, None]))  # q, k, heads
        return tf.transpose(values, (2, 0, 1))[None]

    def call(self, x, bias, training=False):
        q, k, v = (split_heads(f(x), self.heads) for f in (self.q, self.k, self.v))
        scores = tf.einsum("bnqd,bnkd->bnqk", q, k)
        if self.scale:
            scores = scores / tf.math.sqrt(tf.cast(q.shape[-1], scores.dtype))
        weights = self.dropout(tf.nn.softmax(scores + bias, axis=-1), training=training)
        return self.o(join_heads(tf.matmul(weights, v)))


class GeluMlp(keras.layers.Layer):
    def __init__(self, d_ff, d_model, use_bias=True, **kw):
        super().__init__(**kw)
        self.wi = keras.layers.Dense(d_ff, use_bias=use_bias, name="wi")
        self.wo = keras.layers.Dense(d_model, use_bias=use_bias, name="wo")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, training=False):
        return self.wo(self.dropout(gelu(self.wi(x)), training=training))


class FeedForward(keras.layers.Layer):
    def __init__(self, d_ff, d_model, use_bias=True, **kw):
        super().__init__(**kw)
        self.mlp = GeluMlp(d_ff, d_model, use_bias, name="dense_gelu_dense")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=EPS, name="layer_norm")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, training=False):
        return x + self.dropout(self.mlp(self.layer_norm(x), training=training), training=training)


class TransformerEncoderLayer(keras.layers.Layer):
    def __init__(self, d_model, d_ff, heads, **kw):
        super().__init__(**kw)
        self.layer_norm = keras.layers.LayerNormalization(epsilon=EPS, name="layer_norm")
        self.mha = MultiHeadAttention(d_model, heads, name="multi_head_attention")
        self.dropout = keras.layers.Dropout(0.1)
        self.feed_forward = FeedForward(d_ff, d_model, name="feed_forward")

    def call(self, x, bias, training=False):
        x = x + self.dropout(self.mha(self.layer_norm(x), bias, training=training), training=training)
        return self.feed_forward(x, training=training)


class TransformerEncoder(keras.layers.Layer):
    def __init__(self, d_model, d_ff, heads, layers, **kw):
        super().__init__(**kw)
        self.layers = [TransformerEncoderLayer(d_model, d_ff, heads, name=f"layer_{n}") for n in range(layers)]
        self.final_layer_norm = keras.layers.LayerNormalization(epsilon=EPS, name="final_layer_norm")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, mask=None, training=False):
        b, n = tf.shape(x)[0], tf.shape(x)[1]
        mask = tf.ones((b, n), x.dtype) if mask is None else tf.cast(mask, x.dtype)
        bias = (1.0 - mask[:, None, None, :]) * -1e9
        for layer in self.layers:
            x = layer(x, bias, training=training)
        return self.dropout(self.final_layer_norm(x), training=training)


# --------------------------------------------------------------------------- positions


class SpatioTemporalEmbeddings(keras.layers.Layer):
    def __init__(self, d_model, t, h, w, **kw):
        super().__init__(**kw)
        self.temporal_position_embeddings = keras.layers.Embedding(t, d_model, name="temporal_position_embeddings")
        self.vertical_position_embeddings = keras.layers.Embedding(h, d_model, name="vertical_position_embeddings")
        self.horizontal_position_embeddings = keras.layers.Embedding(w, d_model, name="horizontal_position_embeddings")
        self.layernorm = keras.layers.LayerNormalization(epsilon=EPS, name="layer_norm")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, grid, training=False):
        t, h, w = grid
        ids = tf.reshape(tf.stack(tf.meshgrid(tf.range(t), tf.range(h), tf.range(w), indexing="ij"), -1), (-1, 3))
        pos = (self.temporal_position_embeddings(ids[:, 0]) + self.vertical_position_embeddings(ids[:, 1])
               + self.horizontal_position_embeddings(ids[:, 2]))
        return self.dropout(x + self.layernorm(pos)[None], training=training)


class TemporalEmbeddings(keras.layers.Layer):
    def __init__(self, d_model, t, **kw):
        super().__init__(**kw)
        self.temporal_position_embeddings = keras.layers.Embedding(t, d_model, name="temporal_position_embeddings")
        self.layernorm = keras.layers.LayerNormalization(epsilon=EPS, name="layer_norm")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, training=False):
        pos = self.temporal_position_embeddings(tf.range(tf.shape(x)[1]))
        return self.dropout(x + self.layernorm(pos)[None], training=training)


def prepend(token, x):
    return tf.concat([tf.tile(token[None, None, :], [tf.shape(x)[0], 1, 1]), x], axis=1)


# --------------------------------------------------------------------------- video and audio towers


class ViTx3D(keras.layers.Layer):
    def __init__(self, d_model, d_ff, heads, layers, patch, grid, **kw):
        super().__init__(**kw)
        self.d_model = d_model
        self.voxel_to_patch = keras.layers.Conv3D(d_model, patch, strides=patch, padding="valid", name="voxel_to_patch")
        self.pos_embedding_lookup = SpatioTemporalEmbeddings(d_model, *grid, name="spatio_temporal_embeddings")
        self.tx = TransformerEncoder(d_model, d_ff, heads, layers, name="transformer")

    def build(self, shape):
        self.agg_token_embd = self.add_weight(name="agg_embedding", shape=(self.d_model,),
                                              initializer="glorot_normal")

    def call(self, video, training=False):
        x = self.voxel_to_patch(video)  # B, t, h, w, D
        grid = x.shape[1:4]
        x = tf.reshape(x, (tf.shape(x)[0], -1, self.d_model))
        x = self.pos_embedding_lookup(x, grid, training=training)
        return self.tx(prepend(self.agg_token_embd, x), training=training)[:, 0]


class AuTx1D(keras.layers.Layer):
    def __init__(self, d_model, d_ff, heads, layers, patch, length, **kw):
        super().__init__(**kw)
        self.d_model = d_model
        self.wave_to_patch = keras.layers.Conv1D(d_model, patch, strides=patch, padding="valid",
                                                 name="waveform_to_patch")
        self.pos_embedding_lookup = TemporalEmbeddings(d_model, length, name="temporal_embeddings")
        self.tx = TransformerEncoder(d_model, d_ff, heads, layers, name="transformer")

    def build(self, shape):
        self.agg_token_embd = self.add_weight(name="agg_embedding", shape=(self.d_model,),
                                              initializer="glorot_normal")

    def call(self, audio, training=False):
        x = self.pos_embedding_lookup(self.wave_to_patch(audio), training=training)
        return self.tx(prepend(self.agg_token_embd, x), training=training)[:, 0]


class VideoModel(keras.Model):
    """The video tower; with ``num_classes`` the fine-tuned classifier (dropout + Dense on the pooled feature)."""

    def __init__(self, base, num_classes=None, **kw):
        super().__init__(**kw)
        self._base = base
        self._ops = {}
        if num_classes:
            self._ops["dropout"] = keras.layers.Dropout(0.5)
            self._ops["cls"] = keras.layers.Dense(num_classes, name="classification/weights")

    def call(self, x, training=False):
        pooled = self._base(x, training=training)
        if "cls" in self._ops:
            return self._ops["cls"](self._ops["dropout"](pooled, training=training))
        return pooled


# --------------------------------------------------------------------------- T5 text


class T5LayerNorm(keras.layers.Layer):
    def build(self, shape):
        self.weight = self.add_weight("weight", shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return self.weight * x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), -1, keepdims=True) + EPS)


class AttentionLayer(keras.layers.Layer):
    def __init__(self, d_model, heads, buckets, max_distance, **kw):
        super().__init__(**kw)
        self.attention = MultiHeadAttention(d_model, heads, use_bias=False, scale=False, buckets=buckets,
                                            max_distance=max_distance, name="multi_head_attention")
        self.layer_norm = T5LayerNorm(name="layer_norm")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, bias, training=False):
        return x + self.dropout(self.attention(self.layer_norm(x), bias, training=training), training=training)


class T5FeedForward(keras.layers.Layer):
    def __init__(self, d_ff, d_model, **kw):
        super().__init__(**kw)
        self.mlp = GeluMlp(d_ff, d_model, use_bias=False, name="dense_gelu_dense")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=EPS, name="layer_norm")  # scale and offset
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, training=False):
        return x + self.dropout(self.mlp(self.layer_norm(x), training=training), training=training)


class EncoderLayer(keras.layers.Layer):
    def __init__(self, d_model, d_ff, heads, buckets, max_distance, **kw):
        super().__init__(**kw)
        self.self_attention = AttentionLayer(d_model, heads, buckets, max_distance, name="self_attention")
        self.feed_forward = T5FeedForward(d_ff, d_model, name="feed_forward")

    def call(self, x, bias, training=False):
        return self.feed_forward(self.self_attention(x, bias, training=training), training=training)


class T5Encoder(keras.layers.Layer):
    def __init__(self, d_model, d_ff, heads, layers, buckets=32, max_distance=64, **kw):
        super().__init__(**kw)
        # only layer 0 owns the relative-position bias; the other layers reuse what it computed
        self.layers = [EncoderLayer(d_model, d_ff, heads, buckets if n == 0 else None,
                                    max_distance if n == 0 else None, name=f"layer_{n}") for n in range(layers)]
        self.final_layer_norm = T5LayerNorm(name="final_layer_norm")
        self.dropout = keras.layers.Dropout(0.1)

    def call(self, x, mask, training=False):
        bias = self.layers[0].self_attention.attention.position_bias(tf.shape(x)[1])
        bias = tf.cast(bias, x.dtype) + (1.0 - tf.cast(mask, x.dtype)[:, None, None, :]) * -1e9
        x = self.dropout(x, training=training)
        for layer in self.layers:
            x = layer(x, bias, training=training)
        return self.dropout(self.final_layer_norm(x), training=training)


class LanguageModel(keras.Model):
    def __init__(self, vocab, word_dim, d_model, d_ff, heads, layers, **kw):
        super().__init__(**kw)
        self.word_dim = word_dim
        self.embedding = keras.layers.Embedding(vocab, word_dim, trainable=False, name="embedding")
        self.pre_proj = keras.layers.Dense(d_model, use_bias=False, activation=gelu, name="pre_proj")
        self.base_lm = T5Encoder(d_model, d_ff, heads, layers, name="t5_small")

    def build(self, shape):
        self.agg_token_embd = self.add_weight(name="agg_embedding", shape=(self.word_dim,),
                                              initializer="glorot_normal")

    def call(self, ids, mask, training=False):
        x = self.pre_proj(prepend(self.agg_token_embd, self.embedding(ids)))  # the [AGG] goes through it too
        mask = tf.concat([tf.ones_like(mask[:, :1]), mask], axis=1)
        return self.base_lm(x, mask, training=training)[:, 0]


# --------------------------------------------------------------------------- heads and the pretraining model


class ReluDenseBN(keras.layers.Layer):
    def __init__(self, units, pre_bn, **kw):
        super().__init__(**kw)
        if pre_bn:
            self.pre_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="batch_norm")
        self.dense = keras.layers.Dense(units, use_bias=False, name="linear_projection")
        self.bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="batch_norm")

    def call(self, x, training=False):
        if hasattr(self, "pre_bn"):
            x = self.pre_bn(x, training=training)
        return self.bn(self.dense(tf.nn.relu(x)), training=training)


class FACHead(keras.layers.Layer):
    def __init__(self, va, vt, **kw):
        super().__init__(**kw)
        self.vid_to_hid = keras.layers.Dense(va, use_bias=False, name="vid_to_hid")
        self.hid_to_va = ReluDenseBN(va, pre_bn=True, name="hid_to_va")
        self.va_to_vat = ReluDenseBN(vt, pre_bn=False, name="va_to_vat")
        self.aud_to_va = keras.layers.Dense(va, name="aud_to_vid")
        self.txt_to_vat = keras.layers.Dense(vt, name="txt_to_vid")

    def call(self, video, audio, text, training=False):
        va = self.hid_to_va(self.vid_to_hid(video), training=training)
        vt = self.va_to_vat(va, training=training)
        return va, vt, self.aud_to_va(audio), self.txt_to_vat(text)


class HeadStack(keras.layers.Layer):
    def __init__(self, va, vt, **kw):
        super().__init__(**kw)
        self._bridge_heads = [FACHead(va, vt, name="mlp_fac")]

    def call(self, video, audio, text, training=False):
        return self._bridge_heads[0](video, audio, text, training=training)


class AudioModel(keras.Model):
    def __init__(self, base, **kw):
        super().__init__(**kw)
        self._base = base

    def call(self, x, training=False):
        return self._base(x, training=training)


class AudioTextVideoFusion(keras.layers.Layer):
    def __init__(self, video, audio, text, **kw):
        super().__init__(**kw)
        self.vid_backbone = VideoModel(video, name="video_module")
        self.aud_backbone = AudioModel(audio, name="audio_module")
        self.txt_backbone = text

    def call(self, video, audio, ids, training=False):
        mask = tf.cast(ids != 0, tf.int32)
        return (self.vid_backbone(video, training=training), self.aud_backbone(audio, training=training),
                self.txt_backbone(ids, mask, training=training))


class UniversalVATT(keras.layers.Layer):
    """The modality-agnostic model: per modality its embedding, pre-projection, positions, [AGG], post-projection."""

    def __init__(self, d_model, d_ff, heads, layers, patch, grid, audio_patch, audio_len, vocab, word_dim, words,
                 d_post, **kw):
        super().__init__(**kw)
        self.d_model = d_model
        self.raw_to_embeddings = {
            "video": keras.layers.Conv3D(d_model, patch, strides=patch, padding="valid", name="voxel_to_patch"),
            "audio": keras.layers.Conv1D(d_model, audio_patch, strides=audio_patch, padding="valid",
                                         name="waveform_to_patch"),
            "text": keras.layers.Embedding(vocab, word_dim, trainable=False, name="text_embedding"),
        }
        self.pre_proj = {m: keras.layers.Dense(d_model, activation=gelu, name=f"{m}_pre_tx_projection")
                         for m in ("video", "audio", "text")}
        self.pos_embedding_lookup = {
            "video": SpatioTemporalEmbeddings(d_model, *grid, name="video_spatio_temporal_embeddings"),
            "audio": TemporalEmbeddings(d_model, audio_len, name="audio_temporal_embeddings"),
            "text": TemporalEmbeddings(d_model, words, name="text_temporal_embeddings"),
        }
        self.tx = TransformerEncoder(d_model, d_ff, heads, layers, name="transformer")
        self.post_proj = {m: keras.layers.Dense(d_post, activation=gelu, name=f"{m}_post_tx_projection")
                          for m in ("video", "audio", "text")}

    def build(self, shape):
        self.agg_token = {m: self.add_weight(name=f"{short}_agg_embedding", shape=(self.d_model,),
                                             initializer="glorot_normal")
                          for m, short in (("video", "vid"), ("audio", "aud"), ("text", "txt"))}

    def _modality(self, m, x, mask=None, training=False):
        x = self.pre_proj[m](self.raw_to_embeddings[m](x))
        if m == "video":
            grid = x.shape[1:4]
            x = self.pos_embedding_lookup[m](tf.reshape(x, (tf.shape(x)[0], -1, self.d_model)), grid,
                                             training=training)
        else:
            x = self.pos_embedding_lookup[m](x, training=training)
        if mask is not None:
            mask = tf.concat([tf.ones_like(mask[:, :1]), mask], axis=1)
        return self.post_proj[m](self.tx(prepend(self.agg_token[m], x), mask, training=training))[:, 0]

    def call(self, video, audio, ids, training=False):
        mask = tf.cast(ids != 0, tf.int32)
        return (self._modality("video", video, training=training), self._modality("audio", audio, training=training),
                self._modality("text", ids, mask, training=training))


class UnifiedModule(keras.Model):
    def __init__(self, ut, **kw):
        super().__init__(**kw)
        self.unified_transformer = ut

    def call(self, video, audio, ids, training=False):
        return self.unified_transformer(video, audio, ids, training=training)


class UnifiedFusion(keras.layers.Layer):
    def __init__(self, ut, **kw):
        super().__init__(**kw)
        self.unified_backbone = UnifiedModule(ut, name="unified_module")

    def call(self, video, audio, ids, training=False):
        return self.unified_backbone(video, audio, ids, training=training)


class MMRLModel(keras.Model):
    def __init__(self, base, head, **kw):
        super().__init__(**kw)
        self._base_layer = base
        self._head_layer = head

    def call(self, inputs, training=False):
        video, audio, text = self._base_layer(inputs["video"], inputs["audio"], inputs["text"], training=training)
        va, vt, audio_va, text_vt = self._head_layer(video, audio, text, training=training)
        return {"video": video, "audio": audio, "text": text, "video_va": va, "video_vt": vt, "audio_va": audio_va,
                "text_vt": text_vt}


# --------------------------------------------------------------------------- writing the fixtures


def randomise(model: keras.Model, rng: np.random.Generator) -> None:
    """Every variable random, of a scale that keeps activations moderate; variances positive."""
    for v in model.variables:
        name, shape = v.name, v.shape.as_list()
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name or name.endswith("weight:0") and len(shape) == 1:
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = 0.2 * rng.standard_normal(shape)
        v.assign(value.astype(np.float32))


def save(model: keras.Model, inputs: dict, out: Path, outputs: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    optimizer = keras.optimizers.legacy.Adam(1e-4)  # TF 2.7's optimizer: slots under .OPTIMIZER_SLOT
    # slots (m, v) for a few variables, as in any trained checkpoint; zero gradients change no weight
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables[:4]])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=optimizer), str(out),
                                         max_to_keep=1, checkpoint_name="ckpt")
    manager.save(checkpoint_number=7)
    np.savez(out / "outputs.npz", **{f"input_{k}": np.asarray(v) for k, v in inputs.items()},
             **{k: np.asarray(v) for k, v in outputs.items()})
    names = {name: shape for name, shape in tf.train.list_variables(str(out / "ckpt-7"))}
    (out / "variables.json").write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")


def functional(model: keras.Model, specs: dict) -> keras.Model:
    inputs = {k: keras.Input(shape, dtype=dtype, name=k) for k, (shape, dtype) in specs.items()}
    single = len(inputs) == 1
    return keras.Model(inputs=inputs, outputs=model(next(iter(inputs.values())) if single else inputs))


def in_float64(build, model: keras.Model, specs: dict, inputs: dict) -> dict:
    """``model``'s outputs computed in float64: the same layers (``build()``) with its weights, float64 throughout.

    The reference without float32 rounding: TensorFlow's float32 outputs are themselves
    up to ~1.5e-5 from the exact values on the text tower (outputs of order 2), which is
    why a float32 comparison cannot show agreement to 1e-5 on every CPU.
    """
    keras.backend.set_floatx("float64")
    try:
        wide = {k: (shape, tf.float64 if dtype == tf.float32 else dtype) for k, (shape, dtype) in specs.items()}
        twin = functional(build(), wide)
        assert [v.shape for v in twin.variables] == [v.shape for v in model.variables]
        for mine, theirs in zip(twin.variables, model.variables):
            mine.assign(theirs.numpy().astype(np.float64))
        out = twin({k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in inputs.items()}, training=False)
        return {k: v.numpy() for k, v in (out.items() if isinstance(out, dict) else [("logits", out)])}
    finally:
        keras.backend.set_floatx("float32")


def save_float64(out: Path, inputs: dict, outputs: dict) -> None:
    np.savez(out / "outputs_float64.npz", **{f"input_{k}": v.astype(np.float64) if v.dtype == np.float32 else v
                                             for k, v in inputs.items()}, **outputs)


def make(out: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    B, T, S, L = 2, 4, 16, 16  # clips, frames, frame side, words
    ids = np.array([[3, 7, 1, 12, 5] + [0] * (L - 5), [9, 2, 2, 18, 4, 6, 11, 8, 15, 1, 3, 19, 2, 7, 10, 5]])
    inputs = {"video": rng.uniform(-1, 1, (B, T, S, S, 3)).astype(np.float32),
              "audio": (0.3 * rng.standard_normal((B, 1280, 1))).astype(np.float32), "text": ids.astype(np.int64)}
    specs = {"video": ((T, S, S, 3), tf.float32), "audio": ((1280, 1), tf.float32), "text": ((L,), tf.int64)}

    # modality-specific: video 64-wide / 2 layers, audio 64-wide / 1 layer, T5 text 64-wide with 2 heads / 2 layers;
    # 2 x 4 x 4 patches of 4 frames of 16^2 (32 tokens), 10 audio segments of 128 samples, 20 words of 32-d vectors
    def tx_fac():
        video = ViTx3D(64, 64, 1, 2, (2, 4, 4), (2, 4, 4), name="vit_base")
        audio = AuTx1D(64, 64, 1, 1, 128, 10, name="wat_base")
        text = LanguageModel(20, 32, 64, 64, 2, 2, name="text_module")
        return MMRLModel(AudioTextVideoFusion(video, audio, text, name="backbone_stack"),
                         HeadStack(32, 16, name="head_stack"), name="tx_fac")

    ms = functional(tx_fac(), specs)
    randomise(ms, rng)
    save(ms, inputs, out / "ms", {k: v.numpy() for k, v in ms(inputs, training=False).items()})
    save_float64(out / "ms", inputs, in_float64(tx_fac, ms, specs, inputs))

    # modality-agnostic: one 64-wide Transformer, post-projections to 64
    def ut_fac():
        ut = UniversalVATT(64, 64, 1, 1, (2, 4, 4), (2, 4, 4), 128, 10, 20, 32, L, 64, name="ut_medium")
        return MMRLModel(UnifiedFusion(ut, name="unified_backbone"), HeadStack(32, 16, name="head_stack"),
                         name="ut_fac")

    ma = functional(ut_fac(), specs)
    randomise(ma, rng)
    save(ma, inputs, out / "ma", {k: v.numpy() for k, v in ma(inputs, training=False).items()})
    save_float64(out / "ma", inputs, in_float64(ut_fac, ma, specs, inputs))

    # a fine-tuned video classifier: ViT 128-wide (2 heads), 5 classes
    def classifier():
        return VideoModel(ViTx3D(128, 64, 2, 1, (2, 4, 4), (2, 4, 4), name="vit_base"), num_classes=5,
                          name="video_module")

    image_specs = {"images": specs["video"]}
    cls = functional(classifier(), image_specs)
    randomise(cls, rng)
    logits = cls({"images": inputs["video"]}, training=False)
    save(cls, {"video": inputs["video"]}, out / "classifier", {"logits": logits.numpy()})
    save_float64(out / "classifier", {"video": inputs["video"]},
                 in_float64(classifier, cls, image_specs, {"images": inputs["video"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tf_vatt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make(Path(args.out), args.seed)
    print(f"fixtures written to {args.out}")


if __name__ == "__main__":
    main()

"""The paper's pretraining recipe: frozen word vectors through the command line, global batch, SyncBN, layer details."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from vatt import create_model
from vatt.data.tokenizer import WordTokenizer
from vatt.models.layers import Transformer
from vatt.run_setup import configure_batch, configure_sync_batchnorm, devices_in_use

# --------------------------------------------------------------------------- word vectors from the command line


def _captions(root: Path) -> list[str]:
    return [c["text"] for line in (root / "train.jsonl").read_text().splitlines() for c in json.loads(line)["captions"]]


def _vectors(words: list[str]) -> dict[str, list[float]]:
    g = torch.Generator().manual_seed(3)
    return {w: torch.randn(300, generator=g).tolist() for w in words}


def _write_word2vec(path: Path, vectors: dict[str, list[float]], binary: bool) -> Path:
    head = f"{len(vectors)} 300\n".encode()
    if binary:
        rows = b"".join(w.encode() + b" " + struct.pack("<300f", *v) + b"\n" for w, v in vectors.items())
    else:
        rows = "".join(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n" for w, v in vectors.items()).encode()
    path.write_bytes(head + rows)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_file_and_word_list_fill_a_frozen_table_through_the_command_line(tmp_path, demo_root, binary):
    data = tmp_path / "data"
    shutil.copytree(demo_root, data)
    (data / "tokenizer.json").unlink(missing_ok=True)
    words = WordTokenizer.build(_captions(data)).words[2:]
    vocab = tmp_path / "vocab.txt"  # the paper's kind of list: padding first, line = id
    vocab.write_text("<pad>\n<unk>\n" + "\n".join(words) + "\n")
    known = words[:-3]  # three caption words have no vector in the file
    file = _write_word2vec(tmp_path / ("w2v.bin" if binary else "w2v.txt"), _vectors(known + ["elsewhere"]), binary)
    env = {k: v for k, v in os.environ.items() if k != "VATT_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "vatt.train", "data=manifest", f"data.path={data}", f"data.vocab={vocab}",
                           f"model.word_vectors={file}", "debug=limit", "trainer.max_epochs=1"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"word vectors: {len(known)} of {len(words) + 2} vocabulary words found in {file}" in proc.stdout + proc.stderr
    run = next((tmp_path / "logs" / "train" / "runs").iterdir())
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    table = state["model.text.embed.weight"]
    vectors = _vectors(known + ["elsewhere"])
    for i, w in enumerate(words, start=2):  # line i of the list = id i
        if w in vectors:
            assert torch.allclose(table[i], torch.tensor(vectors[w]), atol=1e-5), w  # the file's vector, unchanged
    assert table[0].abs().sum() == 0  # padding


def test_a_run_without_word_vectors_says_the_table_is_random_and_trained(caplog):
    from vatt.lightning import VATTPretrainModule

    with caplog.at_level("WARNING"):
        VATTPretrainModule(name="bbs", vocab_size=10, input=dict(num_frames=4, fps=10, image_size=32, sample_rate=3200))
    assert "randomly initialised and trained (no model.word_vectors file; the paper uses frozen word2vec" in caplog.text


def test_word_lists_map_lines_to_ids_and_unknown_words_to_the_unk_line(tmp_path):
    listed = tmp_path / "v.txt"
    listed.write_text("<pad>\nthe\n<unk>\nonion\n")
    tok = WordTokenizer.from_file(listed)
    assert tok.words == ["[PAD]", "the", "[UNK]", "onion"] and tok(["the onion fries"], 4).tolist() == [[1, 3, 2, 0]]
    bare = tmp_path / "w.txt"
    bare.write_text("the\nonion\n")
    assert WordTokenizer.from_file(bare).words == ["[PAD]", "[UNK]", "the", "onion"]
    repeated = tmp_path / "r.txt"
    repeated.write_text("<pad>\nthe\nThe\n")
    with pytest.raises(ValueError, match="line 3 is a repeat of 'The'"):
        WordTokenizer.from_file(repeated)


# --------------------------------------------------------------------------- batch and BatchNorm


@pytest.mark.parametrize("devices,nodes,expected", [(2, 1, 2), ("3", 2, 6), ([0, 1], 1, 2), ("0,1,2", 1, 3), (1, 4, 4)])
def test_devices_in_use_counts_devices_times_nodes(devices, nodes, expected):
    from omegaconf import OmegaConf

    assert devices_in_use(OmegaConf.create({"devices": devices, "num_nodes": nodes, "accelerator": "cpu"})) == expected


def test_global_batch_is_split_over_the_devices_or_named_when_it_does_not_divide(tmp_path, caplog):
    cfg = make_cfg(tmp_path, ["experiment=vatt_mbs", "trainer=ddp_cpu"])
    assert cfg.data.global_batch_size == 2048
    with caplog.at_level("INFO"):
        assert configure_batch(cfg) == 2
    assert cfg.data.batch_size == 1024 and "global batch 2048 = 2 device(s) x 1024 clips per device" in caplog.text
    cfg = make_cfg(tmp_path, ["experiment=vatt_mbs", "trainer=ddp_cpu", "trainer.devices=3"])
    with pytest.raises(ValueError, match="data.global_batch_size=2048 is not divisible by the 3 devices"):
        configure_batch(cfg)
    cfg = make_cfg(tmp_path, ["trainer.accumulate_grad_batches=4"])
    with caplog.at_level("INFO"):
        configure_batch(cfg)
    assert "accumulation does not add NCE negatives" in caplog.text


def test_sync_batchnorm_whenever_several_gpus_train_and_a_reason_on_cpu(tmp_path, caplog):
    cfg = make_cfg(tmp_path, ["trainer=ddp"])  # GPUs asked for: the setting, whatever this machine has
    configure_sync_batchnorm(cfg, 4)
    assert cfg.trainer.sync_batchnorm is True
    cfg = make_cfg(tmp_path, ["trainer=gpu", "trainer.devices=2"])
    configure_sync_batchnorm(cfg, 2)
    assert cfg.trainer.sync_batchnorm is True  # not only under the ddp/fsdp configs
    cfg = make_cfg(tmp_path, ["trainer=ddp_cpu"])
    with caplog.at_level("INFO"):
        configure_sync_batchnorm(cfg, 2)
    assert cfg.trainer.sync_batchnorm is False and "PyTorch synchronises BatchNorm only for GPU/XPU tensors" in caplog.text


# --------------------------------------------------------------------------- layer details


def test_t5_feed_forward_norm_is_a_layernorm_with_scale_and_offset_as_in_the_authors_code():
    model = create_model("tiny")
    block = model.text.transformer.blocks[0]
    assert isinstance(block.norm1, torch.nn.RMSNorm)  # before attention: T5's RMS norm
    norm = block.norm2
    assert isinstance(norm, torch.nn.LayerNorm) and norm.bias is not None and norm.eps == 1e-6
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 128))
        norm.bias.copy_(torch.linspace(-1, 1, 128))
    x = torch.randn(3, 128) + 5.0
    by_hand = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6)
    assert torch.allclose(norm(x), by_hand * norm.weight + norm.bias, atol=1e-5)
    no_offset = create_model("tiny", t5_mlp_norm="layer_nobias").text.transformer.blocks[0].norm2
    assert isinstance(no_offset, torch.nn.LayerNorm) and no_offset.bias is None  # the earlier default, a switch
    plain = create_model("tiny", t5_mlp_norm="rms").text.transformer.blocks[0].norm2
    assert isinstance(plain, torch.nn.RMSNorm)


def test_the_authors_word_vector_pickle_loads_by_word_id_and_refuses_code(tmp_path):
    import os
    import pickle

    import numpy as np

    from vatt.models.word_vectors import read_word_vectors

    table = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    words = ["[PAD]", "[UNK]", "cut", "onion", "pan"]
    for protocol in (2, 4):  # numpy's layout differs between pickle protocols
        with open(tmp_path / "word2vec.pkl", "wb") as f:
            pickle.dump({"word_embeddings": table, "note": "rows = ids"}, f, protocol=protocol)
        vectors, dim = read_word_vectors(tmp_path / "word2vec.pkl", words)
        assert dim == 4 and np.array_equal(vectors["onion"], table[3])
    model = create_model("tiny", vocab_size=5, word_dim=4, word_vectors=str(tmp_path / "word2vec.pkl"), vocab=words)
    assert torch.equal(model.text.embed.weight[1:], torch.from_numpy(table[1:])) and not model.text.embed.weight[0].any()
    with pytest.raises(ValueError, match="5 rows, one per word id.*data.vocab"):
        read_word_vectors(tmp_path / "word2vec.pkl", words[:3])

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this must not run",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"word_embeddings": Payload()}, f)
    with pytest.raises(ValueError, match="refusing to load posix.system: word vectors are arrays, not code"):
        read_word_vectors(tmp_path / "evil.pkl", words)


def test_video_and_audio_encoders_drop_out_after_the_final_layernorm():
    model = create_model("tiny", droptoken=0.0, dropout=0.0, attn_dropout=0.0)
    for enc in (model.video, model.audio):
        assert enc.final_drop.p == 0.0  # follows the model's dropout rate
    model.video.final_drop.p = 0.5
    model.train()
    feature = model.encode_video(torch.rand(4, 3, 8, 64, 64))
    zeros = (feature == 0).float().mean()
    assert 0.35 < zeros < 0.65  # about half the features dropped after the norm
    assert create_model("tiny").video.final_drop.p == 0.1 and create_model("tiny", final_dropout=False).video.final_drop.p == 0.0
    ma = create_model("ma_tiny")
    assert ma.video.final_drop.p == ma.text.final_drop.p == 0.1


def test_initialisation_follows_the_authors_code():
    torch.manual_seed(0)
    model = create_model("mbs", vocab_size=10)
    qkv = model.video.transformer.blocks[0].attn.qkv.weight  # 3072 x 1024
    assert qkv.std().item() == pytest.approx(math.sqrt(2 / (1024 + 3072)), rel=0.01)  # Glorot uniform
    assert qkv.abs().max().item() <= math.sqrt(6 / (1024 + 3072)) + 1e-7  # the uniform bound
    conv = model.video.embed.proj.weight  # 1024 x 3 x 4 x 16 x 16
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (3 * 1024 + 1024 * 1024)), rel=0.01)
    table = model.video.pos_embed.vertical  # 14 x 1024 ~ N(0, 1/1024)
    assert table.std().item() == pytest.approx(1024**-0.5, rel=0.1)
    agg = model.video.agg_token  # Glorot normal of a 1024-vector: std sqrt(1/1024), truncated at 2 std
    assert agg.std().item() == pytest.approx(1024**-0.5, rel=0.1) and agg.abs().max() <= 2 * 1024**-0.5 / 0.8796 + 1e-6
    assert model.video.transformer.blocks[0].attn.qkv.bias.abs().sum() == 0
    vit = create_model("tiny", init="vit").video.transformer.blocks[0].mlp.fc1.weight
    assert vit.std().item() == pytest.approx(0.02, rel=0.1)


def test_layer_details_keep_the_parameter_counts_and_flops():
    from vatt.flops import forward_gflops

    assert Transformer(64, 1, 2, 128, norm="rms", mlp_norm="layer_nobias").blocks[0].norm2.weight.shape == (64,)
    assert forward_gflops("mbs", 0.0)["total"] == pytest.approx(862.8, abs=0.1)  # the README's number
    assert forward_gflops("bbs", 0.5)["total"] == pytest.approx(279.8, abs=0.1)

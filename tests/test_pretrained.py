"""Weights in and out: load_pretrained from checkpoints and exports, encoders on their own, freezing towers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import vatt
from vatt.checkpoint import CheckpointError
from vatt.export import main as export_main
from vatt.pretrained import save_pretrained


def _inputs(model, b: int = 2):
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    video = torch.rand(b, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    audio = torch.randn(b, cfg.audio_samples, generator=g)
    text = torch.randint(1, cfg.vocab_size, (b, 6), generator=g)
    return video, audio, text


def _same_outputs(a, b) -> None:
    video, audio, text = _inputs(a)
    oa, ob = a.eval()(video=video, audio=audio, text=text), b.eval()(video=video, audio=audio, text=text)
    for k in oa:
        assert torch.equal(oa[k], ob[k]), k


@pytest.mark.parametrize("name", ["tiny", "ma_tiny"])
def test_export_then_load_gives_the_same_model_with_its_vocabulary(tmp_path, name):
    torch.manual_seed(0)
    model = vatt.create_model(name, vocab_size=6)
    vocab = ["[PAD]", "[UNK]", "stir", "the", "pot", "slowly"]
    path = save_pretrained(model, tmp_path / "m.safetensors", vocab=vocab)
    loaded = vatt.load_pretrained(path)
    assert loaded.config == model.config and loaded.vocab == vocab and not loaded.training
    _same_outputs(model, loaded)
    if name == "ma_tiny":  # the shared Transformer is stored once and shared again after loading
        with safe_open(str(path), framework="pt") as f:
            assert not [k for k in f.keys() if k.startswith(("audio.transformer", "text.transformer"))]
        assert loaded.modality_agnostic


def test_a_pretraining_checkpoint_loads_and_exports(tmp_path, demo_root):
    from conftest import make_cfg, small_data

    from vatt.train import train

    train(make_cfg(tmp_path, [*small_data(demo_root), "debug=limit", "trainer.max_epochs=1"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = vatt.load_pretrained(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = saved["state_dict"]
    assert torch.equal(model.video.agg_token, state["model.video.agg_token"])
    assert model.vocab[:2] == ["[PAD]", "[UNK]"] and len(model.vocab) == model.config.vocab_size
    # the checkpoint holds the model's own config and words: nothing else is needed to rebuild it
    assert saved["vatt_model"]["config"] == dataclasses.asdict(model.config)
    assert saved["vatt_model"]["vocab"] == model.vocab and saved["vatt_model"]["punctuation"] == "remove"
    assert model.input == {"num_frames": 8, "fps": 10.0, "image_size": 64, "sample_rate": 16000, "max_words": 16}
    out = export_main(["--ckpt", str(ckpt), "--out", str(tmp_path / "tiny.safetensors")])
    again = vatt.load_pretrained(out)
    _same_outputs(model, again)
    assert again.vocab == model.vocab and again.input == model.input


def test_position_tables_are_resized_to_another_geometry(tmp_path):
    torch.manual_seed(0)
    model = vatt.create_model("tiny")
    path = save_pretrained(model, tmp_path / "m.safetensors")
    big = vatt.load_pretrained(path, num_frames=16, image_size=96)
    assert big.video.pos_embed.temporal.shape == (4, 128) and big.video.pos_embed.vertical.shape == (6, 128)
    # the same interpolation the model applies on the fly to other inputs
    from vatt.models import resize_table

    assert torch.allclose(big.video.pos_embed.vertical, resize_table(model.video.pos_embed.vertical, 6))
    assert big.encode_video(torch.zeros(1, 3, 16, 96, 96)).shape == (1, 128)


def test_mismatches_name_the_tensors(tmp_path):
    model = vatt.create_model("tiny")
    path = save_pretrained(model, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    broken = dict(state)
    del broken["heads.audio_to_va.bias"]
    broken["extra.weight"] = torch.zeros(1)
    save_file(broken, str(tmp_path / "b.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\) \['heads.audio_to_va.bias'\], 1 unexpected tensor\(s\) \['extra.weight'\]"):
        vatt.load_pretrained(tmp_path / "b.safetensors")
    shaped = dict(state)
    shaped["heads.text_to_vt.weight"] = torch.zeros(256, 64)
    save_file(shaped, str(tmp_path / "s.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"tensor heads.text_to_vt.weight has shape \[256, 64\], the model needs \[256, 128\]"):
        vatt.load_pretrained(tmp_path / "s.safetensors")
    save_file(state, str(tmp_path / "n.safetensors"))
    with pytest.raises(CheckpointError, match="no VATT build arguments"):
        vatt.load_pretrained(tmp_path / "n.safetensors")
    with pytest.raises(TypeError, match="unknown override"):
        vatt.load_pretrained(path, frames=3)
    (tmp_path / "m.pt").write_bytes(b"weights of another kind")
    with pytest.raises(ValueError, match=r"\.ckpt\), an exported file \(\.safetensors\), a model folder"):
        vatt.load_pretrained(tmp_path / "m.pt")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        vatt.load_pretrained(tmp_path / "nowhere.safetensors")


def test_encoders_give_features_or_common_space_embeddings():
    torch.manual_seed(0)
    model = vatt.create_model("tiny").eval()
    video, audio, text = _inputs(model)
    out = model(video=video, audio=audio, text=text)
    assert torch.equal(model.encode_video(video), out["video"])
    assert torch.equal(model.encode_video(video, space="va"), out["video_va"])
    assert torch.equal(model.encode_video(video, space="vt"), out["video_vt"])
    assert torch.equal(model.encode_audio(audio, space="va"), out["audio_va"])
    assert torch.equal(model.encode_text(text, space="vt"), out["text_vt"])
    unit = model.encode_text(text, space="vt", normalize=True)
    assert torch.allclose(unit.norm(dim=-1), torch.ones(2)) and torch.allclose(unit, out["text_vt"] / out["text_vt"].norm(dim=-1, keepdim=True))
    # audio in the video-text space: its va embedding through the va -> vt projection (audio zero-shot)
    assert torch.equal(model.encode_audio(audio, space="vt"), model.heads.va_to_vt(out["audio_va"]))
    with pytest.raises(ValueError, match="space='ta'"):
        model.encode_audio(audio, space="ta")


def test_freezing_towers_stops_their_gradients_only():
    model = vatt.create_model("tiny").freeze("video", "heads")
    assert not any(p.requires_grad for p in model.video.parameters())
    assert not any(p.requires_grad for p in model.heads.parameters())
    assert all(p.requires_grad for p in model.audio.parameters())
    with pytest.raises(ValueError, match="unknown tower"):
        model.freeze("vision")
    ma = vatt.create_model("ma_tiny").freeze("text")
    assert not any(p.requires_grad for p in ma.video.transformer.parameters())  # shared


def test_exports_get_the_mode_of_any_new_file(tmp_path):
    import os
    import stat

    import vatt

    umask = os.umask(0o022)
    try:
        path = vatt.save_pretrained(vatt.create_model("tiny", vocab_size=10), tmp_path / "m.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not safetensors' private 0600


@pytest.mark.parametrize("name", ["tiny", "ma_tiny"])
def test_a_model_folder_round_trips_with_config_vocabulary_and_card(tmp_path, name):
    torch.manual_seed(0)
    model = vatt.create_model(name, vocab_size=4)
    folder = save_pretrained(model, tmp_path / "vatt_tiny", vocab=["[PAD]", "[UNK]", "stir", "pot"])
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.txt"]
    loaded = vatt.load_pretrained(folder)
    assert loaded.config == model.config and loaded.vocab == ["[PAD]", "[UNK]", "stir", "pot"]
    assert loaded.punctuation == "remove"
    _same_outputs(model, loaded)
    with pytest.raises(ValueError, match="a .safetensors file or a folder"):
        save_pretrained(model, tmp_path / "model.pt")


def test_weights_from_before_the_text_norm_had_an_offset_still_load(tmp_path):
    """A pretraining checkpoint whose settings do not name t5_mlp_norm and whose text norm has no bias."""
    torch.manual_seed(0)
    old = vatt.create_model("tiny", vocab_size=5, t5_mlp_norm="layer_nobias")
    hp = {"name": "tiny", "droptoken": 0.5, "vocab_size": 5,
          "input": {"num_frames": 8, "fps": 10, "image_size": 64, "sample_rate": 16000, "max_words": 16}}
    torch.save({"hyper_parameters": hp, "state_dict": {f"model.{k}": v for k, v in old.state_dict().items()}},
               tmp_path / "old.ckpt")
    loaded = vatt.load_pretrained(tmp_path / "old.ckpt")
    assert loaded.config.t5_mlp_norm == "layer_nobias"
    _same_outputs(old, loaded)


def test_a_classifier_round_trips_and_resizes_its_positions(tmp_path):
    from vatt.models.vatt import build_tower_classifier
    from vatt.models.vatt import VATTConfig
    from vatt.pretrained import save_classifier

    torch.manual_seed(0)
    model = build_tower_classifier(VATTConfig.from_preset("tiny"), "video", 3)
    path = save_classifier(model, tmp_path / "c.safetensors", classes=["red", "green", "blue"])
    loaded = vatt.load_classifier(path)
    assert (loaded.modality, loaded.num_classes, loaded.classes) == ("video", 3, ["red", "green", "blue"])
    clips = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    assert torch.equal(model.eval()(clips), loaded(clips))
    bigger = vatt.load_classifier(path, image_size=96)  # 6 x 6 patches from a 4 x 4 table: resampled
    assert bigger(torch.rand(1, 3, 8, 96, 96)).shape == (1, 3)
    with pytest.raises(ValueError, match="2 class names for a head with 3 classes"):
        save_classifier(model, tmp_path / "d.safetensors", classes=["a", "b"])


def test_a_checkpoint_written_before_configs_were_stored_loads_and_resumes(tmp_path, demo_root):
    """The previous layout: hyper-parameters and a path to the vocabulary file, no ``vatt_model`` entry."""
    from conftest import make_cfg, small_data

    from vatt.train import train

    train(make_cfg(tmp_path, [*small_data(demo_root), "debug=limit", "trainer.max_epochs=1"]))
    new = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(new, map_location="cpu", weights_only=True)
    del ckpt["vatt_model"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    a, b = vatt.load_pretrained(new), vatt.load_pretrained(old)
    assert a.config == b.config and a.vocab == b.vocab and a.punctuation == b.punctuation and a.input == b.input
    _same_outputs(a, b)
    metrics = train(make_cfg(tmp_path / "resumed", [*small_data(demo_root), "debug=limit", "trainer.max_epochs=2",
                                                    f"ckpt_path={old}"]))
    resumed = torch.load(tmp_path / "resumed" / "run" / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=True)
    assert resumed["global_step"] == 2 * ckpt["global_step"] and "val/v2a_R@10" in metrics

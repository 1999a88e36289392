"""VATT models: presets, forward contract, MA weight sharing, word vectors, errors."""

import struct
from pathlib import Path

import pytest
import torch

from vatt import count_parameters, create_model, list_models
from vatt.models import VATT, DropToken, T5TextEncoder

# Paper-size models run on tiny inputs so forward + backward fit a CPU test.
SMALL_INPUT = dict(num_frames=4, image_size=32, audio_samples=512, vocab_size=50)
PAPER_PARAMS_M = {"bbs": 197, "mbs": 264, "lbs": 415, "ma_medium": 155}


def _batch(b=2, frames=4, size=32, samples=512, k=2, words=5, vocab=50):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(b, 3, frames, size, size, generator=g) * 2 - 1
    audio = torch.randn(b, samples, generator=g)
    text = torch.randint(1, vocab, (b, k, words), generator=g)
    text[0, 1] = 0  # a missing caption
    text[1, 0, 3:] = 0  # padding
    return video, audio, text


@pytest.mark.parametrize("name", ["tiny", "ma_tiny", "bbs", "mbs", "lbs", "ma_medium"])
def test_every_preset_runs_forward_and_backward_on_cpu(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL_INPUT).train()
    video, audio, text = _batch()
    out = model(video=video, audio=audio, text=text)
    cv, ca, ct = model.video.embed_dim, model.audio.embed_dim, model.text.embed_dim
    assert out["video"].shape == (2, cv) and out["audio"].shape == (2, ca) and out["text"].shape == (2, 2, ct)
    assert out["video_va"].shape == (2, 512) and out["video_vt"].shape == (2, 256)
    assert out["audio_va"].shape == (2, 512) and out["text_vt"].shape == (2, 2, 256)
    assert out["text_mask"].tolist() == [[True, False], [True, True]]
    loss = sum(v.float().square().mean() for k, v in out.items() if k != "text_mask")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# Exact trainable parameter counts without the 2^16 x 300 word table (the README states them).
PARAMS = {"tiny": 2_211_564, "bbs": 193_877_292, "mbs": 260_905_772, "lbs": 412_060_460, "ma_medium": 162_990_336}


@pytest.mark.parametrize("name", ["tiny", "bbs", "mbs", "lbs", "ma_medium"])
def test_parameter_counts_are_pinned_and_within_six_percent_of_the_paper(name):
    with torch.device("meta"):
        model = create_model(name)
    params = count_parameters(model, exclude_word_table=True)
    assert params == PARAMS[name]
    assert count_parameters(model) == params + 2**16 * 300
    if name in PAPER_PARAMS_M:
        assert abs(params / 1e6 - PAPER_PARAMS_M[name]) / PAPER_PARAMS_M[name] < 0.06


def test_readme_states_the_pinned_parameter_counts():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ("bbs", "mbs", "lbs", "ma_medium"):
        assert f"| {name} | {PARAMS[name]:,} |" in readme


def test_video_vt_is_the_fac_composition_of_video_va():
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    video = torch.rand(3, 3, 8, 64, 64) * 2 - 1
    out = model(video=video)
    heads = model.heads
    va = heads.video_to_va(out["video"])
    assert torch.allclose(out["video_va"], va)
    # fine-to-coarse: the video-text embedding is computed from the video-audio one (FAC), not from the feature
    assert torch.allclose(out["video_vt"], heads.va_to_vt(out["video_va"]))
    relu, linear, bn = heads.va_to_vt
    by_hand = (torch.relu(va) @ linear.weight.T - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(out["video_vt"], by_hand, atol=1e-6)


def test_compositions_use_the_paper_sizes():
    with torch.device("meta"):
        mbs = create_model("mbs")
    assert len(mbs.video.transformer.blocks) == 12 and mbs.video.embed_dim == 1024
    assert len(mbs.audio.transformer.blocks) == 12 and mbs.audio.embed_dim == 768
    assert len(mbs.text.transformer.blocks) == 6 and mbs.text.embed_dim == 512
    assert mbs.video.transformer.blocks[0].attn.head_dim == 64
    assert mbs.video.droptoken.rate == 0.5 and mbs.video.droptoken.per_sample
    assert mbs.text.embed.weight.shape == (2**16, 300)
    assert mbs.video.pos_embed.grid == (8, 14, 14) and mbs.audio.pos_embed.length == 1200


def test_ma_model_shares_one_transformer_across_modalities():
    model = create_model("ma_tiny")
    assert model.modality_agnostic
    assert model.video.transformer is model.audio.transformer is model.text.transformer
    assert model.video.agg_token is not model.audio.agg_token  # but each modality has its own [AGG]
    assert model.video.pre_proj is not model.audio.pre_proj
    shared = {id(p) for p in model.video.transformer.parameters()}
    total = count_parameters(model)
    naive = sum(p.numel() for m in (model.video, model.audio, model.text) for p in m.parameters()) + sum(
        p.numel() for p in model.heads.parameters()
    )
    shared_n = sum(p.numel() for p in model.video.transformer.parameters())
    assert naive - total == 2 * shared_n and shared
    # a gradient step through audio changes what video sees
    video, audio, _ = _batch(frames=8, size=64, samples=12800)
    model.eval()
    before = model.encode_video(video).detach()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.encode_audio(audio).square().sum().backward()
    opt.step()
    assert not torch.allclose(model.encode_video(video), before)


def test_modality_specific_models_have_separate_transformers_and_t5_text():
    model = create_model("tiny")
    assert not model.modality_agnostic
    assert isinstance(model.text, T5TextEncoder)
    blk = model.text.transformer.blocks[0]
    assert blk.attn.scale == 1.0 and blk.attn.qkv.bias is None
    assert isinstance(blk.norm1, torch.nn.RMSNorm)


def test_any_subset_of_modalities_can_be_given():
    model = create_model("tiny").eval()
    video, audio, text = _batch(frames=8, size=64, samples=12800)
    assert set(model(audio=audio)) == {"audio", "audio_va"}
    assert set(model(text=text[:, 0])) == {"text", "text_vt", "text_mask"}
    assert model(text=text[:, 0])["text_vt"].shape == (2, 256)
    with pytest.raises(ValueError, match="at least one"):
        model()


def test_single_caption_text_equals_the_same_caption_in_a_k_stack():
    model = create_model("tiny").eval()
    _, _, text = _batch()
    stacked = model(text=text)["text"]
    single = model(text=text[:, 1])["text"]
    assert torch.allclose(stacked[:, 1], single, atol=1e-5)


def test_padding_does_not_change_text_features():
    model = create_model("tiny").eval()
    ids = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[5, 6, 7, 0, 0, 0]])
    # relative positions of the real words are unchanged, and padded keys are masked
    assert torch.allclose(model.encode_text(ids), model.encode_text(padded), atol=1e-5)


def test_clip_level_text_mask_is_broadcast_to_captions():
    model = create_model("tiny").eval()
    _, _, text = _batch()
    out = model(text=text, text_mask=torch.tensor([False, True]))
    assert out["text_mask"].tolist() == [[False, False], [True, True]]


def test_droptoken_override_reaches_video_and_audio_only():
    model = create_model("tiny", droptoken=0.25, droptoken_per_sample=False)
    drops = [m for m in model.modules() if isinstance(m, DropToken)]
    assert len(drops) == 2 and all(d.rate == 0.25 and not d.per_sample for d in drops)
    assert model.video.droptoken is drops[0] or model.video.droptoken is drops[1]


def test_eval_is_deterministic_and_training_uses_droptoken():
    torch.manual_seed(0)
    model = create_model("tiny", droptoken=0.5)
    video, _, _ = _batch(frames=8, size=64)
    model.eval()
    assert torch.equal(model.encode_video(video), model.encode_video(video))
    seen = {}
    def record(module, args, out):
        seen["n"] = args[0].shape[1]

    model.video.transformer.register_forward_hook(record)
    model.train()
    model.encode_video(video)
    assert seen["n"] == 1 + 16  # 2x4x4 = 32 tokens, half kept, plus [AGG]


def test_other_input_geometry_interpolates_positions():
    model = create_model("tiny").eval()  # built for 8 x 64^2 and 12800 samples
    out = model(video=torch.zeros(1, 3, 16, 96, 96), audio=torch.zeros(1, 25600))
    assert out["video"].shape == (1, 128) and torch.isfinite(out["video"]).all()


def test_unknown_overrides_and_bad_values_are_named():
    with pytest.raises(TypeError, match="droptokn"):
        create_model("tiny", droptokn=0.5)
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        create_model("huge")
    with pytest.raises(ValueError, match="droptoken=1.2"):
        create_model("tiny", droptoken=1.2)
    with pytest.raises(ValueError, match="audio_patch_size"):
        create_model("tiny", audio_samples=1000)
    with pytest.raises(ValueError, match="video_size='giant'"):
        create_model("tiny", video_size="giant")
    with pytest.raises(TypeError, match="word ids"):
        create_model("tiny").encode_text(torch.zeros(1, 4))


def test_list_models_names_every_preset():
    assert {"tiny", "bbs", "mbs", "lbs", "ma_medium"} <= set(list_models())


def test_fac_batchnorm_converts_to_syncbatchnorm():
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(create_model("tiny"))
    assert isinstance(model, VATT)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == 3


def test_library_does_not_import_lightning_or_hydra():
    import subprocess
    import sys

    code = ("import sys, vatt, vatt.losses, vatt.models, vatt.pretrained, vatt.tasks.linear_probe, vatt.tasks.retrieval, "
            "vatt.tasks.features, vatt.tasks.demo_probe; "
            "print([m for m in ('lightning', 'hydra', 'pytorch_lightning') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# ---------------------------------------------------------------- pretrained word vectors

VOCAB = ["<pad>", "<unk>", "red", "ball", "zebra"]


def _glove(path):
    path.write_text("red 1 2 3\nball 4 5 6\nunused 9 9 9\n")
    return path


def _w2v_text(path):
    path.write_text("3 3\nred 1 2 3\nball 4 5 6\nunused 9 9 9\n")
    return path


def _w2v_binary(path):
    rows = [("red", (1, 2, 3)), ("ball", (4, 5, 6)), ("unused", (9, 9, 9))]
    data = b"3 3\n" + b"".join(w.encode() + b" " + struct.pack("<3f", *v) + b"\n" for w, v in rows)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("writer", [_glove, _w2v_text, _w2v_binary])
def test_word_vectors_load_from_each_format_and_freeze(tmp_path, writer):
    path = writer(tmp_path / "vectors.txt")
    model = create_model("tiny", vocab_size=len(VOCAB), word_dim=3, word_vectors=path, vocab=VOCAB)
    table = model.text.embed.weight
    assert not table.requires_grad
    assert table[2].tolist() == [1, 2, 3] and table[3].tolist() == [4, 5, 6]
    assert table[0].abs().sum() == 0  # padding row
    assert table[4].abs().sum() > 0  # missing words get random vectors
    trainable = count_parameters(model)
    assert trainable == count_parameters(model, exclude_word_table=True)


def test_word_vectors_can_stay_trainable(tmp_path):
    model = create_model(
        "tiny", vocab_size=5, word_dim=3, word_vectors=_glove(tmp_path / "g.txt"), vocab=VOCAB, freeze_word_embeddings=False
    )
    assert model.text.embed.weight.requires_grad


def test_word_vector_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        create_model("tiny", vocab_size=5, word_dim=3, word_vectors=tmp_path / "missing.txt", vocab=VOCAB)
    with pytest.raises(ValueError, match="word_dim=3"):
        create_model("tiny", vocab_size=5, word_dim=4, word_vectors=_glove(tmp_path / "g.txt"), vocab=VOCAB)
    with pytest.raises(ValueError, match="vocab="):
        create_model("tiny", word_vectors=_glove(tmp_path / "g.txt"))


def test_no_module_imports_itself_back_and_eval_needs_no_lightning():
    """The import graph of ``src/vatt`` (module-level and deferred imports alike) has no cycle."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    graph: dict[str, set[str]] = {}
    for path in (src / "vatt").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
        deps = graph.setdefault(name, set())
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                if base.startswith("vatt"):
                    # `from . import x`: the submodules x (or names of the package itself)
                    deps |= {f"{base}.{a.name}" for a in node.names} if node.module is None else {base}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("vatt")}
    # a package and its own submodules import each other by design (re-exports); other cycles count
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen and not start.startswith(d + ".") and not d.startswith(start + "."):
                    seen.add(d)
                    todo.append(d)
        return seen

    graph = {m: {d for d in deps if d in graph or d.rpartition(".")[0] in graph} for m, deps in graph.items()}
    cycles = sorted(m for m in graph if m in reach(m))
    assert cycles == []
    code = "import sys, vatt.eval; print([m for m in ('lightning', 'vatt.data.pretrain') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"

"""The authors' TensorFlow checkpoints in PyTorch (``make convert``), proven against TensorFlow's own outputs.

``tests/fixtures/tf_vatt/{ms,ma,classifier}`` are small checkpoints written by real
TensorFlow with ``scripts/make_tf_fixtures.py``, which restates the authors' model (layer
types, attribute paths, forward semantics) with random values in every variable;
``outputs.npz`` holds the inputs and what TensorFlow returned for them, ``outputs_float64.npz``
the same computed in float64 (compared with our model in float64: no float32 rounding on
either side). The normal suite needs no TensorFlow: it converts the committed files and
compares.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vatt
from conftest import REPO, subprocess_env
from vatt.convert import ConversionError, convert, open_bundle, plan_conversion, write_bundle
from vatt.convert.__main__ import main as convert_main
from vatt.convert.check import CheckError, max_differences, read_reference
from vatt.convert.tf_vatt import SUFFIX, fill

FIXTURES = REPO / "tests" / "fixtures" / "tf_vatt"
OUTPUTS = ("video", "audio", "text", "video_va", "video_vt", "audio_va", "text_vt")
# outputs are of order 1-3; float32 sums in another order (the CPU threads a process gets) move the last digits
# (up to 1.9e-5 seen under make test's workers), a wrong layout or a missed norm gives errors of order 0.1
TOL = 5e-5
# both in float64, the same weights: what is left is of order 1e-8 (6.3e-8 at most, text); the bar is 1e-6
TOL64 = 1e-6


def _max_errors(model: torch.nn.Module, kind: str, reference: str = "outputs.npz") -> dict[str, float]:
    return max_differences(model, FIXTURES / kind / reference)


@pytest.mark.parametrize("kind", ["ms", "ma"])
def test_pretrained_layouts_convert_and_give_tensorflows_outputs(tmp_path, kind):
    folder = tmp_path / f"vatt_{kind}"
    result = convert(FIXTURES / kind, folder)
    assert result["kind"] == "pretrained" and result["ignored"] > 0  # optimizer slots, counters, object graph
    model = vatt.load_pretrained(folder)
    errors = _max_errors(model, kind)
    assert set(errors) == set(OUTPUTS)  # pooled features and every common-space embedding
    assert max(errors.values()) < TOL, errors
    exact = _max_errors(model, kind, "outputs_float64.npz")
    assert set(exact) == set(OUTPUTS) and max(exact.values()) < TOL64, exact
    assert next(model.parameters()).dtype == torch.float32  # the float64 check ran on a copy
    single = vatt.load_pretrained(convert(FIXTURES / kind, tmp_path / f"{kind}.safetensors")["out"])
    assert _max_errors(single, kind) == errors  # the one-file form holds the same model


def test_the_shapes_say_what_the_model_is():
    with open_bundle(FIXTURES / "ms") as b:
        plan = plan_conversion(b)
    c = plan.config
    assert c.video_size == {"depth": 2, "dim": 64, "num_heads": 1, "mlp_dim": 64}
    assert c.text_size == {"depth": 2, "dim": 64, "num_heads": 2, "mlp_dim": 64}  # 2 heads, from the T5 bias table
    assert (c.num_frames, c.image_size, c.video_patch_size) == (4, 16, (2, 4, 4))
    assert (c.audio_samples, c.audio_patch_size, c.vocab_size, c.word_dim) == (1280, 128, 20, 32)
    assert (c.va_dim, c.vt_dim, c.t5_mlp_norm, c.position_resize) == (32, 16, "layer", "spline")
    with open_bundle(FIXTURES / "ma") as b:
        ma = plan_conversion(b).config
    assert ma.shared_size == {"depth": 1, "dim": 64, "num_heads": 1, "mlp_dim": 64} and ma.post_proj_dim == 64
    assert ma.max_words == 16


def test_a_fine_tuned_classifier_converts_to_tower_and_head(tmp_path):
    result = convert(FIXTURES / "classifier", tmp_path / "k5", classes=_names(tmp_path, 5))
    assert (result["kind"], result["modality"], result["num_classes"]) == ("classifier", "video", 5)
    model = vatt.load_classifier(tmp_path / "k5")
    assert model.classes == [f"class {i}" for i in range(5)] and model.head.dropout.p == 0.5
    errors = _max_errors(model, "classifier")
    assert list(errors) == ["logits"] and errors["logits"] < TOL, errors
    assert _max_errors(model, "classifier", "outputs_float64.npz")["logits"] < TOL64
    with pytest.raises(vatt.pretrained.CheckpointError, match="is a fine-tuned video classifier.*load_classifier"):
        vatt.load_pretrained(tmp_path / "k5")


def _names(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("".join(f"class {i}\n" for i in range(n)))
    return path


def test_the_old_text_norm_default_does_not_fit_the_authors_weights():
    """Without its offset (the previous default) the LayerNorm before T5's feed-forward layer leaves tensors over."""
    with open_bundle(FIXTURES / "ms") as b:
        plan = plan_conversion(b)
        plan.config = dataclasses.replace(plan.config, t5_mlp_norm="layer_nobias")
        model = vatt.models.build_vatt(plan.config)
        with pytest.raises(ConversionError, match="model has no tensor text.transformer.blocks.0.norm2.bias"):
            fill(model, plan, b)
        plan.sources = [s for s in plan.sources if not s.target.endswith("norm2.bias") or "text" not in s.target]
        plan.unused = []
        model.load_state_dict(fill(model, plan, b))  # everything else loads ...
    errors = _max_errors(model.eval(), "ms")
    assert errors["text"] > 100 * TOL and errors["video"] < TOL  # ... and the text outputs are wrong
    exact = _max_errors(model, "ms", "outputs_float64.npz")
    assert exact["text"] > 0.1 and exact["text_vt"] > 0.1 and exact["video"] < TOL64


def _copy_with(tmp_path: Path, kind: str, edit) -> Path:
    """The fixture rewritten with ``edit(dict of tensors)`` applied (rename, drop, add)."""
    with open_bundle(FIXTURES / kind) as b:
        tensors = {k: b.read(k) for k in b.keys() if k.endswith(SUFFIX)}
    edit(tensors)
    out = tmp_path / "edited" / "ckpt-7"
    out.parent.mkdir(parents=True)
    write_bundle(out, tensors)
    return out


def test_renamed_missing_and_extra_tensors_are_named(tmp_path):
    q = "model/layer_with_weights-0/_base_layer/vid_backbone/_base/tx/layers/1/mha/q/kernel" + SUFFIX

    def rename(t):
        t[q.replace("/q/", "/query/")] = t.pop(q)

    with pytest.raises(ConversionError) as e:
        convert(_copy_with(tmp_path / "a", "ms", rename), tmp_path / "a.safetensors")
    assert "mha/q/kernel" in str(e.value) and "mha/query/kernel" in str(e.value)  # what is missing and what is over

    with pytest.raises(ConversionError, match=r"needs \['.*tx/layers/1/mha/q/kernel'\]"):
        convert(_copy_with(tmp_path / "b", "ms", lambda t: t.pop(q)), tmp_path / "b.safetensors")

    def extra(t):
        t["model/layer_with_weights-0/_base_layer/vid_backbone/_base/mask_embedding" + SUFFIX] = np.zeros(64, np.float32)

    with pytest.raises(ConversionError, match=r"1 checkpoint tensor\(s\) with no place in the model: .*mask_embedding"):
        convert(_copy_with(tmp_path / "c", "ms", extra), tmp_path / "c.safetensors")


def test_an_outer_prefix_that_differs_does_not_matter(tmp_path):
    def reprefix(t):
        for k in list(t):
            t[k.replace("model/layer_with_weights-0/", "checkpoint/model/layer_with_weights-1/")] = t.pop(k)

    out = convert(_copy_with(tmp_path, "ms", reprefix), tmp_path / "m.safetensors")["out"]
    assert max(_max_errors(vatt.load_pretrained(out), "ms").values()) < TOL


def test_not_a_vatt_checkpoint_is_an_error_naming_what_it_looks_for(tmp_path):
    (tmp_path / "other").mkdir()
    write_bundle(tmp_path / "other" / "ckpt-1", {"model/dense/kernel" + SUFFIX: np.zeros((2, 2), np.float32)})
    with pytest.raises(ConversionError, match="not a VATT checkpoint.*voxel_to_patch/kernel.*found: none"):
        convert(tmp_path / "other", tmp_path / "x.safetensors")


@pytest.mark.slow
def test_make_convert_lists_converts_and_reports_errors_in_one_line(tmp_path):
    listed = subprocess.run(["make", "-s", "convert", f"ckpt={FIXTURES / 'ms'}", "list=1"], cwd=REPO,
                            env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert "tx/layers/0/mha/q/kernel  [64, 64]  ->  video.transformer.blocks.0.attn.qkv.weight" in listed.stdout
    assert "optimizer/iter  []  ->  (ignored: not a weight)" in listed.stdout and "UNUSED" not in listed.stdout
    vocab = tmp_path / "howto100m_en.txt"  # the authors' format: "<id> <word>" per line, <pad> = 0
    vocab.write_text("".join(f"{i} {w}\n" for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *"abcdefghijklmnop"])))
    made = subprocess.run(["make", "-s", "convert", f"ckpt={FIXTURES / 'ms'}", f"out={tmp_path / 'vatt_ms'}",
                           f"vocab={vocab}", f"check={FIXTURES / 'ms' / 'outputs.npz'}"], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "pretrained VATT: 92 tensors ->" in made.stderr and "peak memory" in made.stderr
    assert "check: every output within 0.0001" in made.stderr and "  text_vt   max |difference| " in made.stderr
    model = vatt.load_pretrained(tmp_path / "vatt_ms")
    assert model.vocab[:4] == ["[PAD]", "<bos>", "<eos>", "[UNK]"] and len(model.vocab) == 20
    assert model.punctuation == "remove"
    (tmp_path / "cut").mkdir()
    shutil.copy(FIXTURES / "ms" / "ckpt-7.index", tmp_path / "cut" / "ckpt-7.index")  # the data file left behind
    bad = subprocess.run(["make", "-s", "convert", f"ckpt={tmp_path / 'cut'}", f"out={tmp_path / 'x'}"], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "vatt.convert: error:" in bad.stderr and "ckpt-7.data-00000-of-00001" in bad.stderr


def test_a_converted_folder_is_a_hub_model_with_its_card(tmp_path):
    src = tmp_path / "tx_fac_mbs"  # named as the authors' release names it
    shutil.copytree(FIXTURES / "ms", src)
    folder = tmp_path / "vatt_mbs"
    convert(src, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    record = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    from vatt.checkpoint import file_sha256

    assert record["weights_sha256"] == file_sha256(folder / "model.safetensors") in card
    assert record["source_sha256"] == file_sha256(src / "ckpt-7.data-00000-of-00001") in card
    assert "make convert ckpt=tx_fac_mbs/ckpt-500000" in card and "UCF101 linear probe top-1 (paper Table 5) | 87.6" in card
    assert "licence" in card and "Intended use" in card


def test_load_pretrained_from_the_hub_reads_the_local_cache_offline(tmp_path):
    folder = tmp_path / "vatt_ms"
    convert(FIXTURES / "ms", folder)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--vatt-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    code = ("import sys, json, torch, vatt\n"
            "m = vatt.load_pretrained('hf://someone/vatt-tiny')\n"
            "print(json.dumps({'dim': m.config.video_size['dim'], 'sum': float(sum(p.double().sum() for p in m.parameters()))}))\n")
    env = subprocess_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    local = vatt.load_pretrained(folder)
    assert got == {"dim": 64, "sum": pytest.approx(float(sum(p.double().sum() for p in local.parameters())))}
    missing = subprocess.run([sys.executable, "-c", "import vatt; vatt.load_pretrained('hf://someone/elsewhere')"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "not in the local cache and the hub cannot be reached" in missing.stderr


def test_the_official_checkpoints_are_listed_with_addresses_and_what_they_become():
    entries = vatt.list_pretrained()
    pretrained = [e for e in entries if e["kind"] == "pretrained"]
    assert [e["name"] for e in pretrained] == ["tx_fac_bbs", "tx_fac_mbs", "tx_fac_lbs", "ut_fac_medium"]
    assert pretrained[1]["files"]["index"] == ("https://storage.googleapis.com/tf_model_garden/vision/vatt/pretrain/"
                                               "tx_fac_mbs/ckpt-500000.index")
    classifiers = {e["name"]: e for e in entries if e["kind"] == "classifier"}
    assert len(classifiers) == 15 and classifiers["vit_large_k400_modality_specific"]["reported"]["top-1"] == 82.1
    audio = classifiers["wat_base_audioset_modality_specific"]
    assert audio["num_classes"] == 527 and audio["reported"] == {"mAP": 39.4, "AUC": 97.1, "d-prime": 2.895}
    assert audio["files"]["data"].endswith("finetune/wat_base/audioset_modality_specific_pretrain/"
                                           "ckpt-50000.data-00000-of-00001")


@pytest.mark.tf
def test_the_fixture_script_writes_what_the_committed_fixtures_hold(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_tf_fixtures.py"), "--out", str(tmp_path)], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
    for kind in ("ms", "ma", "classifier"):
        assert json.loads((tmp_path / kind / "variables.json").read_text()) == \
            json.loads((FIXTURES / kind / "variables.json").read_text())
        # float32 outputs move with the CPU TensorFlow runs on (2.2e-6 seen between two machines); float64 ones do not
        for reference, atol in (("outputs.npz", 1e-5), ("outputs_float64.npz", 1e-10)):
            fresh, committed = np.load(tmp_path / kind / reference), np.load(FIXTURES / kind / reference)
            assert sorted(fresh.files) == sorted(committed.files)
            for name in fresh.files:
                np.testing.assert_allclose(fresh[name], committed[name], atol=atol)


@pytest.mark.parametrize("name", ["tiny", "ma_tiny"])
def test_a_checkpoint_in_the_release_layout_converts_back_to_the_same_model(tmp_path, name):
    """Our model -> the authors' key layout -> conversion: the config read off the shapes and every tensor agree."""
    from vatt.convert.tf_vatt import release_layout
    from vatt.models.vatt import build_vatt
    from vatt.models.vatt import VATTConfig

    cfg = VATTConfig.from_preset(name, vocab_size=40)
    layout = release_layout(build_vatt(cfg), cfg)
    rng = np.random.default_rng(0)
    tensors = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in layout.items()}
    for k in tensors:  # BatchNorm variances must be positive
        if "moving_variance" in k:
            tensors[k] = np.abs(tensors[k]) + 0.5
    (tmp_path / "ckpt").mkdir()
    write_bundle(tmp_path / "ckpt" / "ckpt-1", tensors)
    model = vatt.load_pretrained(convert(tmp_path / "ckpt", tmp_path / "m.safetensors")["out"])
    got = model.config
    assert dataclasses.replace(got, video_size=cfg.video_size, audio_size=cfg.audio_size, text_size=cfg.text_size,
                               shared_size=cfg.shared_size) == cfg
    q = "model/layer_with_weights-0/_base_layer/" + ("vid_backbone/_base/tx" if name == "tiny"
                                                     else "unified_backbone/unified_transformer/tx")
    qkv = model.video.transformer.blocks[0].attn.qkv.weight.detach().numpy()
    kernels = [tensors[f"{q}/layers/0/mha/{p}/kernel{SUFFIX}"] for p in "qkv"]
    assert np.array_equal(qkv, np.concatenate([k.T for k in kernels]))


# --------------------------------------------------------------------------- --check: a converted model against TF's outputs


def _reference(tmp_path: Path, kind: str = "ms", **edits) -> Path:
    """The fixture's outputs.npz with arrays replaced (None: removed)."""
    with np.load(FIXTURES / kind / "outputs.npz") as d:
        arrays = {k: d[k] for k in d.files}
    for k, v in edits.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    path = tmp_path / f"{kind}_edited.npz"
    np.savez(path, **arrays)
    return path


def test_check_prints_each_outputs_difference_and_passes_the_fixture(tmp_path, capsys):
    convert_main(["--ckpt", str(FIXTURES / "ms"), "--out", str(tmp_path / "m"), "--check",
                  str(FIXTURES / "ms" / "outputs.npz")])
    err = capsys.readouterr().err
    assert "check: every output within 0.0001" in err
    lines = [ln.split() for ln in err.splitlines() if "max |difference|" in ln]
    assert [ln[0] for ln in lines] == list(OUTPUTS)  # every output of the reference, in its order
    assert all(float(ln[3]) < TOL for ln in lines)


def test_check_fails_with_status_1_naming_the_output_that_differs(tmp_path, capsys):
    with np.load(FIXTURES / "ms" / "outputs.npz") as d:
        text = d["text"].copy()
    text[1, 3] += 2e-3  # one value of one output off by 2e-3
    ref = _reference(tmp_path, text=text)
    with pytest.raises(SystemExit) as stop:
        convert_main(["--ckpt", str(FIXTURES / "ms"), "--out", str(tmp_path / "m"), "--check", str(ref)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "check: 1 of 7 outputs differ by more than 0.0001" in err
    (line,) = [ln for ln in err.splitlines() if ln.split()[:1] == ["text"]]
    assert float(line.split()[3]) == pytest.approx(2e-3, rel=0.05) and line.endswith("> 0.0001")
    # a looser tolerance accepts it
    convert_main(["--ckpt", str(FIXTURES / "ms"), "--out", str(tmp_path / "m2"), "--check", str(ref), "--tol", "0.01"])
    assert "check: every output within 0.01" in capsys.readouterr().err


def test_check_of_a_classifier_compares_its_logits(tmp_path):
    model = vatt.load_classifier(convert(FIXTURES / "classifier", tmp_path / "k5")["out"])
    errors = max_differences(model, FIXTURES / "classifier" / "outputs.npz")
    assert list(errors) == ["logits"] and errors["logits"] < TOL
    with pytest.raises(CheckError, match=r"\['audio', .*'video_vt'\] are not outputs of a video classifier"):
        max_differences(model, FIXTURES / "ms" / "outputs.npz")


@pytest.mark.parametrize("edit, message", [
    ({"extra": np.zeros(2)}, r"unknown keys \['extra'\]; inputs are"),
    ({"input_video": np.zeros((2, 4, 16, 16), np.float32)}, r"input_video has shape \[2, 4, 16, 16\]; expected"),
    ({"input_audio": np.zeros((2, 1280, 2), np.float32)}, r"input_audio has shape \[2, 1280, 2\]; expected"),
    ({"input_text": np.zeros((2, 16), np.float32)}, "input_text is float32; expected integer word ids"),
    ({k: None for k in OUTPUTS}, "no outputs to compare"),
])
def test_a_reference_that_cannot_be_compared_is_named_before_converting(tmp_path, edit, message, capsys):
    ref = _reference(tmp_path, **edit)
    with pytest.raises(CheckError, match=message):
        read_reference(ref)
    with pytest.raises(SystemExit):  # the command refuses it before it converts anything
        convert_main(["--ckpt", str(FIXTURES / "ms"), "--out", str(tmp_path / "never"), "--check", str(ref)])
    assert not (tmp_path / "never").exists() and f"check={ref}" in capsys.readouterr().err


def test_a_missing_input_a_wrong_shape_or_a_non_npz_file_is_named(tmp_path):
    model = vatt.load_pretrained(convert(FIXTURES / "ms", tmp_path / "m")["out"])
    with pytest.raises(CheckError, match=r"no \['input_text'\]; the model needs them"):
        max_differences(model, _reference(tmp_path, input_text=None))
    with pytest.raises(CheckError, match=r"video_va has shape \[2, 8\], the converted model gives \[2, 32\]"):
        max_differences(model, _reference(tmp_path, video_va=np.zeros((2, 8), np.float32)))
    (tmp_path / "notes.npz").write_text("not an archive")
    with pytest.raises(CheckError, match="notes.npz: not a readable .npz file"):
        read_reference(tmp_path / "notes.npz")
    with pytest.raises(CheckError, match="nothing.npz: no such file"):
        read_reference(tmp_path / "nothing.npz")

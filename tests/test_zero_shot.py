"""Zero-shot classification (vatt.tasks.zero_shot, task=zero_shot): names, prompts, scores, metrics, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import eval_cfg, make_ucf101
from vatt.data.tokenizer import WordTokenizer
from vatt.tasks import zero_shot as zs


@pytest.mark.parametrize("official, readable", [
    # UCF101: CamelCase
    ("ApplyEyeMakeup", "apply eye makeup"), ("YoYo", "yo yo"), ("TaiChi", "tai chi"), ("BlowDryHair", "blow dry hair"),
    ("PushUps", "push ups"), ("CleanAndJerk", "clean and jerk"),
    # acronyms stay together
    ("TVShow", "tv show"),
    # HMDB51: lower case with underscores
    ("brush_hair", "brush hair"), ("shake_hands", "shake hands"), ("ride_bike", "ride bike"),
    # Kinetics: words already, sometimes with a parenthesis
    ("abseiling", "abseiling"), ("passing American football (in game)", "passing american football (in game)"),
    ("playing  guitar", "playing guitar"),
    # ESC-50: underscores
    ("chirping_birds", "chirping birds"), ("door_wood_knock", "door wood knock"),
    # Moments in Time: plus signs
    ("adult+female+singing", "adult female singing"),
    # AudioSet display names
    ("Male speech, man speaking", "male speech, man speaking"),
])
def test_official_class_names_become_words(official, readable):
    assert zs.readable_name(official) == readable


def test_names_come_from_a_file_then_the_datasets_fixes_then_the_rules(tmp_path):
    official = ["ApplyEyeMakeup", "Skijet", "Archery"]
    assert zs.class_names(official, "ucf101") == ["apply eye makeup", "jet skiing", "archery"]
    partial = tmp_path / "names.tsv"
    partial.write_text("# renames\nArchery\tshooting arrows with a bow\n")
    assert zs.class_names(official, "ucf101", partial) == ["apply eye makeup", "jet skiing", "shooting arrows with a bow"]
    full = tmp_path / "names.txt"
    full.write_text("make up\njet ski\nbow\n")
    assert zs.class_names(official, "ucf101", full) == ["make up", "jet ski", "bow"]
    full.write_text("make up\njet ski\n")
    with pytest.raises(ValueError, match=r"has 2 names for 3 classes"):
        zs.class_names(official, "ucf101", full)
    partial.write_text("Bowling\tbowling\n")
    with pytest.raises(ValueError, match=r"line 1: 'Bowling' is not a class"):
        zs.class_names(official, "ucf101", partial)
    with pytest.raises(FileNotFoundError, match=r"eval.class_names=.*no such file"):
        zs.class_names(official, "ucf101", tmp_path / "absent.txt")


def test_default_templates_follow_the_kind_of_dataset():
    assert zs.default_templates("kinetics400", "video") == zs.TEMPLATES["action"]
    assert zs.default_templates("esc50", "audio") == zs.TEMPLATES["sound"]
    assert zs.default_templates("demo", "video", "shape") == zs.TEMPLATES["demo_shape"]
    assert zs.default_templates("my_set", "audio") == zs.TEMPLATES["sound"]  # a dataset of one's own: by modality
    assert zs.prompts(["archery"], ["a video of {}", "{}"]) == [["a video of archery", "archery"]]
    with pytest.raises(ValueError, match=r"exactly one '\{\}'"):
        zs.prompts(["archery"], ["a video of archery"])


def test_class_embeddings_average_the_normalised_prompt_embeddings():
    from vatt.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=20).eval()
    tok = WordTokenizer.from_words(["a", "video", "of", "red", "blue", "the", "sound"])
    texts = [["a video of red", "red", "the sound of red"], ["a video of blue", "blue", "the sound of blue"]]
    got = zs.class_embeddings(model, tok, texts)
    with torch.no_grad():
        for c, class_prompts in enumerate(texts):
            each = [F.normalize(model.encode_text(tok([t], 16), space="vt")[0], dim=-1) for t in class_prompts]
            expected = F.normalize(sum(each) / len(each), dim=-1)
            torch.testing.assert_close(got[c], expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_scores_combine_windows_both_ways_and_metrics_are_exact():
    classes = torch.eye(3)
    # clip 0: both windows on class 0; clip 1: windows on classes 1 and 2, the class-2 window longer, so the mean
    # embedding points to class 2 while the mean similarity ties and argmax takes the first (class 1)
    windows = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0]], [[0, 1.0, 0], [0, 0, 3.0]]])
    by_embedding = zs.zero_shot_scores(classes, windows, "mean_embedding")
    by_similarity = zs.zero_shot_scores(classes, windows, "mean_similarity")
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(by_embedding, torch.tensor([[1.0, 0, 0], [0, s, s]]))
    torch.testing.assert_close(by_similarity, torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]]))
    m = zs.zero_shot_metrics(torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.7], [0.0, 0.6, 0.4]]),
                             torch.tensor([0, 1, 1]), multilabel=False)
    assert m["top1"] == pytest.approx(2 / 3) and m["top5"] == 1.0 and m["chance_top1"] == pytest.approx(2 / 3)
    ml = zs.zero_shot_metrics(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.7]]),
                              torch.tensor([[1, 0], [0, 1], [1, 1]]), multilabel=True)
    # class 0: positives at 0.9 and 0.1 around a negative at 0.2, AP = (1 + 2/3) / 2; class 1: both above, AP = 1
    assert ml["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1.0) / 2) and ml["chance_mAP"] == pytest.approx(2 / 3)


def test_unknown_class_words_are_found():
    tok = WordTokenizer.from_words(["archery", "bowling"])
    assert zs.unknown_names(["archery", "apply eye makeup", "bowling alley"], tok) == ["apply eye makeup"]


# --------------------------------------------------------------------------- end to end on a UCF101 layout

CLASS_WORDS = ("apply", "archery", "bowling")  # the first word of each readable class name of make_ucf101


class Agreeing(torch.nn.Module):
    """A stand-in VATT whose text and video embeddings agree by construction.

    A clip's vt embedding is the one-hot of its dominant colour channel (make_ucf101 paints class c's clips in
    channel c); a text's is the one-hot of the class word it contains, through ``mapping``.
    """

    def __init__(self, tokenizer: WordTokenizer, mapping: dict[str, int]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device
        self.input = {"num_frames": 8, "image_size": 32, "fps": 10.0, "sample_rate": 16000, "max_words": 16}
        self.ids = {tokenizer.tokenizer.token_to_id(w): mapping[w] for w in CLASS_WORDS}

    def encode_video(self, video, space=None, normalize=False):
        return F.one_hot(video.mean(dim=(2, 3, 4)).argmax(-1), 4).float()

    def encode_text(self, ids, space=None, normalize=False):
        out = torch.zeros(*ids.shape[:-1], 4)
        for i, row in enumerate(ids.reshape(-1, ids.shape[-1]).tolist()):
            out.view(-1, 4)[i, next(self.ids[t] for t in row if t in self.ids)] = 1.0
        return out


@pytest.mark.parametrize("mapping, top1", [
    ({"apply": 0, "archery": 1, "bowling": 2}, 1.0),  # every class's text agrees with its clips
    ({"apply": 1, "archery": 0, "bowling": 2}, 1 / 3),  # two classes swapped: only bowling is right
])
def test_zero_shot_gives_the_expected_top1_when_text_and_video_agree(tmp_path, mapping, top1):
    from vatt.eval import downstream_data, run_zero_shot, zero_shot_classes

    root = make_ucf101(tmp_path / "ucf101")
    cfg = eval_cfg(tmp_path, ["task=zero_shot", "data=ucf101", f"data.root={root}", "eval.cache_dir=null",
                              "data.num_windows=2"])
    data = downstream_data(cfg)
    names, texts = zero_shot_classes(cfg, data)
    assert names == ["apply eye makeup", "archery", "bowling"] and texts[1][0] == "a video of archery"
    tok = WordTokenizer.build([t for c in texts for t in c])
    metrics, record = run_zero_shot(cfg, Agreeing(tok, mapping), data, tok, names, texts)
    for k in (1, 2, 3):
        assert metrics[f"split{k}/top1"] == pytest.approx(top1) and metrics[f"split{k}/num_test"] == 3
    assert metrics["test/top1"] == pytest.approx(top1) and metrics["test/top5"] == 1.0
    assert metrics["test/chance_top1"] == pytest.approx(1 / 3) and metrics["num_skipped"] == 0
    assert record["views"]["windows"] == 2 and record["views"]["crops"] == 1 and record["feature"] == "vt"
    assert [p.split for p in record["parts"]] == ["split1", "split2", "split3"]


def test_audio_reaches_the_video_text_space_through_the_va_to_vt_projection():
    from vatt.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny", vocab_size=10).eval()
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        vt = model.encode_audio(wave, space="vt")
        expected = model.heads.va_to_vt(model.heads.audio(model.encode_audio(wave)))
    assert vt.shape == (2, 256)
    torch.testing.assert_close(vt, expected)
    with pytest.raises(ValueError, match=r"space='xy'"):
        model.encode_audio(wave, space="xy")


def test_templates_from_the_command_line_are_checked(tmp_path):
    from vatt.config import check_eval_config
    from vatt.errors import UserError

    check_eval_config(eval_cfg(tmp_path, ["task=zero_shot", 'eval.templates=["a {} shape","the {} one"]']))
    with pytest.raises(UserError, match=r"eval.templates=\['shape'\] must be a list of texts with one \{\} each"):
        check_eval_config(eval_cfg(tmp_path, ["task=zero_shot", "eval.templates=[shape]"]))


def test_a_retrieval_set_has_no_classes_to_classify(tmp_path):
    from conftest import make_msrvtt
    from vatt.errors import UserError
    from vatt.eval import downstream_data, zero_shot_classes

    root = make_msrvtt(tmp_path / "msrvtt")
    cfg = eval_cfg(tmp_path, ["task=zero_shot", "data=msrvtt", f"data.root={root}"])
    with pytest.raises(UserError, match=r"msrvtt has none \(its captions are for task=retrieval\)"):
        zero_shot_classes(cfg, downstream_data(cfg))

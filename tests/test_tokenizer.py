"""Word-level caption tokenizer."""

import pytest
import torch

from vatt.data.tokenizer import WordTokenizer


def test_vocabulary_is_lowercased_words_with_pad_zero_and_unk():
    tok = WordTokenizer.build(["A red circle moves LEFT.", "the red ball, going left!"])
    words = tok.words
    assert words[:2] == ["[PAD]", "[UNK]"]
    assert {"red", "left", "circle", "ball", "the", "a", "going", "moves"} == set(words[2:])
    assert words[2:4] == sorted(words[2:4]) and {"red", "left"} == set(words[2:4])  # most frequent first


def test_encoding_pads_truncates_and_marks_unknown_words():
    tok = WordTokenizer.build(["red circle moves left"])
    ids = tok(["Red circle, moves UP", ""], max_words=6)
    v = tok.tokenizer.get_vocab()
    assert ids.dtype == torch.long and ids.shape == (2, 6)
    assert ids[0].tolist() == [v["red"], v["circle"], v["moves"], 1, 0, 0]
    assert ids[1].tolist() == [0] * 6
    assert tok(["red red red red red"], max_words=3).tolist() == [[v["red"]] * 3]


def test_vocabulary_is_capped():
    tok = WordTokenizer.build([" ".join(f"w{i}" for i in range(100))], max_words=10)
    assert tok.vocab_size == 10


def test_save_and_reload_and_word_list_files(tmp_path):
    tok = WordTokenizer.build(["blue square moves up"])
    tok.save(tmp_path / "tokenizer.json")
    again = WordTokenizer.from_file(tmp_path / "tokenizer.json")
    assert torch.equal(again(["blue up"]), tok(["blue up"]))
    (tmp_path / "words.txt").write_text("Blue\nsquare\n\nup\n")
    listed = WordTokenizer.from_file(tmp_path / "words.txt")
    assert listed.words == ["[PAD]", "[UNK]", "blue", "square", "up"]
    assert listed(["blue square moves"], 4).tolist() == [[2, 3, 1, 0]]
    with pytest.raises(FileNotFoundError, match="data.vocab"):
        WordTokenizer.from_file(tmp_path / "nope.json")

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


@pytest.mark.parametrize("caption, words", [
    ("Don't cut the X-ray, please!", ["dont", "cut", "the", "xray", "please"]),  # the authors' rule: deleted
    ("add 1/2 cup (about 100g) of sugar...", ["add", "12", "cup", "about", "100g", "of", "sugar"]),
    ("  tabs\tand   spaces ", ["tabs", "and", "spaces"]),
])
def test_captions_lose_their_punctuation_as_in_the_authors_tokenizer(caption, words):
    tok = WordTokenizer.from_words(words)
    assert tok.punctuation == "remove"
    v = tok.tokenizer.get_vocab()
    assert tok([caption], 8)[0, : len(words)].tolist() == [v[w] for w in words]


def test_the_earlier_split_rule_is_a_switch_and_a_saved_tokenizer_keeps_its_rule(tmp_path):
    split = WordTokenizer.build(["Don't cut the X-ray"], punctuation="split")
    assert set(split.words[2:]) == {"don't", "cut", "the", "x", "ray"} and split.punctuation == "split"
    split.save(tmp_path / "tokenizer.json")
    assert WordTokenizer.from_file(tmp_path / "tokenizer.json").punctuation == "split"
    with pytest.raises(ValueError, match="data.punctuation='keep'"):
        WordTokenizer.build(["a"], punctuation="keep")


def test_the_authors_numbered_vocabulary_file(tmp_path):
    """howto100m_en.txt: "<id> <word>" per line; <pad> = 0 (the model pads with 0), <unk> keeps its id."""
    (tmp_path / "howto100m_en.txt").write_text("2 <eos>\n0 <pad>\n1 <bos>\n3 <unk>\n4 onion\n5 stir\n")
    tok = WordTokenizer.from_file(tmp_path / "howto100m_en.txt")
    assert tok.words == ["[PAD]", "<bos>", "<eos>", "[UNK]", "onion", "stir"]
    assert tok(["Stir the onion!"], 4).tolist() == [[5, 3, 4, 0]]
    (tmp_path / "gap.txt").write_text("0 <pad>\n2 onion\n")
    with pytest.raises(ValueError, match="gaps; ids must run 0..1"):
        WordTokenizer.from_file(tmp_path / "gap.txt")
    (tmp_path / "nopad.txt").write_text("0 onion\n1 <pad>\n")
    with pytest.raises(ValueError, match="gives id 0 to 'onion'.*padding token"):
        WordTokenizer.from_file(tmp_path / "nopad.txt")

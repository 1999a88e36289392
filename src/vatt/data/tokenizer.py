"""Word-level caption tokenizer (Hugging Face ``tokenizers``).

VATT reads captions as words, at most 16, id 0 = padding; words outside the
vocabulary map to the unknown-word id ([UNK], 1 in a built vocabulary). How a
caption becomes words is ``punctuation``:

- ``"remove"`` (default; the authors' DMVR ``WordTokenizer``): ASCII punctuation is
  deleted, apostrophes and hyphens included ("don't" -> "dont", "x-ray" -> "xray"),
  the text lower-cased and split at whitespace;
- ``"split"``: Unicode NFKC, lower-case, every character that is not a letter,
  digit, whitespace or apostrophe becomes a space ("x-ray" -> "x", "ray"): the rule
  of vocabularies built by earlier versions of this project (their ``tokenizer.json``
  keeps it).

The vocabulary is built from the training captions (capped at 2**16 words, most
frequent first) and saved as ``tokenizer.json`` next to the data, or given as a
``tokenizer.json`` or a word list: one word per line (line = id), or ``id word`` per
line as the authors' ``howto100m_en.txt``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"
# how word lists spell their padding and unknown-word entries
PAD_MARKERS = ("[pad]", "<pad>", "pad", "<blank>")
UNK_MARKERS = ("[unk]", "<unk>", "unk", "<oov>")


PUNCTUATION = ("remove", "split")
_ASCII_PUNCT = r"[!-/:-@\[-`{-~]"  # RE2's [[:punct:]]: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
_SPLIT = r"[^\w\s']"


def _pipeline(tok: Tokenizer, punctuation: str = "remove") -> Tokenizer:
    if punctuation == "remove":
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex(_ASCII_PUNCT), ""), normalizers.Lowercase()])
    elif punctuation == "split":
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(_SPLIT), " ")])
    else:
        raise ValueError(f"data.punctuation={punctuation!r}: choose one of {PUNCTUATION}")
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


class WordTokenizer:
    """Words -> ids ``[N, max_words]`` (int64, 0-padded)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        if tokenizer.token_to_id(PAD) != 0 or tokenizer.token_to_id(UNK) is None:
            raise ValueError(f"tokenizer must map {PAD} to id 0 and contain {UNK}")
        self.unk_id = tokenizer.token_to_id(UNK)

    @property
    def punctuation(self) -> str:
        """The rule this tokenizer splits captions with (see the module docstring)."""
        return "split" if "NFKC" in self.tokenizer.to_str() else "remove"

    @classmethod
    def build(cls, texts: Iterable[str], max_words: int = 2**16, punctuation: str = "remove") -> WordTokenizer:
        """Vocabulary of the most frequent words in ``texts`` (``max_words`` includes [PAD] and [UNK])."""
        tok = _pipeline(Tokenizer(models.WordLevel(unk_token=UNK)), punctuation)
        trainer = trainers.WordLevelTrainer(vocab_size=max_words, special_tokens=[PAD, UNK], show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_words(cls, words: Sequence[str], punctuation: str = "remove") -> WordTokenizer:
        vocab = {PAD: 0, UNK: 1}
        for w in words:
            w = w.strip().lower()
            if w and w not in vocab:
                vocab[w] = len(vocab)
        return cls(_pipeline(Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK)), punctuation))

    @classmethod
    def from_file(cls, path: str | Path, punctuation: str = "remove") -> WordTokenizer:
        """A saved ``tokenizer.json`` (it keeps its own rule), or a word list split by ``punctuation``.

        A word list has one word per line (line *i* = id *i*), or ``<id> <word>`` per line
        (the authors' ``howto100m_en.txt``: ids in any order, each once, from 0). A list
        whose id 0 is a padding token (``[PAD]``, ``<pad>``, ``PAD``...) is taken as it is,
        its unknown-word token (``[UNK]``, ``<unk>``...) keeping its id, or appended when it
        has none; a one-word-per-line list without a padding line gets ``[PAD]`` = 0 and
        ``[UNK]`` = 1 in front (word *i* = id *i* + 2).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"data.vocab: no file at {path}; give a tokenizer.json or a one-word-per-line file")
        if path.suffix == ".json":
            return cls(Tokenizer.from_file(str(path)))
        lines = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        numbered = bool(lines) and all(len(p := ln.split()) == 2 and p[0].isdigit() for ln in lines)
        if numbered:
            ids = {}
            for n, line in enumerate(lines):
                i, word = line.split()
                if int(i) in ids:
                    raise ValueError(f"data.vocab: {path} line {n + 1} repeats id {i}")
                ids[int(i)] = word
            if sorted(ids) != list(range(len(ids))):
                raise ValueError(f"data.vocab: {path} numbers its words with gaps; ids must run 0..{len(ids) - 1}")
            lines = [ids[i] for i in range(len(ids))]
            if lines[0].lower() not in PAD_MARKERS:
                raise ValueError(f"data.vocab: {path} gives id 0 to {lines[0]!r}; the model pads with id 0, so id 0 "
                                 "must be the padding token (<pad>)")
        if not lines or lines[0].lower() not in PAD_MARKERS:
            return cls.from_words([w for w in lines if w and w not in (PAD, UNK)], punctuation)
        vocab: dict[str, int] = {}
        for i, word in enumerate(lines):
            key = PAD if i == 0 else UNK if word.lower() in UNK_MARKERS else word.lower()
            if not word or key in vocab:
                raise ValueError(f"data.vocab: {path} line {i + 1} is {'empty' if not word else f'a repeat of {word!r}'};"
                                 " a word list needs one distinct word per line (line order = word id)")
            vocab[key] = i
        vocab.setdefault(UNK, len(vocab))
        return cls.from_vocab(sorted(vocab, key=vocab.__getitem__), punctuation)

    @classmethod
    def from_vocab(cls, words: Sequence[str], punctuation: str = "remove") -> WordTokenizer:
        """The tokenizer whose ``words`` are exactly ``words`` (index = id; ``[PAD]`` first, ``[UNK]`` somewhere)."""
        vocab = {w: i for i, w in enumerate(words)}
        if len(vocab) != len(words):
            raise ValueError("vocabulary words must be distinct")
        return cls(_pipeline(Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK)), punctuation))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def words(self) -> list[str]:
        """The vocabulary in id order (index 0 = [PAD]); what ``create_model(vocab=...)`` expects."""
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def __call__(self, texts: Sequence[str], max_words: int = 16) -> torch.Tensor:
        out = torch.zeros(len(texts), max_words, dtype=torch.long)
        for i, enc in enumerate(self.tokenizer.encode_batch(list(texts))):
            ids = enc.ids[:max_words]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

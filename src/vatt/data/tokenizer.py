"""Word-level caption tokenizer (Hugging Face ``tokenizers``).

VATT reads captions as words: lower-cased, punctuation stripped, at most 16 words,
id 0 = padding; words outside the vocabulary map to the unknown-word id ([UNK], 1
in a built vocabulary). The vocabulary is built from the training captions (capped
at 2**16 words, most frequent first) and saved as ``tokenizer.json`` next to the
data, or given as a ``tokenizer.json`` or a word list (one word per line, line
order = id; the paper's fixed 2^16-word HowTo100M vocabulary is such a list).
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


def _pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s']"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


class WordTokenizer:
    """Words -> ids ``[N, max_words]`` (int64, 0-padded)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        if tokenizer.token_to_id(PAD) != 0 or tokenizer.token_to_id(UNK) is None:
            raise ValueError(f"tokenizer must map {PAD} to id 0 and contain {UNK}")
        self.unk_id = tokenizer.token_to_id(UNK)

    @classmethod
    def build(cls, texts: Iterable[str], max_words: int = 2**16) -> WordTokenizer:
        """Vocabulary of the most frequent words in ``texts`` (``max_words`` includes [PAD] and [UNK])."""
        tok = _pipeline(Tokenizer(models.WordLevel(unk_token=UNK)))
        trainer = trainers.WordLevelTrainer(vocab_size=max_words, special_tokens=[PAD, UNK], show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_words(cls, words: Sequence[str]) -> WordTokenizer:
        vocab = {PAD: 0, UNK: 1}
        for w in words:
            w = w.strip().lower()
            if w and w not in vocab:
                vocab[w] = len(vocab)
        return cls(_pipeline(Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))))

    @classmethod
    def from_file(cls, path: str | Path) -> WordTokenizer:
        """A saved ``tokenizer.json``, or a word list: one word per line, the line order is the id order.

        A list whose first line is a padding token (``[PAD]``, ``<pad>``, ``PAD``...)
        is taken as it is: line *i* is id *i*, its unknown-word token (``[UNK]``,
        ``<unk>``...) keeps its line, or is appended when it has none. A list without
        a padding line gets ``[PAD]`` = 0 and ``[UNK]`` = 1 in front (word *i* = id *i* + 2).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"data.vocab: no file at {path}; give a tokenizer.json or a one-word-per-line file")
        if path.suffix == ".json":
            return cls(Tokenizer.from_file(str(path)))
        lines = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or lines[0].lower() not in PAD_MARKERS:
            return cls.from_words([w for w in lines if w and w not in (PAD, UNK)])
        vocab: dict[str, int] = {}
        for i, word in enumerate(lines):
            key = PAD if i == 0 else UNK if word.lower() in UNK_MARKERS else word.lower()
            if not word or key in vocab:
                raise ValueError(f"data.vocab: {path} line {i + 1} is {'empty' if not word else f'a repeat of {word!r}'};"
                                 " a word list needs one distinct word per line (line order = word id)")
            vocab[key] = i
        vocab.setdefault(UNK, len(vocab))
        return cls.from_vocab(sorted(vocab, key=vocab.__getitem__))

    @classmethod
    def from_vocab(cls, words: Sequence[str]) -> WordTokenizer:
        """The tokenizer whose ``words`` are exactly ``words`` (index = id; ``[PAD]`` first, ``[UNK]`` somewhere)."""
        vocab = {w: i for i, w in enumerate(words)}
        if len(vocab) != len(words):
            raise ValueError("vocabulary words must be distinct")
        return cls(_pipeline(Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))))

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

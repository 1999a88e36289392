"""Read pretrained word vectors (word2vec text/binary, GloVe, the authors' pickle) into an embedding table.

The original VATT looks words up in frozen 300-d word2vec vectors over a fixed
HowTo100M vocabulary (docs/vatt.md §2). They cannot be shipped with the code, so
``model.word_vectors=FILE`` loads a user's file into the word table (frozen by
default); without one the table starts random and trains (docs/deviations.md).

The authors ship theirs as ``misc/word2vec.pkl`` (in ``misc_data.tgz``): a pickled
dict whose ``"word_embeddings"`` is a ``[65536, 300]`` array, row *i* = word id *i* of
``misc/howto100m_en.txt``. It is read with an unpickler that builds only dicts, lists,
numbers, strings and NumPy arrays: a pickle can otherwise run any code.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def _open(path: Path):
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return path.open("rb")


def _is_text_row(line: bytes, dim: int) -> bool:
    parts = line.rstrip().split(b" ")
    if len(parts) != dim + 1:
        return False
    try:
        float(parts[1])
    except ValueError:
        return False
    return True


class _ArraysOnly(pickle.Unpickler):
    """Unpickles containers, numbers, strings and NumPy arrays; refuses every other class (no code runs)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"),
               ("numpy", "dtype"), ("collections", "OrderedDict"), ("builtins", "dict"), ("builtins", "list"),
               ("builtins", "tuple"), ("builtins", "set"), ("builtins", "frozenset"),
               ("_codecs", "encode")}  # protocol 2 stores an array's bytes as a latin-1 string

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: word vectors are arrays, not code")


def read_pickled_vectors(path: str | Path) -> np.ndarray:
    """The ``[V, D]`` table of the authors' ``word2vec.pkl`` (row = word id), read safely."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = _ArraysOnly(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise ValueError(f"word_vectors: {path} is not a word-vector pickle this project reads ({e})") from e
    table = data.get("word_embeddings") if isinstance(data, dict) else data
    if not isinstance(table, np.ndarray) or table.ndim != 2:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"word_vectors: {path} holds {keys}; expected a dict with a 2-D 'word_embeddings' array "
                         "(the authors' misc/word2vec.pkl)")
    return table.astype(np.float32)


def read_word_vectors(path: str | Path, words: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Read a word-vector file; returns ``({word: vector}, dim)``.

    The format is detected from the file: word2vec binary (header ``"count dim"``
    then ``word<space><dim float32>``), word2vec text (same header, text rows) or
    GloVe (text rows, no header). With ``words`` only those words are kept, which
    keeps memory small for 3M-word files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word_vectors: no file at {path}; give the path to a word2vec or GloVe file")
    if path.suffix == ".pkl":  # rows by word id: the vocabulary names them
        table = read_pickled_vectors(path)
        if words is None or len(words) != len(table):
            raise ValueError(f"word_vectors: {path} has {len(table)} rows, one per word id of its vocabulary; give "
                             f"that vocabulary with data.vocab (misc/howto100m_en.txt)"
                             + (f", not one of {len(words)} words" if words is not None else ""))
        return dict(zip(words, table)), table.shape[1]
    wanted = set(words) if words is not None else None
    vectors: dict[str, np.ndarray] = {}
    with _open(path) as f:
        first = f.readline()
        head = first.split()
        is_header = len(head) == 2 and all(tok.isdigit() for tok in head)
        if is_header:
            count, dim = int(head[0]), int(head[1])
            pos = f.tell()
            binary = not _is_text_row(f.readline(), dim)
            f.seek(pos)
            if binary:
                for _ in range(count):
                    word = bytearray()
                    while True:
                        ch = f.read(1)
                        if not ch:
                            raise ValueError(f"word_vectors: {path} is truncated (binary word2vec)")
                        if ch == b" ":
                            break
                        if ch != b"\n":
                            word.extend(ch)
                    vec = np.frombuffer(f.read(4 * dim), dtype="<f4")
                    if vec.size != dim:
                        raise ValueError(f"word_vectors: {path} is truncated (binary word2vec)")
                    w = word.decode("utf-8", errors="replace")
                    if wanted is None or w in wanted:
                        vectors[w] = vec.astype(np.float32)
                return vectors, dim
            lines = f
        else:
            dim = len(head) - 1
            lines = [first, *f]
        for lineno, raw in enumerate(lines, start=2 if is_header else 1):
            parts = raw.rstrip().split(b" ")
            if len(parts) < 2:
                continue
            if len(parts) - 1 != dim:
                raise ValueError(
                    f"word_vectors: {path} line {lineno} has {len(parts) - 1} numbers, expected {dim}; "
                    "is this a word2vec/GloVe text file?"
                )
            w = parts[0].decode("utf-8", errors="replace")
            if wanted is None or w in wanted:
                vectors[w] = np.asarray(parts[1:], dtype=np.float32)
    if dim <= 0:
        raise ValueError(f"word_vectors: {path} holds no vectors")
    return vectors, dim


def word_vector_table(
    path: str | Path, vocab: Sequence[str], dim: int, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """Build a ``[len(vocab), dim]`` table for ``vocab`` (index = word id; id 0 = padding).

    Words missing from the file get small random vectors (seeded); the padding row
    is zero. Returns the table and how many vocabulary words were found.
    """
    vectors, file_dim = read_word_vectors(path, vocab)
    if file_dim != dim:
        raise ValueError(f"word_vectors: {path} has {file_dim}-d vectors but word_dim is {dim}; set word_dim={file_dim}")
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(len(vocab), dim, generator=gen) * 0.1
    found = 0
    for i, w in enumerate(vocab):
        vec = vectors.get(w)
        if vec is None:
            vec = vectors.get(w.lower())
        if vec is not None:
            table[i] = torch.from_numpy(vec)
            found += 1
    table[0] = 0.0
    return table, found

"""Reading the on-disk layouts of downloaded datasets: folder indexes, index files, AudioSet rows.

Shared by the shard builder (:mod:`vatt.data.prepare`) and the downstream
listers (:mod:`vatt.data.downstream`), so that both find the same media file for
the same index row:

- :func:`index_media_folder`: stem -> media files under a folder (recursive);
- :func:`read_audioset_segments` and :func:`audioset_file_stems`: the rows of
  AudioSet's segment CSVs and the file names a downloaded segment may have;
- :func:`read_lines`, :func:`read_csv`, :func:`require_dir`, :func:`require_file`:
  line-numbered reading of index files and the errors for a missing layout.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTS = ("mp4", "mkv", "webm", "mov", "avi")
AUDIO_EXTS = ("wav", "flac", "ogg", "m4a", "mp3", "opus")


# --------------------------------------------------------------------------- media folders


def index_media_folder(root: Path, exts: tuple[str, ...]) -> dict[str, list[Path]]:
    """stem -> media files under ``root`` (recursive), preferred extension (earlier in ``exts``) first.

    Extensions match case-insensitively; hidden files and folders are ignored.
    Raises ``FileNotFoundError`` when ``root`` is not a folder.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"videos folder {root} does not exist")
    rank = {e: i for i, e in enumerate(exts)}
    found: dict[str, list[Path]] = defaultdict(list)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            stem, dot, ext = name.rpartition(".")
            if dot and ext.lower() in rank and not name.startswith("."):
                found[stem].append(Path(folder) / name)
    for paths in found.values():
        paths.sort(key=lambda p: (rank[p.suffix[1:].lower()], str(p)))
    return found


def format_seconds(x: float) -> str:
    """``30.0`` -> ``"30"``, ``12.5`` -> ``"12.5"`` (fixed point, trailing zeros trimmed)."""
    return f"{x:f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------- AudioSet


@dataclass(frozen=True)
class AudioSetSegment:
    """One row of an AudioSet segments CSV: ``YTID, start_seconds, end_seconds, "mid1,mid2,..."``."""

    line: int  # 1-based line number in the CSV
    text: str  # the line, stripped
    ytid: str
    start_text: str  # start_seconds exactly as written (e.g. "30.000")
    end_text: str
    start: float
    end: float
    labels: tuple[str, ...]  # label mids in file order

    @property
    def clip_id(self) -> str:
        """``<YTID>_<start>`` with the start trimmed (``abc_30``, ``abc_12.5``): the id both readers use."""
        return f"{self.ytid}_{format_seconds(self.start)}"


@dataclass(frozen=True)
class MalformedRow:
    """A non-comment line of an index file that could not be parsed."""

    line: int
    text: str
    reason: str


AUDIOSET_ROW_FORMAT = "expected YTID, start_seconds, end_seconds, positive_labels"


def read_audioset_segments(path: Path) -> list[AudioSetSegment | MalformedRow]:
    """The rows of an AudioSet segments CSV, in file order (blank and ``#`` lines left out).

    The official files (``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
    ``eval_segments.csv`` from https://research.google.com/audioset/download.html)
    start with three ``#`` lines, then rows like
    ``--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_"``: a space after each comma
    and the label mids quoted as one field. A row without a YTID or with a start
    that is not a finite number comes back as a :class:`MalformedRow`.
    """
    rows: list[AudioSetSegment | MalformedRow] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line], skipinitialspace=True))
        try:
            ytid, start_s, end_s = (x.strip() for x in row[:3])
            start, end = float(start_s), float(end_s)
            if not ytid or not math.isfinite(start):
                raise ValueError
        except ValueError:
            rows.append(MalformedRow(lineno, line.strip(), AUDIOSET_ROW_FORMAT))
            continue
        labels = tuple(x.strip() for x in row[3].split(",") if x.strip()) if len(row) > 3 else ()
        rows.append(AudioSetSegment(lineno, line.strip(), ytid, start_s, end_s, start, end, labels))
    return rows


def audioset_file_stems(ytid: str, start_text: str) -> list[str]:
    """File stems a downloaded segment may have, most specific first.

    Download scripts name a clip ``<YTID>_<start>`` with the start as written in
    the CSV (``30.000``), as a float repr (``30.0``), trimmed (``30``, ``12.5``),
    as an int, or in milliseconds (``12500``); some keep the bare ``<YTID>``.
    """
    start = float(start_text)
    variants = [start_text, repr(start), format_seconds(start), str(int(start)), str(int(round(start * 1000)))]
    return list(dict.fromkeys([f"{ytid}_{v}" for v in variants] + [ytid]))


# --------------------------------------------------------------------------- index files


def require_dir(root: str | Path, dataset: str, layout: str) -> Path:
    """``root`` as a Path; ``FileNotFoundError`` naming it and the expected ``layout`` when it is no folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset}: dataset folder {root} does not exist; expected {layout}")
    return root


def require_file(path: Path, dataset: str, layout: str) -> Path:
    """``path``; ``FileNotFoundError`` naming it and the expected ``layout`` when it is no file."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: {path} does not exist; expected {layout}")
    return path


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: files saved on Windows may start with a byte-order mark; reading in
        # text mode turns \r\n (as in the UCF101 split lists) into \n
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); re-download it or re-save it as UTF-8"
        ) from None


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line of a text file."""
    # split("\n") rather than splitlines(): the latter also breaks at form feeds and
    # Unicode separators, which would shift every later line number
    lines = _read_text(path).split("\n")
    return [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]


def read_csv(path: Path, *, skipinitialspace: bool = False) -> list[tuple[int, list[str]]]:
    """(1-based line number where the row starts, fields) for every non-blank row of a CSV file."""
    reader = csv.reader(io.StringIO(_read_text(path)), skipinitialspace=skipinitialspace)
    rows = []
    start = 1
    for row in reader:
        if any(field.strip() for field in row):
            rows.append((start, row))
        start = reader.line_num + 1
    return rows

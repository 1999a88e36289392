"""What every part of ``prepare`` shares: versions, skip reasons, file names, errors."""

from __future__ import annotations

PREPARE_VERSION = 1
# x264 tunings prepare --transcode offers (None: x264's defaults)
X264_TUNES = ("fastdecode", None)
KINDS = ("manifest", "howto100m", "audioset")

# skip reasons (the "reason" of skipped.jsonl and the keys of summary["skipped_by_reason"])
R_BAD_ENTRY = "bad entry"  # a manifest line / CSV row that cannot be parsed
R_MISSING = "missing file"
R_DUPLICATE = "duplicate id"
R_NO_CAPTIONS = "no usable captions"  # only with require_captions
R_UNREADABLE = "unreadable"  # MediaError / FFmpeg error; detail: the message
R_NO_VIDEO = "no video stream"  # manifest / howto100m need video
R_NO_STREAM = "no audio or video stream"
R_TOO_SHORT = "too short"
R_TRANSCODE = "transcode failed"
R_ERROR = "error"  # an unexpected exception in a worker; detail: type and message
R_CRASH = "crashed a worker"  # the process handling it died (e.g. in FFmpeg) on MAX_ATTEMPTS runs
MAX_ATTEMPTS = 2

SUMMARY = "summary.json"
SKIPPED = "skipped.jsonl"
TMP_DIR = ".prepare-tmp"
# in the work folder while a stop signal is being handled: workers take no new input
STOP_FLAG = "stop"
# what a local output folder may contain before we delete chunks in it
OURS = {SUMMARY, SKIPPED, TMP_DIR, "index.json", ".checkpoints"}

DECODE_CHECK_PACKETS = 2000  # packets demuxed at most to find the first frame of each stream


class PrepareError(RuntimeError):
    """The run cannot produce a dataset (no valid input, a worker died, ...)."""


class Skip(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# --------------------------------------------------------------------------- small helpers


def parse_bytes(value: int | str) -> int:
    """``64MB`` -> 64_000_000 (litdata's units: decimal k/m/g/t, optional trailing B)."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"chunk size must be positive, got {value}")
        return value
    raw = str(value).strip().lower()
    units = {"t": 1000**4, "g": 1000**3, "m": 1000**2, "k": 1000, "": 1}
    number = raw[:-1] if raw.endswith("b") else raw
    unit = number[-1:] if number[-1:] in ("t", "g", "m", "k") else ""
    try:
        result = int(float(number[: len(number) - len(unit)]) * units[unit])
    except ValueError:
        raise ValueError(f"cannot read the size {value!r} (use e.g. 64MB, 1GB or a number of bytes)") from None
    if result <= 0:
        raise ValueError(f"chunk size must be positive, got {value!r}")
    return result



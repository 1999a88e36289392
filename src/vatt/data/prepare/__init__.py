"""Pack media files + captions into streaming shards (litdata's optimized format).

Three input kinds, one sub-command each::

    python -m vatt.data.prepare manifest  --manifest data/demo/train.jsonl --out data/shards/demo-train
    python -m vatt.data.prepare howto100m --videos VIDEOS/ --captions caption.json --out s3://bucket/howto100m
    python -m vatt.data.prepare audioset  --videos CLIPS/ --segments balanced_train_segments.csv --out ...

Every sample of the output is ``{"id": str, "media": bytes, "meta": str}`` where
``meta`` is the JSON of ``{"captions": [{"start", "end", "text"}, ...] (sorted by
start), "labels": {...}, "duration": float (probed), "source": str, "has_video":
bool, "has_audio": bool}``; ``media`` is the file's bytes (or, with
``--transcode N``, an H.264/AAC MP4 with short side N and a keyframe every second;
with ``--fps F`` too, its video at F frames per second, e.g. the training rate, so a
loader decodes only the frames it keeps: ~42 for a 32-frame window at 10 fps, against
~126 from a 30 fps source).

The parent lists the inputs and does the cheap checks (missing file, duplicate
id, captions); litdata's worker processes probe each file (streams, duration),
test-decode its first and last half second with ``read_clip`` (as training will;
this catches truncated files) and read (or transcode) it. An input that fails is
never fatal: it is recorded with its reason (worker skips go to per-worker JSONL
files in ``OUT/.prepare-tmp/``, merged by the parent at the end).
The output folder gets, next to litdata's ``index.json`` and ``chunk-*.bin``:

- ``skipped.jsonl``: one ``{"input", "reason", "detail", ...}`` line per skipped input;
- ``summary.json`` (written last: it marks the dataset as finished): counts of
  inputs, kept and skipped by reason, the arguments and a fingerprint of the
  arguments and inputs.

Re-running with the same arguments and unchanged inputs does nothing. Other
arguments or changed inputs rebuild the dataset from scratch, after deleting the
old chunks, so the folder never mixes two runs. An interrupted run (killed,
crashed worker, Ctrl-C: no ``summary.json``) resumes when rerun with the same
arguments: every input a worker finished is recorded in ``.prepare-tmp/done/``
(its outcome, and the transcoded file), and the rerun re-emits those without
probing or transcoding them again, so the chunks come out exactly as an
uninterrupted run writes them. An input whose worker died twice is skipped as
"crashed a worker". litdata's ``use_checkpoint`` resume is not used: it counts
*written samples* as processed inputs, so with skipped inputs a resumed run would
process some inputs twice.

The package: ``listers`` (each corpus's inputs and the parent's cheap checks),
``worker`` (what a worker does with one input), ``output`` (local folder or object
store), ``report`` (the summary table), ``common`` (reasons, names, errors); the CLI
and ``prepare()`` here.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from ..objectstore import allow_plain_http
from ...interrupts import STOP_SIGNALS, Stopped, children_ignore_stop_signals, raise_on_stop_signals
from ...progress import Progress
from .common import KINDS, PREPARE_VERSION, X264_TUNES, SKIPPED, STOP_FLAG, SUMMARY, PrepareError, parse_bytes
from .listers import (
    apply_parent_checks,
    list_audioset,
    list_howto100m,
    list_manifest,
)
from .output import Output
from .report import print_report, skip_record
from .worker import process_input


def _default_start_method() -> str | None:
    # fork starts the workers in a fraction of a second (spawn re-imports torch in each).
    # The workers use PyAV and read_clip's few single-threaded torch ops (the check reads
    # audio at its native rate: no resampling), as forked DataLoader workers do.
    return "fork" if sys.platform.startswith("linux") else None


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _supervise_workers(work: Path, console: Any, total: int, progress: bool) -> Iterator[dict[str, Any]]:
    """Progress of the workers (inputs finished in ``work/done``), and stop signals handled in order.

    A stop signal (to this process or to the whole job) lets the workers finish their inputs, then stops.

    The stop signals are blocked in this process and its workers (which therefore
    never die half-way through an input); a watcher thread takes them with
    ``sigtimedwait`` and sets ``work/stop``, after which every worker returns at once
    for each remaining input without recording it, so ``litdata.optimize`` returns
    soon and the rerun processes exactly those inputs. ``state["signal"]`` tells the
    caller. A second signal aborts at once (the workers are killed).
    """
    flag = work / STOP_FLAG
    flag.unlink(missing_ok=True)
    state: dict[str, Any] = {"signal": None}
    finished = threading.Event()
    bar = Progress("prepare: inputs done", total, enabled=progress)
    can_wait = hasattr(signal, "sigtimedwait") and threading.current_thread() is threading.main_thread()

    def watch() -> None:
        while not finished.is_set():
            bar.update(sum(1 for _ in (work / "done").glob("*.json")))
            if not can_wait:
                time.sleep(0.2)
                continue
            got = signal.sigtimedwait(STOP_SIGNALS, 0.2)
            if got is None:
                continue
            name = signal.Signals(got.si_signo).name
            if state["signal"] is not None:
                console.print(f"received {name} again: aborting now", markup=False)
                for child in mp.active_children():
                    child.kill()
                os._exit(128 + got.si_signo)
            state["signal"] = signal.Signals(got.si_signo)
            flag.touch()
            console.print(f"received {name}: the workers finish the inputs they hold, then prepare stops "
                          "(rerun the same command to continue; a second signal aborts at once)", markup=False)

    with children_ignore_stop_signals() if can_wait else contextlib.nullcontext(), bar:
        watcher = threading.Thread(target=watch, name="prepare-workers", daemon=True)
        watcher.start()
        try:
            yield state
        finally:
            finished.set()
            watcher.join()
            bar.update(sum(1 for _ in (work / "done").glob("*.json")))
            flag.unlink(missing_ok=True)


def _index_count(out: Output) -> int:
    text = out.read_text("index.json")
    if text is None:
        raise PrepareError(f"{out.spec}: litdata wrote no index.json")
    return sum(int(c["chunk_size"]) for c in json.loads(text)["chunks"])


def _arguments(kind: str, out: str | Path, *, manifest: str | Path | None, videos: str | Path | None,
               captions: str | Path | None, segments: str | Path | None, workers: int, chunk_bytes: int | str,
               require_captions: bool, require_video: bool, min_duration: float, transcode: int | None,
               source: str | None, fps: float | None = None,
               x264_tune: str | None = "fastdecode") -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's arguments as ``summary.json`` records them, and the input paths its kind needs; ``ValueError``s."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    needs = {"manifest": {"manifest": manifest}, "howto100m": {"videos": videos, "captions": captions},
             "audioset": {"videos": videos, "segments": segments}}[kind]
    missing = [f"--{k}" for k, v in needs.items() if v is None]
    if missing:
        raise ValueError(f"{kind} needs {' and '.join(missing)}")
    if kind == "audioset" and require_captions:
        raise ValueError("AudioSet clips have no captions: --require-captions would skip them all")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if transcode is not None and (int(transcode) < 2 or int(transcode) % 2):
        raise ValueError(f"--transcode needs an even short side >= 2 (H.264 4:2:0), got {transcode}")
    if fps is not None and transcode is None:
        raise ValueError("--fps sets the frame rate of transcoded video: give --transcode SHORT_SIDE too")
    if x264_tune not in X264_TUNES:
        raise ValueError(f"--x264-tune must be one of {[t or 'none' for t in X264_TUNES]}, got {x264_tune!r}")
    if fps is not None and not (0 < float(fps) <= 240):
        raise ValueError(f"--fps must be a frame rate in (0, 240], got {fps}")
    if not (min_duration >= 0):
        raise ValueError(f"min_duration must be >= 0, got {min_duration}")
    args = {
        "kind": kind, "out": str(out), "manifest": manifest and str(manifest), "videos": videos and str(videos),
        "captions": captions and str(captions), "segments": segments and str(segments), "workers": int(workers),
        "chunk_bytes": parse_bytes(chunk_bytes), "require_captions": bool(require_captions),
        "min_duration": float(min_duration), "transcode": int(transcode) if transcode is not None else None,
        "source": source or kind,
    }
    if require_video:  # only when set, so that the datasets prepared without it keep their fingerprint
        args["require_video"] = True
    if fps is not None:  # the same
        args["fps"] = float(fps)
    if transcode is not None:
        args["x264_tune"] = x264_tune
    return args, needs


def _list_inputs(kind: str, needs: dict[str, Any], require_captions: bool, require_video: bool) -> list[dict[str, Any]]:
    """Every input of the run as an entry, with the parent's cheap checks applied (``entry["skip"]``)."""
    if kind == "manifest":
        entries = list_manifest(Path(needs["manifest"]))
    elif kind == "howto100m":
        entries = list_howto100m(Path(needs["videos"]), Path(needs["captions"]))
    else:
        entries = list_audioset(Path(needs["videos"]), Path(needs["segments"]), need_video=bool(require_video))
    apply_parent_checks(entries, require_captions)
    return entries


def _fingerprint(args: dict[str, Any], needs: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    """A hash of everything the output depends on (not ``out``, ``workers`` or progress)."""

    def stat(p: str | None) -> list[int] | None:
        if p is None:
            return None
        s = os.stat(p)
        return [s.st_size, s.st_mtime_ns]

    fp_args = {k: v for k, v in args.items() if k not in ("out", "workers")}
    fp_args.update({k: str(Path(v).absolute()) for k, v in needs.items()})
    hasher = hashlib.sha256(json.dumps({"version": PREPARE_VERSION, "args": fp_args}, sort_keys=True).encode())
    for e in entries:  # one at a time: HowTo100M's captions are gigabytes as one string
        row = [e["id"], e["input"], e["path"], stat(e["path"]) if not e["skip"] else None, e["captions"],
               e["labels"], e["need_video"], e["skip"]]
        hasher.update(json.dumps(row, sort_keys=True).encode() + b"\n")
    return hasher.hexdigest()


def _finished_run(dest: Output, fingerprint: str, console: Any) -> dict[str, Any] | None:
    """The summary of a finished dataset in ``dest`` made with the same arguments and inputs, if there is one."""
    old = dest.read_text(SUMMARY)
    if old is None:
        return None
    with contextlib.suppress(ValueError):
        summary = json.loads(old)
        if summary.get("fingerprint") == fingerprint and summary.get("complete") and dest.exists("index.json"):
            console.print(
                f"{dest.spec}: up to date ({summary['kept']} clips kept, {summary['skipped']} inputs skipped, "
                f"same arguments and inputs as the finished run there); nothing to do (--force rebuilds)",
                markup=False,
            )
            return summary
    return None


def _start_build(dest: Output, fingerprint: str, todo: list[dict[str, Any]], console: Any) -> tuple[Path, int]:
    """Invalidate the old dataset (``summary.json`` marks a finished one): the work folder and the inputs resumed.

    litdata then deletes the old index and chunks (``mode="overwrite"``).
    """
    dest.check_ours()
    dest.delete(SUMMARY)
    dest.delete(SKIPPED)
    if dest.path is not None:
        dest.path.mkdir(parents=True, exist_ok=True)
    work = dest.work_dir(fingerprint)
    finished_before = {int(p.stem) for p in (work / "done").glob("*.json")}
    resumed = sum(1 for e in todo if e["index"] in finished_before)
    if resumed:
        console.print(f"resuming an interrupted run: {resumed} of {len(todo)} inputs were finished before and are "
                      "not processed again", markup=False)
    return work, resumed


def _run_workers(dest: Output, work: Path, todo: list[dict[str, Any]], args: dict[str, Any], n_workers: int,
                 progress: bool, start_method: str | None, console: Any) -> None:
    """``litdata.optimize`` over the inputs to do; ``Stopped`` when a stop signal ended it early."""
    cfg = {"log_dir": str(work / "logs"), "work_dir": str(work), "min_duration": args["min_duration"],
           "transcode": args["transcode"], "fps": args.get("fps"), "x264_tune": args.get("x264_tune", "fastdecode"),
           "source": args["source"]}
    # litdata sets the process-wide start method and a SIGINT handler: put both back afterwards
    old_sigint, old_method = signal.getsignal(signal.SIGINT), mp.get_start_method(allow_none=True)
    import litdata

    try:
        with _supervise_workers(work, console, len(todo), progress) as stop, \
                _environ(DATA_OPTIMIZER_CACHE_FOLDER=str(work / "cache" / "chunks"),
                         DATA_OPTIMIZER_DATA_CACHE_FOLDER=str(work / "cache" / "data")):
            litdata.optimize(
                fn=functools.partial(process_input, cfg),
                inputs=[json.dumps(e) for e in todo],
                output_dir=dest.spec if dest.remote else str(dest.path),
                chunk_bytes=args["chunk_bytes"],
                num_workers=n_workers,
                mode="overwrite",
                verbose=False,  # its own progress and notices; ours counts the finished inputs
                start_method=start_method or _default_start_method(),
            )
    finally:
        signal.signal(signal.SIGINT, old_sigint)
        mp.set_start_method(old_method, force=True)
    if stop["signal"] is not None:
        dest.delete("index.json")  # the chunks hold part of the inputs: nothing may stream them
        done = len(list((work / "done").glob("*.json")))
        console.print(f"stopped by {stop['signal'].name}: {done} of {len(todo)} inputs are finished and kept in "
                      f"{work}; rerun the same command to process the other {len(todo) - done}", markup=False)
        raise Stopped(stop["signal"])


def _worker_records(log_dir: Path, todo: list[dict[str, Any]], dest: Output) -> dict[int, dict[str, Any]]:
    """The workers' logs merged (input index -> outcome); ``PrepareError`` when an input or a sample got lost."""
    records: dict[int, dict[str, Any]] = {}
    for log_file in sorted(log_dir.glob("worker-*.jsonl")):
        for line in log_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                records[r["index"]] = r
    lost = [e["input"] for e in todo if e["index"] not in records]
    kept = sum(1 for r in records.values() if r["status"] == "kept")
    written = _index_count(dest) if kept else 0
    if lost or written != kept:
        dest.delete("index.json")  # so nothing streams the partial dataset; the next run starts over
        raise PrepareError(
            f"{dest.spec}: incomplete run ({len(lost)} inputs without a result, e.g. {lost[:3]}; "
            f"{written} samples written for {kept} kept); rerun the same command: inputs finished so far are "
            "not processed again"
        )
    return records


def _finish(dest: Output, console: Any, args: dict[str, Any], fingerprint: str, inputs: int,
            parent_skips: list[dict[str, Any]], records: dict[int, dict[str, Any]], resumed: int,
            t0: float) -> dict[str, Any]:
    """Write ``skipped.jsonl``, report, then write ``summary.json`` (last: it marks the dataset as finished)."""
    kept = [r for r in records.values() if r["status"] == "kept"]
    worker_skips = [skip_record(r, r["reason"], r["detail"]) | {"_index": r["index"]}
                    for r in records.values() if r["status"] == "skipped"]
    skipped = sorted(parent_skips + worker_skips, key=lambda r: r.pop("_index"))
    counts = Counter(r["reason"] for r in skipped)
    summary = {
        "version": PREPARE_VERSION,
        "complete": True,
        "fingerprint": fingerprint,
        "kind": args["kind"],
        "source": args["source"],
        "out": dest.spec,
        "args": args,
        "inputs": inputs,
        "kept": len(kept),
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(counts.items())),
        "kept_seconds": round(sum(r["duration"] for r in kept), 3),
        "kept_with_captions": sum(1 for r in kept if r["captions"]),
        "kept_audio_only": sum(1 for r in kept if not r["has_video"]),
        "kept_without_audio": sum(1 for r in kept if not r["has_audio"]),
        "media_bytes": sum(r["bytes"] for r in kept),
        "resumed_inputs": resumed,
        "elapsed_s": round(time.perf_counter() - t0, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {"skipped": SKIPPED},
    }
    dest.write_text(SKIPPED, "".join(json.dumps(r) + "\n" for r in skipped))
    print_report(console, summary, skipped)
    if not kept:
        dest.delete("index.json")  # litdata's empty index: nothing to stream
        raise PrepareError(f"{args['kind']}: every input was skipped; see {dest.spec.rstrip('/')}/{SKIPPED}")
    dest.write_text(SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def prepare(
    kind: str,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    videos: str | Path | None = None,
    captions: str | Path | None = None,
    segments: str | Path | None = None,
    workers: int = 1,
    chunk_bytes: int | str = "64MB",
    require_captions: bool = False,
    require_video: bool = False,
    min_duration: float = 1.0,
    transcode: int | None = None,
    fps: float | None = None,
    x264_tune: str | None = "fastdecode",
    source: str | None = None,
    progress: bool = True,
    start_method: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the litdata dataset for one input kind into ``out``; return the summary.

    The returned dict is the content of ``out/summary.json`` plus ``up_to_date``
    (True when an identical finished dataset was already there and nothing was done).

    - ``workers``: litdata worker processes; ``start_method``: how they start (default
      fork on Linux, which starts them in milliseconds; spawn re-imports torch in each).
    - ``chunk_bytes``: shard size, e.g. ``"64MB"`` (decimal units, as litdata's).
    - ``transcode``: None stores the original bytes; an even N re-encodes to MP4
      (H.264, short side N, a keyframe every second; AAC audio); ``fps`` (with ``transcode``):
      the video re-timed to that constant rate (each tick gets the source frame shown then);
      ``x264_tune``: ``"fastdecode"`` (CAVLC, no deblocking: the same PSNR at the same CRF for
      ~11 % more bytes, decoded ~2.4x faster by the loaders) or None (x264's defaults: smaller).
    - ``require_video``: skip inputs without a video stream (pretraining needs video; AudioSet keeps its
      audio-only clips by default, for audio fine-tuning). Manifests and HowTo100M always need video.
    - ``force``: rebuild even when the output is up to date.
    Raises ``ValueError`` for bad arguments, ``FileExistsError`` when a local ``out``
    holds files prepare did not write, ``PrepareError`` when no input is usable or a
    worker died (the output is then left unfinished: no ``summary.json``).
    """
    from rich.console import Console

    t0 = time.perf_counter()
    console = Console(highlight=False, soft_wrap=True)
    args, needs = _arguments(kind, out, manifest=manifest, videos=videos, captions=captions, segments=segments,
                             workers=workers, chunk_bytes=chunk_bytes, require_captions=require_captions,
                             require_video=require_video, min_duration=min_duration, transcode=transcode,
                             source=source, fps=fps, x264_tune=x264_tune)
    # 1. list the inputs, cheap checks in the parent; 2. fingerprint them
    entries = _list_inputs(kind, needs, require_captions, require_video)
    todo = [e for e in entries if not e["skip"]]
    fingerprint = _fingerprint(args, needs, entries)

    allow_plain_http()  # an http:// AWS_ENDPOINT_URL (set after import)
    dest = Output(out)
    summary = None if force else _finished_run(dest, fingerprint, console)
    if summary is not None:
        return {**summary, "up_to_date": True}

    parent_skips = [skip_record(e, *e["skip"]) | {"_index": e["index"]} for e in entries if e["skip"]]
    if not todo:
        summary = {"kind": kind, "out": dest.spec, "inputs": len(entries), "kept": 0, "skipped": len(entries)}
        print_report(console, summary, parent_skips)
        raise PrepareError(f"{kind}: no usable input ({len(entries)} inputs, all skipped); {dest.spec} is unchanged")

    # 3. build
    work, resumed = _start_build(dest, fingerprint, todo, console)
    n_workers = min(int(workers), len(todo))
    console.print(
        f"{kind}: {len(entries)} inputs, {len(entries) - len(todo)} skipped by the first checks, "
        f"{len(todo)} to probe{' and transcode' if transcode else ''} with {n_workers} worker(s) -> {dest.spec}",
        markup=False,
    )
    finished = False
    try:
        _run_workers(dest, work, todo, args, n_workers, progress, start_method, console)
        # 4. merge the workers' logs, check that nothing got lost, write the reports
        records = _worker_records(work / "logs", todo, dest)
        summary = _finish(dest, console, args, fingerprint, len(entries), parent_skips, records, resumed, t0)
        finished = True
        return {**summary, "up_to_date": False}
    finally:
        if finished:
            shutil.rmtree(work, ignore_errors=True)  # an unfinished run keeps it: the rerun resumes from it


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> dict[str, Any]:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder or object-store URL (s3://bucket/prefix)")
    common.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all CPUs)")
    common.add_argument("--chunk-bytes", default="64MB", help="shard size (default: 64MB)")
    common.add_argument("--require-captions", action="store_true", help="skip clips without a usable caption")
    common.add_argument("--require-video", action="store_true",
                        help="skip inputs without a video stream (for pretraining; AudioSet keeps audio-only clips "
                             "by default)")
    common.add_argument("--min-duration", type=float, default=1.0, help="skip shorter clips (seconds, default 1.0)")
    common.add_argument("--transcode", type=int, default=None, metavar="SHORT_SIDE",
                        help="re-encode to H.264 (short side SHORT_SIDE, a keyframe per second) + AAC; "
                             "default: store the original bytes")
    common.add_argument("--fps", type=float, default=None,
                        help="with --transcode: the video at this frame rate, e.g. the training rate (10), so that "
                             "loaders decode only frames they keep; default: the source's rate")
    common.add_argument("--x264-tune", choices=("fastdecode", "none"), default="fastdecode",
                        help="with --transcode: fastdecode (default; ~11%% more bytes at the same quality, decoded "
                             "~2.4x faster) or none (x264's defaults, smaller files)")
    common.add_argument("--source", default=None, help="name stored in every record (default: the sub-command)")
    common.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default=None,
                        help="how workers start (default: fork on Linux)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument("--force", action="store_true", help="rebuild even when --out is up to date")

    parser = argparse.ArgumentParser(prog="python -m vatt.data.prepare", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("manifest", parents=[common], help="our JSONL manifest")
    p.add_argument("--manifest", required=True, help="JSONL file; video paths relative to its folder")
    p = sub.add_parser("howto100m", parents=[common], help="HowTo100M videos + caption.json")
    p.add_argument("--videos", required=True, help="folder of <id>.<mp4|mkv|webm|mov|avi>")
    p.add_argument("--captions", required=True, help="caption.json: id -> {start: [..], end: [..], text: [..]}")
    p = sub.add_parser("audioset", parents=[common], help="AudioSet clips + segments CSV")
    p.add_argument("--videos", required=True, help="folder of <YTID>_<start>.<ext> (video or audio files)")
    p.add_argument("--segments", required=True, help="AudioSet segments CSV (YTID, start, end, labels)")
    a = parser.parse_args(argv)

    try:
        with raise_on_stop_signals():  # before and after the workers run; during, they finish their inputs first
            return prepare(
                a.kind, a.out, manifest=getattr(a, "manifest", None), videos=getattr(a, "videos", None),
                captions=getattr(a, "captions", None), segments=getattr(a, "segments", None), workers=a.workers,
                chunk_bytes=a.chunk_bytes, require_captions=a.require_captions, require_video=a.require_video,
                min_duration=a.min_duration,
                transcode=a.transcode, fps=a.fps, x264_tune=None if a.x264_tune == "none" else a.x264_tune,
                source=a.source, progress=not a.no_progress, start_method=a.start_method,
                force=a.force,
            )
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PrepareError) as e:
        parser.exit(2, f"prepare: error: {e}\n")
    except Stopped as e:
        raise SystemExit(e.exit_code) from None


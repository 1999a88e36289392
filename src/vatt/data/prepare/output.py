"""The output folder, local or on object storage (through litdata's client)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .common import OURS, TMP_DIR


class Output:
    """Where ``prepare`` writes: a local folder (``path``) or an object-store prefix (``url``, ``remote``)."""

    def __init__(self, out: str | Path) -> None:
        self.spec = str(out)
        self.remote = "://" in self.spec
        if self.remote:
            from litdata.streaming.fs_provider import _get_fs_provider

            self.url = self.spec.rstrip("/")
            self.fs = _get_fs_provider(self.url, {})
            self.path = None
        else:
            self.path = Path(out).absolute()

    def read_text(self, name: str) -> str | None:
        try:
            if not self.remote:
                return (self.path / name).read_text(encoding="utf-8")
            with tempfile.TemporaryDirectory() as tmp:
                local = os.path.join(tmp, name)
                if not self.fs.exists(f"{self.url}/{name}"):
                    return None
                self.fs.download_file(f"{self.url}/{name}", local)
                return Path(local).read_text(encoding="utf-8")
        except (OSError, ValueError):
            return None

    def exists(self, name: str) -> bool:
        return (self.path / name).exists() if not self.remote else self.fs.exists(f"{self.url}/{name}")

    def write_text(self, name: str, text: str) -> None:
        if not self.remote:
            partial = self.path / f"{name}.partial"
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, self.path / name)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, name)
            Path(local).write_text(text, encoding="utf-8")
            self.fs.upload_file(local, f"{self.url}/{name}")

    def delete(self, name: str) -> None:
        if not self.remote:
            (self.path / name).unlink(missing_ok=True)
            (self.path / f"{name}.partial").unlink(missing_ok=True)
        elif self.fs.exists(f"{self.url}/{name}"):
            self.fs.delete_file_or_directory(f"{self.url}/{name}")

    def check_ours(self) -> None:
        """Refuse to delete chunks in a local folder that holds other things."""
        if self.remote or not self.path.exists():
            return
        if not self.path.is_dir():
            raise NotADirectoryError(f"--out {self.path} is a file")
        foreign = sorted(
            p.name for p in self.path.iterdir()
            if p.name not in OURS and not p.name.endswith((".bin", ".partial", "index.json"))
        )
        if foreign:
            raise FileExistsError(
                f"--out {self.path} holds files that prepare did not write ({', '.join(foreign[:5])}); "
                "use an empty or new folder"
            )

    def work_dir(self, fingerprint: str) -> Path:
        """The local scratch folder (worker logs, finished inputs, litdata's cache, transcode files).

        ``<out>/.prepare-tmp`` (a remote ``out``: a folder in the system's temp dir named
        after it). Kept from an interrupted run with the same ``fingerprint`` (same
        arguments and inputs), so its finished inputs are not processed again;
        emptied otherwise.
        """
        if self.remote:
            key = hashlib.sha256(self.spec.encode()).hexdigest()[:16]
            tmp = Path(tempfile.gettempdir()) / f"vatt-prepare-{key}"
        else:
            tmp = self.path / TMP_DIR
        stamp = tmp / "fingerprint"
        if not (stamp.is_file() and stamp.read_text() == fingerprint):
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp / "cache", ignore_errors=True)  # litdata's own, per run
        for sub in ("logs", "done", "attempts"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        return tmp


# --------------------------------------------------------------------------- reporting



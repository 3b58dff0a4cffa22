"""Writing files so that a crash never leaves a half-written one where a reader expects a whole
one: stage beside the target (same filesystem), fsync, then os.replace.

Staged files get the mode open() would give a new file, 0666 & ~umask. tempfile.mkstemp creates
them 0600 (right for secrets, wrong here), and os.replace keeps that mode: a model exported by
one user could not be read by the line's service account, nor results by a shared group.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from edge_runtime.errors import BadInput, TwinspectError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc/self/status);
    elsewhere set and restored at once (the only portable way)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def stage_bytes(path: Path, data: bytes) -> Path:
    """Write `data` fully (fsynced) to a temporary name beside `path`; the caller renames it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # as open() would; see module doc
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then os.replace into place."""
    tmp = stage_bytes(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj, flag: str = "--json") -> None:
    """Atomically write figures as JSON; an unwritable path is the user's to fix (exit 2)."""
    try:
        atomic_write_bytes(Path(path), json.dumps(obj, indent=1).encode())
    except OSError as e:
        raise BadInput(f"{flag} {path}: cannot write ({e.strerror or e})") from None


def read_json_object(path: Path, error: type[TwinspectError], missing: str) -> dict:
    """A JSON object from `path`, or one `error` line naming the file (`missing` says what the
    file should have been when it is absent)."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: missing ({missing})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: not readable JSON ({e})") from None
    if not isinstance(d, dict):
        raise error(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d

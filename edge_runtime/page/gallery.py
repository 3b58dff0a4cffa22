"""The NG gallery's two duties that touch files: serving images, and relabelling parts.

Serving: a name from a URL is only ever resolved under the one folder it may come from (the
camera's NG folder), symlinks included, and anything that lands outside is refused — the page
must never become a way to read the model directory, the token or /etc.

Relabelling: a person marks an NG part good, or a defect type (an existing one, or a new name),
and the crop is copied into a review folder in the training layout,
`<review>/train/<label>/<part>.png`, so the next `twinspect train` (with that folder merged into
its data) learns from it. A part lives under one label only: relabelling it again moves it. The
folder name is the label, so a new type's name must be a safe folder name; an existing type is
filed under its own label (the sidecar's "1", not its display name) so it joins its images.
Each relabel is also a line in `<review>/relabels.jsonl` (who, when, which part, which label).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.datasets import GOOD_NAMES  # good, ok, 0: as the training loader reads them
from edge_runtime.errors import BadInput
from edge_runtime.files import atomic_write_bytes

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class Refused(BadInput):
    """A path outside the run's folders (HTTP 403)."""


def confined(root: Path, name: str) -> Path:
    """`root/name` when it resolves to an image file inside `root`; Refused otherwise."""
    root = root.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise Refused(f"{name!r} is outside the run's folders; only its own images are served")
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        raise BadInput(f"{name!r}: no such image in the run's folders")
    return path


def label_folder(label: object, known: dict[str, str]) -> tuple[str, str]:
    """(folder, name) for a label a person chose: good, an existing type (by its label or its
    name), or a new type whose name is a safe folder name."""
    if not isinstance(label, str) or not label.strip():
        raise BadInput("label is required: good, an existing defect type, or a new type name")
    text = label.strip()
    if text.lower() in GOOD_NAMES:
        return "good", "good"
    for key, name in known.items():
        if text in (key, name):
            return key, name
    if not LABEL_RE.match(text) or text.endswith((".", " ")):
        raise BadInput(
            f"label {text!r}: a new type name is its folder's name — 1–64 letters, digits, "
            "spaces, '_', '-' or '.', starting with a letter or digit"
        )
    return text, text


def part_name(item: dict, with_camera: bool) -> str:
    """The file name of a part in the review folder: its part id, made safe."""
    part = re.sub(r"[^A-Za-z0-9_.-]", "_", str(item["part_id"]))[:80].lstrip(".") or "part"
    return f"{item['camera']}_{part}" if with_camera else part


class Review:
    """The review folder: relabelled crops in the training layout, and their log."""

    def __init__(self, folder: Path, labels: dict[str, str], with_camera: bool) -> None:
        self.folder = Path(folder)
        self.train = self.folder / "train"
        # the sidecar's defect types (label → name), good excluded
        self.defects = {k: v for k, v in labels.items() if k.lower() not in GOOD_NAMES}
        self.with_camera = with_camera

    def types(self) -> dict[str, str]:
        """Defect types to offer: the model's, and new ones already made in this folder."""
        out = dict(self.defects)
        if self.train.is_dir():
            for p in sorted(self.train.iterdir()):
                if p.is_dir() and p.name != "good" and p.name not in out:
                    out[p.name] = p.name
        return out

    def labelled(self) -> dict[str, str]:
        """item id → label folder, from the log (the newest relabel of a part wins)."""
        out: dict[str, str] = {}
        try:
            lines = (self.folder / "relabels.jsonl").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                e = json.loads(line)
                out[e["item"]] = e["label"]
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def relabel(self, item: dict, crop: Path, label: object, who: str, client: str) -> dict:
        """Copy the crop under its label (moving it from any other), log it; what was done."""
        folder, name = label_folder(label, self.types())
        fname = part_name(item, self.with_camera) + crop.suffix.lower()
        dest = self.train / folder / fname
        try:
            atomic_write_bytes(dest, crop.read_bytes())
            for other in self.train.iterdir():
                if other.is_dir() and other.name != folder:
                    (other / fname).unlink(missing_ok=True)
            self._name_labels(folder, name)
            entry = {
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "who": who,
                "client": client,
                "item": item["id"],
                "camera": item["camera"],
                "frame": item["frame"],
                "part_id": item["part_id"],
                "score": item["score"],
                "label": folder,
                "name": name,
                "file": dest.relative_to(self.folder).as_posix(),
            }
            with open(self.folder / "relabels.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise BadInput(f"{self.folder}: cannot write ({e.strerror or e})") from None
        return entry

    def _name_labels(self, folder: str, name: str) -> None:
        """labels.json beside the data (label → name), as `twinspect generate` writes it, so
        training names the types it learns from this folder."""
        path = self.folder / "labels.json"
        try:
            names = json.loads(path.read_text())
        except (OSError, ValueError):
            names = {}
        if not isinstance(names, dict):
            names = {}
        want = {**self.defects, **names, folder: name}
        want.pop("good", None)
        if want != names:
            atomic_write_bytes(path, (json.dumps(want, indent=2) + "\n").encode())

"""The one loader of labeled images, used by training, evaluation and the runtime.

Sources (found from PATH):
  folder     <label>/*.png (label = folder name; good, ok, 0 mean good). A folder with train/ and/or
             test/ (MVTec AD's train/good, test/<defect> included) is read one split at a time.
  parquet    a .parquet file in the Hugging Face image schema (dirname, label, image{bytes, path}),
             or a folder holding <split>.parquet.
  recording  a folder with frames/, labels.csv (frame,label) and roi.json: frames are cropped.
  hub        owner/name of a Hugging Face dataset (needs the 'hub' extra).

Every image goes through `edge_runtime.preprocess.prepare`; records that cannot be read are listed
in `skipped` (never silently dropped), and one clear `BadInput` names the path when nothing can be.

Label names are the user's: a `labels.json` ({"label": "name", …}) or `labels.csv` (header
`label,name`) beside the data names them; otherwise a folder name is its own name, and a bare
number N reads "defect N" (the good label is always "good").
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.preprocess import InputSpec, Roi, crop, is_color, prepare

GOOD_NAMES = {"0", "good", "ok"}  # normalized to label "0"
GOOD = "0"
SPLITS = ("train", "test")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"}
PARQUET_COLUMNS = ("label", "image")  # required; "dirname" is optional
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def normalize_label(name: object) -> str:
    """'good', 'ok', '0' (any case) → '0'; anything else as found, as a string."""
    s = str(name).strip()
    return GOOD if s.lower() in GOOD_NAMES else s


@dataclass
class LabeledImages:
    images: np.ndarray  # uint8 N×H×W, already at the requested size
    labels: list[str]  # "0" for good, else the defect label as found
    paths: list[str]  # source of each image (parquet: "file.parquet#row")
    source: str  # what was loaded (path or hub id)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    raw_sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) before fitting
    n_color: int = 0  # images that hold colour (3+ channels, not all equal)
    names: dict[str, str] = field(default_factory=dict)  # label → name, for every label

    @property
    def is_defect(self) -> np.ndarray:
        return np.array([lab != GOOD for lab in self.labels], dtype=bool)

    def __len__(self) -> int:
        return len(self.labels)


# A record is (path, label, read) where read() returns the raw image (any size, gray or BGR)
# or raises ValueError with the reason it cannot be read.
Record = tuple[str, str, Callable[[], np.ndarray]]


def decode_image(buf: bytes | np.ndarray) -> np.ndarray:
    """Decode image bytes as stored (gray, BGR, BGRA or 16-bit); ValueError if they are not one."""
    arr = np.frombuffer(buf, np.uint8) if isinstance(buf, bytes | bytearray) else buf
    try:
        img = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED) if arr.size else None
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise ValueError("not a readable image")
    return img


def read_image_file(path: Path) -> np.ndarray:
    """The one image-file reader (datasets and the runtime's folder sources): OSError when the
    file cannot be read, ValueError when it is not an image."""
    return decode_image(np.fromfile(path, np.uint8))


def _read_file(path: Path) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        try:
            return read_image_file(path)
        except OSError as e:
            raise ValueError(f"cannot read file: {e.strerror or e}") from None

    return read


def image_files(folder: Path) -> list[Path]:
    """Image files in a folder, sorted by name; hidden files (._*, .DS_Store) left out."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# ---- folder -------------------------------------------------------------------------------


def _folder_records(folder: Path) -> list[Record]:
    records: list[Record] = []
    for sub in _subdirs(folder):
        label = normalize_label(sub.name)
        records += [(str(p), label, _read_file(p)) for p in image_files(sub)]
    if not records:
        loose = image_files(folder)
        hint = (
            f" ({len(loose)} images lie directly in it; put them in <label>/ subfolders)"
            if loose
            else ""
        )
        raise BadInput(f"{folder}: no images found in <label>/ subfolders{hint}")
    return sorted(records, key=lambda r: r[0])


# ---- parquet ------------------------------------------------------------------------------


def _parquet_records(file: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtra("reading parquet", "parquet") from None
    try:
        table = pq.read_table(file)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise BadInput(f"{file}: not a readable parquet file ({e})") from None
    names = table.column_names
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    if missing:
        raise BadInput(
            f"{file}: parquet columns {names} do not match the image-dataset schema "
            f"(needs {list(PARQUET_COLUMNS)}, missing {missing})"
        )
    images = table.column("image").to_pylist()
    labels = table.column("label").to_pylist()
    records: list[Record] = []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        if isinstance(img, dict):
            data = img.get("bytes")
        elif isinstance(img, bytes | bytearray):
            data = img
        else:
            raise BadInput(
                f"{file}: column 'image' must hold PNG/JPEG bytes or a struct of bytes and path, "
                f"got {type(img).__name__}"
            )

        def read(data=data) -> np.ndarray:
            if not data:
                raise ValueError("no image bytes")
            return decode_image(bytes(data))

        records.append((f"{file}#{i}", normalize_label("" if lab is None else lab), read))
    if not records:
        raise BadInput(f"{file}: no images (the parquet file has no rows)")
    return records


def _split_parquet(folder: Path, split: str) -> Path | None:
    for pattern in (f"{split}.parquet", f"{split}-*.parquet", f"data/{split}-*.parquet"):
        hits = sorted(folder.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise BadInput(f"{folder}: several parquet files for split '{split}': {hits[:3]}")
    return None


# ---- recording ----------------------------------------------------------------------------


def _is_recording(folder: Path) -> bool:
    return (folder / "labels.csv").is_file() and (folder / "frames").is_dir()


def _recording_records(folder: Path) -> list[Record]:
    frames = {}
    for p in image_files(folder / "frames"):
        if p.stem.isdigit():
            frames[int(p.stem)] = p
    csv_path = folder / "labels.csv"
    records: list[Record] = []
    with open(csv_path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != ["frame", "label"]:
            raise BadInput(f"{csv_path}: header must be 'frame,label', got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip().isdigit():
                raise BadInput(f"{csv_path}:{line_no}: expected 'frame,label', got {row!r}")
            idx = int(row[0])
            if idx not in frames:
                raise BadInput(
                    f"{csv_path}:{line_no}: frame {idx} has no file in {folder / 'frames'}"
                )
            p = frames[idx]
            records.append((str(p), normalize_label(row[1]), _read_file(p)))
    if not records:
        raise BadInput(f"{csv_path}: no frames listed")
    return sorted(records, key=lambda r: r[0])


def recording_roi(folder: Path) -> Roi:
    roi_path = folder / "roi.json"
    if not roi_path.is_file():
        raise BadInput(f"{folder}: a recording needs roi.json (or pass the ROI explicitly)")
    try:
        d = json.loads(roi_path.read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{roi_path}: not valid JSON ({e})") from None
    return Roi.from_dict(d, where=str(roi_path))


# ---- hub ----------------------------------------------------------------------------------


def _hub_records(hub_id: str, split: str | None) -> list[Record]:
    try:
        import datasets
    except ImportError:
        raise MissingExtra("loading a Hugging Face dataset", "hub") from None
    split = split or "train"
    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as e:  # network, auth, unknown id, unknown split
        raise BadInput(
            f"cannot load Hugging Face dataset {hub_id!r} split {split!r}: {e}"
        ) from None
    missing = [c for c in PARQUET_COLUMNS if c not in ds.column_names]
    if missing:
        raise BadInput(f"Hugging Face dataset {hub_id!r}: columns {ds.column_names} lack {missing}")
    names = None
    feat = ds.features.get("label")
    if feat is not None and hasattr(feat, "int2str"):
        names = feat.int2str
    records: list[Record] = []
    for i, row in enumerate(ds):
        lab = row["label"]
        lab = names(lab) if names is not None and isinstance(lab, int) else lab

        def read(img=row["image"]) -> np.ndarray:
            if isinstance(img, dict):
                return decode_image(bytes(img.get("bytes") or b""))
            arr = np.asarray(img)  # a PIL image: RGB(A) channel order
            if arr.ndim == 3 and arr.shape[2] in (3, 4):
                arr = np.ascontiguousarray(arr[:, :, [2, 1, 0]])
            return arr

        records.append((f"{hub_id}@{split}#{i}", normalize_label(lab), read))
    if not records:
        raise BadInput(f"Hugging Face dataset {hub_id!r} split {split!r} is empty")
    return records


# ---- dispatch -----------------------------------------------------------------------------


def _resolve(path: str | Path, split: str | None) -> tuple[list[Record], Roi | None, str]:
    """The records of PATH (one split), the ROI the source carries, and a source description."""
    p = Path(path)
    if not p.exists():
        # owner/name is a hub id unless "owner" is a local folder (then it is a typo'd path)
        if isinstance(path, str) and _HUB_ID.match(path) and not p.parent.is_dir():
            return _hub_records(path, split), None, path
        raise BadInput(f"{path}: path does not exist")
    if p.is_file():
        if p.suffix.lower() == ".parquet":
            return _parquet_records(p), None, str(p)
        raise BadInput(f"{p}: not a dataset (expected a folder or a .parquet file)")
    if split == "recording" and _is_recording(p / "recording"):
        p = p / "recording"
    if _is_recording(p):
        return _recording_records(p), recording_roi(p), str(p)

    have = [s for s in SPLITS if (p / s).is_dir() or _split_parquet(p, s) is not None]
    if have:
        chosen = split or ("train" if "train" in have else have[0])
        if chosen not in have:
            raise BadInput(f"{p}: no '{chosen}' split (found {', '.join(have)})")
        if (p / chosen).is_dir():
            return _folder_records(p / chosen), None, str(p / chosen)
        pq_file = _split_parquet(p, chosen)
        assert pq_file is not None
        return _parquet_records(pq_file), None, str(pq_file)
    if split is not None and split != p.name:
        labels = [d.name for d in _subdirs(p)]
        if not labels:
            raise BadInput(f"{p}: empty folder (no train/, test/ or <label>/ subfolders)")
        raise BadInput(f"{p}: no '{split}' split (found label folders {', '.join(labels[:8])})")
    if not any(p.iterdir()):
        raise BadInput(f"{p}: empty folder")
    return _folder_records(p), None, str(p)


@dataclass
class _Seen:
    """What loading saw of the raw images besides the prepared patches."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    n_color: int = 0


def _prepared(
    records: list[Record], spec: InputSpec, roi: Roi | None, seen: _Seen
) -> Iterator[tuple[np.ndarray, str, str]]:
    for path, label, read in records:
        try:
            raw = read()
        except ValueError as e:
            seen.skipped.append((path, str(e)))
            continue
        try:
            img = prepare(raw, spec, roi)
        except BadInput as e:
            seen.skipped.append((path, str(e)))
            continue
        seen.sizes.append(crop(raw, roi).shape[:2])
        if spec.channels == 3 and is_color(crop(raw, roi)):
            seen.n_color += 1
        yield img, label, path


def iter_labeled(
    path: str | Path,
    split: str | None = None,
    spec: InputSpec = InputSpec(),  # noqa: B008 — frozen dataclass
    roi: Roi | None = None,
) -> Iterator[tuple[np.ndarray, str, str]]:
    """(uint8 H×W image, label, path) one at a time, sorted by path. Unreadable records are
    reported with a warning at the end (use `load_labeled` to get them as a list)."""
    records, src_roi, _ = _resolve(path, split)
    seen = _Seen()
    yield from _prepared(records, spec, roi or src_roi, seen)
    skipped = seen.skipped
    if skipped:
        warnings.warn(
            f"{path}: skipped {len(skipped)} unreadable images (first: {skipped[0][0]}: "
            f"{skipped[0][1]})",
            stacklevel=2,
        )


def load_labeled(
    path: str | Path,
    split: str | None = None,
    spec: InputSpec = InputSpec(),  # noqa: B008 — frozen dataclass
    roi: Roi | None = None,
    require_both: bool = False,
) -> LabeledImages:
    """Load a whole dataset (one split) into memory. See the module docstring for sources."""
    records, src_roi, source = _resolve(path, split)
    seen = _Seen()
    skipped = seen.skipped
    images, labels, paths = [], [], []
    for img, label, p in _prepared(records, spec, roi or src_roi, seen):
        images.append(img)
        labels.append(label)
        paths.append(p)
    if not images:
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise BadInput(f"{source}: none of the {len(records)} images could be read{first}")
    if require_both:
        n_def = sum(lab != GOOD for lab in labels)
        if n_def == 0 or n_def == len(labels):
            only = "defective" if n_def else "good"
            raise BadInput(
                f"{source}: needs both good and defective images, found only {only} "
                f"({len(labels)} images)"
            )
    return LabeledImages(
        images=np.stack(images).astype(np.uint8, copy=False),
        labels=labels,
        paths=paths,
        source=source,
        skipped=skipped,
        raw_sizes=seen.sizes,
        n_color=seen.n_color,
        names=label_names(path, set(labels)),
    )


def image_sizes(
    path: str | Path, split: str | None = None, roi: Roi | None = None, limit: int = 256
) -> list[tuple[int, int]]:
    """(h, w) of up to `limit` images spread evenly over the dataset (after the ROI crop):
    enough to choose an input size without decoding a large dataset twice."""
    records, src_roi, _ = _resolve(path, split)
    step = max(1, len(records) // max(1, limit))
    sizes = []
    for _, _, read in records[::step][:limit]:
        try:
            sizes.append(crop(read(), roi or src_roi).shape[:2])
        except (ValueError, BadInput):
            continue
    return sizes


# ---- label names --------------------------------------------------------------------------

NAMES_FILES = ("labels.json", "labels.csv")


def _names_file(path: Path) -> Path | None:
    """labels.json / labels.csv in the dataset folder, or beside the split folder it names."""
    folders = [path] if path.is_dir() else []
    if path.name in (*SPLITS, "recording") or path.is_file():
        folders.append(path.parent)
    for folder in folders:
        for name in NAMES_FILES:
            f = folder / name
            if f.is_file() and not _is_recording(folder):
                return f
    return None


def _read_names_file(f: Path) -> dict[str, str]:
    try:
        text = f.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{f}: cannot read it ({e})") from None
    if f.suffix == ".json":
        try:
            d = json.loads(text)
        except ValueError as e:
            raise BadInput(f"{f}: not valid JSON ({e})") from None
        if not isinstance(d, dict) or not all(isinstance(v, str) for v in d.values()):
            raise BadInput(f'{f}: must be a JSON object of label → name, e.g. {{"1": "burr"}}')
        return {normalize_label(k): v.strip() for k, v in d.items()}
    rows = list(csv.reader(text.splitlines()))
    if not rows or [h.strip().lower() for h in rows[0]] != ["label", "name"]:
        raise BadInput(f"{f}: header must be 'label,name', got {rows[0] if rows else 'nothing'}")
    names = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise BadInput(f"{f}:{line_no}: expected 'label,name', got {row!r}")
        names[normalize_label(row[0])] = row[1].strip()
    return names


def _labels_on_disk(root: Path) -> set[str]:
    """Every label folder of a folder dataset, over its splits (names may cover test-only
    labels)."""
    found: set[str] = set()
    for base in [root, *(root / s for s in SPLITS)]:
        if base.is_dir():
            found |= {normalize_label(d.name) for d in _subdirs(base) if d.name not in SPLITS}
    return found


def default_name(label: str) -> str:
    """A label without a names file: good → "good", a bare number N → "defect N", else itself."""
    if label == GOOD:
        return "good"
    return f"defect {label}" if label.isdigit() else label


def label_names(path: str | Path, labels: set[str]) -> dict[str, str]:
    """label → name for every label in `labels`, from a names file beside the data when there is
    one. A names file that names labels the data does not have is refused: it was written for
    other data, or a folder was renamed."""
    p = Path(path)
    f = _names_file(p) if p.exists() else None
    names = _read_names_file(f) if f is not None else {}
    if f is not None:
        known = labels | (_labels_on_disk(f.parent) if f.parent.is_dir() else set())
        unknown = sorted(set(names) - known - {GOOD})
        if unknown:
            raise BadInput(
                f"{f}: names labels that are not in the data: {', '.join(unknown)} "
                f"(label folders found: {', '.join(sorted(known)) or 'none'})"
            )
    return {lab: names.get(lab) or default_name(lab) for lab in sorted(labels)}

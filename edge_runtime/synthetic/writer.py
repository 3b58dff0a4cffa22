"""Generate a whole synthetic line: dataset splits, the camera recording, manifest and preview.

Every image has its own random stream, seeded by (seed, split, index), so the output does not
depend on the number of worker processes: the same seed gives byte-identical files.

Two products: `terminal` (crimped ring terminals on a belt, 26×36 stills; this module) and `tile`
(photographed surface crops of varying size; `tile_line`). Both write a defect mask per defective
image (OUT/ground_truth/, MVTec AD's layout, in either format). The helpers here — label splits,
worker pool, folder/parquet/mask/recording writers — serve both.
"""

from __future__ import annotations

import csv
import ctypes
import io
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.preprocess import Roi
from edge_runtime.synthetic import recording as rec
from edge_runtime.synthetic.baseline import template_auroc
from edge_runtime.synthetic.defects import DEFECT_LABELS, GOOD, LABEL_NAMES, sample_defect
from edge_runtime.synthetic.render import render_still_masked, sample_nuisance

GENERATOR = "twinspect.synthetic"
GENERATOR_VERSION = "1.0"
SPLIT_CODES = {"train": 0, "test": 1, "recording": 2, "flip": 3}
PARALLEL_MIN = 600  # below this many images a worker pool costs more than it saves
MASKS = "ground_truth/<split>/<label>/NNNNNN_mask.png"  # the manifest's "masks"

# Sizes and defect rate when not given: each product's images cost very differently to render.
PRODUCT_DEFAULTS: dict[str, dict[str, float]] = {
    "terminal": {"n_train": 3600, "n_test": 1200, "n_frames": 300, "defect_rate": 0.33},
    "tile": {"n_train": 1000, "n_test": 400, "n_frames": 200, "defect_rate": 0.3},
}


@dataclass(frozen=True)
class Config:
    """What to generate. Counts and defect rate left None take the product's defaults."""

    out: Path
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    n_frames: int | None = None
    defect_rate: float | None = None
    difficulty: float = 1.0
    format: str = "folder"
    flip_labels: float = 0.0
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    product: str = "terminal"

    def resolved(self) -> Config:
        """This config with the product's defaults filled in."""
        if self.product not in PRODUCT_DEFAULTS:
            raise BadInput(
                f"--product must be one of {', '.join(PRODUCT_DEFAULTS)}, got {self.product!r}"
            )
        defaults = PRODUCT_DEFAULTS[self.product]
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def check(self) -> None:
        r = self.resolved()
        if r.n_train < 0 or r.n_test < 0 or r.n_frames < 0:
            raise BadInput("--n-train, --n-test and --n-frames must be ≥ 0")
        if not 0.0 <= r.defect_rate <= 1.0:
            raise BadInput(f"--defect-rate must be in [0, 1], got {r.defect_rate}")
        if not 0.0 <= self.flip_labels <= 1.0:
            raise BadInput(f"--flip-labels must be in [0, 1], got {self.flip_labels}")
        if self.difficulty < 0:
            raise BadInput(f"--difficulty must be ≥ 0, got {self.difficulty}")
        if self.format not in ("folder", "parquet"):
            raise BadInput(f"--format must be folder or parquet, got {self.format!r}")


def split_labels(
    seed: int,
    split: str,
    n: int,
    defect_rate: float,
    defect_labels: tuple[str, ...] = DEFECT_LABELS,
    good: str = GOOD,
) -> list[str]:
    """round(n · rate) defects, the defect types in turn (as even as possible), shuffled."""
    n_def = round(n * defect_rate)
    labels = [defect_labels[i % len(defect_labels)] for i in range(n_def)]
    labels += [good] * (n - n_def)
    order = np.random.default_rng([seed, SPLIT_CODES[split], 1]).permutation(n)
    return [labels[i] for i in order]


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: its own, so workers cannot change the bytes."""
    return np.random.default_rng([seed, SPLIT_CODES[split], 2, index])


def _render_stills(
    args: tuple[int, str, float, list[tuple[int, str]]],
) -> tuple[np.ndarray, list[bytes | None]]:
    """Images uint8 N×26×36 and the PNG of each one's defect mask (None for a good part)."""
    seed, split, difficulty, items = args
    out = np.empty((len(items), 26, 36), np.uint8)
    masks: list[bytes | None] = []
    for k, (i, label) in enumerate(items):
        rng = image_rng(seed, split, i)
        nz = sample_nuisance(rng, difficulty)
        out[k], mask = render_still_masked(nz, sample_defect(rng, label), rng)
        masks.append(None if mask is None else png_bytes(mask))
    return out, masks


def _render_frames(args: tuple[int, float, int, list[tuple[int, str]]]) -> np.ndarray:
    seed, difficulty, n_frames, items = args
    phase = float(np.random.default_rng([seed, SPLIT_CODES["recording"], 1]).uniform(0, 6.28))
    out = np.empty((len(items), rec.FRAME_H, rec.FRAME_W), np.uint8)
    for k, (i, label) in enumerate(items):
        rng = image_rng(seed, "recording", i)
        nz = sample_nuisance(rng, difficulty)
        out[k] = rec.render_frame(
            nz, sample_defect(rng, label), rng, i, n_frames, difficulty, phase
        )
    return out


def quiet_process() -> None:
    """Per-image work is small arrays: OpenCV's thread pool only adds contention, and glibc would
    mmap/munmap every ~130 KB render buffer (half the time in page faults): keep them on the
    heap."""
    cv2.setNumThreads(1)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
        except (OSError, AttributeError):  # not glibc: only slower
            pass


def pool_map(fn, jobs: list, workers: int) -> list:
    """fn over jobs, in order, in `workers` processes (in this one when 1)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers, initializer=quiet_process) as pool:
        return list(pool.map(fn, jobs))


def chunks(items: list, n_chunks: int) -> list[list]:
    size = max(1, math.ceil(len(items) / max(n_chunks, 1)))
    return [items[i : i + size] for i in range(0, len(items), size)]


def render_split(
    seed: int, split: str, labels: list[str], difficulty: float = 1.0, workers: int = 1
) -> np.ndarray:
    """uint8 N×26×36 images of one split, label i for image i."""
    return render_split_masked(seed, split, labels, difficulty, workers)[0]


def render_split_masked(
    seed: int, split: str, labels: list[str], difficulty: float = 1.0, workers: int = 1
) -> tuple[np.ndarray, list[bytes | None]]:
    """`render_split`'s images and, for image i, the PNG of its defect mask (None if good)."""
    items = list(enumerate(labels))
    if not items:
        return np.empty((0, 26, 36), np.uint8), []
    w = workers if len(items) >= PARALLEL_MIN else 1
    jobs = [(seed, split, difficulty, c) for c in chunks(items, 4 * w)]
    parts = pool_map(_render_stills, jobs, w)
    return np.concatenate([p[0] for p in parts]), [m for p in parts for m in p[1]]


def render_recording(
    seed: int, labels: list[str], difficulty: float = 1.0, workers: int = 1
) -> np.ndarray:
    items = list(enumerate(labels))
    if not items:
        return np.empty((0, rec.FRAME_H, rec.FRAME_W), np.uint8)
    w = workers if len(items) >= PARALLEL_MIN // 10 else 1
    jobs = [(seed, difficulty, len(labels), c) for c in chunks(items, 4 * w)]
    return np.concatenate(pool_map(_render_frames, jobs, w))


def flip_train_labels(
    seed: int,
    labels: list[str],
    fraction: float,
    defect_labels: tuple[str, ...] = DEFECT_LABELS,
    good: str = GOOD,
) -> tuple[list[str], list[int]]:
    """Swap good↔defect on round(fraction · N) training labels (a good part gets a random defect
    label). Returns the written labels and the flipped indices (sorted)."""
    n = len(labels)
    k = round(n * fraction)
    if k == 0:
        return list(labels), []
    rng = np.random.default_rng([seed, SPLIT_CODES["flip"]])
    idx = sorted(int(i) for i in rng.choice(n, size=k, replace=False))
    written = list(labels)
    for i in idx:
        written[i] = str(rng.choice(defect_labels)) if labels[i] == good else good
    return written, idx


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise BadInput("could not encode a PNG image")
    return buf.tobytes()


def image_relpath(split: str, label: str, index: int) -> str:
    return f"{split}/{label}/{index:06d}.png"


def write_folder(out: Path, split: str, images: np.ndarray, labels: list[str]) -> list[str]:
    """OUT/<split>/<label>/<NNNNNN>.png; returns the relative paths."""
    return write_folder_png(out, split, [png_bytes(img) for img in images], labels)


def write_folder_png(out: Path, split: str, pngs: list[bytes], labels: list[str]) -> list[str]:
    """Encoded images to OUT/<split>/<label>/<NNNNNN>.png; returns the relative paths."""
    paths = []
    for label in sorted(set(labels)):
        (out / split / label).mkdir(parents=True, exist_ok=True)
    for i, (png, label) in enumerate(zip(pngs, labels, strict=True)):
        rel = image_relpath(split, label, i)
        (out / rel).write_bytes(png)
        paths.append(rel)
    return paths


def mask_relpath(split: str, label: str, index: int) -> str:
    return f"ground_truth/{split}/{label}/{index:06d}_mask.png"


def write_masks(out: Path, split: str, masks: list[bytes | None], labels: list[str]) -> int:
    """The encoded mask of every defective image (None: good, nothing written) to
    OUT/ground_truth/<split>/<label>/<NNNNNN>_mask.png, beside where its image's label puts it
    (whatever the format). Returns how many were written."""
    n = 0
    for i, (mask, label) in enumerate(zip(masks, labels, strict=True)):
        if mask is None:
            continue
        p = out / mask_relpath(split, label, i)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(mask)
        n += 1
    return n


def write_parquet(out: Path, split: str, images: np.ndarray, labels: list[str]) -> list[str]:
    """OUT/<split>.parquet in the Hugging Face image-dataset schema:
    dirname (string), label (string), image (struct<bytes: binary, path: string>)."""
    return write_parquet_png(out, split, [png_bytes(img) for img in images], labels)


def write_parquet_png(out: Path, split: str, pngs: list[bytes], labels: list[str]) -> list[str]:
    """Encoded images to OUT/<split>.parquet (see `write_parquet`); images may differ in size."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtra("parquet output", "parquet") from None
    rels = [image_relpath(split, lab, i) for i, lab in enumerate(labels)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "dirname": pa.array([split] * len(labels), pa.string()),
            "label": pa.array(labels, pa.string()),
            "image": pa.array(
                [{"bytes": png, "path": rel} for png, rel in zip(pngs, rels, strict=True)],
                image_type,
            ),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / f"{split}.parquet", compression="zstd")
    return [f"{split}.parquet#{i}" for i in range(len(labels))]


def write_recording(
    out: Path, frames: np.ndarray, labels: list[str], roi: Roi = rec.ROI, fps: float = rec.FPS
) -> None:
    """OUT/recording/{line.avi, frames/NNNNNN.png, roi.json, labels.csv}."""
    d = out / "recording"
    (d / "frames").mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        (d / "frames" / f"{i:06d}.png").write_bytes(png_bytes(f))
    (d / "roi.json").write_text(json.dumps(roi.to_dict()) + "\n")
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["frame", "label"])
        w.writerows([i, lab] for i, lab in enumerate(labels))
    if len(frames):
        h, w = frames[0].shape
        writer = cv2.VideoWriter(str(d / "line.avi"), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        if not writer.isOpened():
            raise BadInput(f"OpenCV cannot write MJPG video to {d / 'line.avi'}")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
        writer.release()


def contact_sheet(
    images: np.ndarray, labels: list[str], frames: np.ndarray, per_row: int = 10, zoom: int = 4
) -> np.ndarray:
    """A row per label (name written, `per_row` samples at `zoom`× nearest), then a few recorded
    frames with the ROI drawn. BGR uint8."""
    name_w, gap = 170, 4
    tile_h, tile_w = 26 * zoom, 36 * zoom
    width = name_w + per_row * (tile_w + gap)
    rows = []
    labels_arr = np.asarray(labels)
    for lab in LABEL_NAMES:
        row = np.full((tile_h + gap, width, 3), 32, np.uint8)
        cv2.putText(
            row, f"{lab}: {LABEL_NAMES[lab]}", (6, tile_h // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
            (255, 255, 255), 1, cv2.LINE_AA,
        )  # fmt: skip
        idx = np.flatnonzero(labels_arr == lab)[:per_row]
        for k, i in enumerate(idx):
            tile = cv2.resize(images[i], (tile_w, tile_h), interpolation=cv2.INTER_NEAREST)
            x = name_w + k * (tile_w + gap)
            row[:tile_h, x : x + tile_w] = tile[:, :, None]
        rows.append(row)
    if len(frames):
        fr_row = np.full((rec.FRAME_H + 24, width, 3), 32, np.uint8)
        cv2.putText(
            fr_row, "recorded frames (ROI in green)", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
            (255, 255, 255), 1, cv2.LINE_AA,
        )  # fmt: skip
        x = 0
        for f in frames[: max(1, width // (rec.FRAME_W + gap))]:
            bgr = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
            r = rec.ROI
            cv2.rectangle(bgr, (r.x - 1, r.y - 1), (r.x + r.w, r.y + r.h), (0, 200, 0), 1)
            fr_row[24:, x : x + rec.FRAME_W] = bgr
            x += rec.FRAME_W + gap
        rows.append(fr_row)
    return np.vstack(rows)


def log(msg: str) -> None:
    """Progress goes to stderr, so stdout keeps only the summary."""
    print(msg, file=sys.stderr, flush=True)


def generate(cfg: Config) -> dict:
    """Write the whole line under cfg.out; returns the manifest."""
    cfg.check()
    cfg = cfg.resolved()
    threads = cv2.getNumThreads()
    quiet_process()
    try:
        if cfg.product == "tile":
            from edge_runtime.synthetic.tile_line import generate_tile

            return generate_tile(cfg)
        return _generate(cfg)
    finally:
        cv2.setNumThreads(threads)


OWNED = (
    "train",
    "test",
    "recording",
    "ground_truth",
    "train.parquet",
    "test.parquet",
    "flipped.csv",
    "labels.json",
)


def prepare_out(out: Path) -> None:
    """Create OUT, or clear what an earlier generation wrote there (stale images of another seed
    would be read as data). A non-empty folder that is not a generated line is refused."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = json.loads((out / "manifest.json").read_text())["generator"] == GENERATOR
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise BadInput(
                f"--out {out}: folder is not empty and holds no generated line (manifest.json); "
                "choose a new or empty folder"
            )
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def require_format(fmt: str) -> None:
    """Fail before anything is written when the output format needs a missing extra."""
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MissingExtra("parquet output", "parquet") from None


def write_label_names(out: Path, names: dict[str, str]) -> None:
    """OUT/labels.json: label (folder name) → display name, for reports and sidecars."""
    (out / "labels.json").write_text(json.dumps(names, indent=2, ensure_ascii=False) + "\n")


def write_split(
    cfg: Config,
    split: str,
    pngs: list[bytes],
    labels: list[str],
    manifest: dict,
    defect_labels: tuple[str, ...] = DEFECT_LABELS,
    good: str = GOOD,
) -> list[str]:
    """Write one split's encoded images in cfg.format — training labels flipped first when
    asked, the flips listed in OUT/flipped.csv — and count it in the manifest. Returns the labels
    as written."""
    out = Path(cfg.out)
    flip = split == "train" and cfg.flip_labels > 0
    written, flipped = labels, []
    if flip:
        written, flipped = flip_train_labels(cfg.seed, labels, cfg.flip_labels, defect_labels, good)
        manifest["true_counts_train"] = dict(sorted(Counter(labels).items()))
    write = write_folder_png if cfg.format == "folder" else write_parquet_png
    paths = write(out, split, pngs, written)
    if flip:
        with open(out / "flipped.csv", "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["path", "true_label", "written_label"])
            w.writerows([paths[i], labels[i], written[i]] for i in flipped)
        manifest["flipped"] = len(flipped)
    manifest["counts"][split] = dict(sorted(Counter(written).items()))
    return written


def begin(cfg: Config, product: str, names: dict[str, str], fields: dict) -> tuple[Path, dict]:
    """What every product does first: OUT prepared, labels.json written, and the manifest's
    common head followed by the product's own `fields`."""
    out = Path(cfg.out)
    require_format(cfg.format)
    prepare_out(out)
    write_label_names(out, names)
    manifest: dict = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "product": product,
        "seed": cfg.seed,
        "difficulty": cfg.difficulty,
        "defect_rate": cfg.defect_rate,
        "flip_labels": cfg.flip_labels,
        "format": cfg.format,
        **fields,
    }
    return out, manifest


def _generate(cfg: Config) -> dict:
    fields = {
        "image_size": {"height": 26, "width": 36},
        "label_names": LABEL_NAMES,
        "masks": MASKS,
        "counts": {},
    }
    out, manifest = begin(cfg, cfg.product, LABEL_NAMES, fields)
    t_all = time.perf_counter()
    data: dict[str, tuple[np.ndarray, list[str]]] = {}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        t0 = time.perf_counter()
        labels = split_labels(cfg.seed, split, n, cfg.defect_rate)
        images, masks = render_split_masked(cfg.seed, split, labels, cfg.difficulty, cfg.workers)
        written = write_split(cfg, split, [png_bytes(img) for img in images], labels, manifest)
        write_masks(out, split, masks, written)
        data[split] = (images, written)
        log(f"{split}: {n} images … done in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    rec_labels = split_labels(cfg.seed, "recording", cfg.n_frames, cfg.defect_rate)
    frames = render_recording(cfg.seed, rec_labels, cfg.difficulty, cfg.workers)
    if cfg.n_frames:
        write_recording(out, frames, rec_labels)
    manifest["counts"]["recording"] = dict(sorted(Counter(rec_labels).items()))
    manifest["recording"] = {
        "frame_size": {"width": rec.FRAME_W, "height": rec.FRAME_H},
        "roi": rec.ROI.to_dict(),
        "fps": rec.FPS,
    }
    log(f"recording: {cfg.n_frames} frames … done in {time.perf_counter() - t0:.1f} s")

    if cfg.n_train and cfg.n_test:
        res = template_auroc(*data["train"], *data["test"])
        manifest["template_baseline_auroc"] = {k: round(v, 4) for k, v in res.items()}
    sheet_src = data["test"] if cfg.n_test else data["train"]
    cv2.imwrite(str(out / "preview.png"), contact_sheet(*sheet_src, frames))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["seconds"] = round(time.perf_counter() - t_all, 2)
    return manifest


def summary(cfg: Config, manifest: dict) -> str:
    """What was written, where, and how hard the naive baseline finds it (for stdout)."""
    buf = io.StringIO()
    c = manifest["counts"]
    good = next((k for k, v in manifest["label_names"].items() if v == "good"), GOOD)

    def fmt(split: str) -> str:
        counts = c.get(split, {})
        n = sum(counts.values())
        bad = n - counts.get(good, 0)
        return f"{n} ({bad} defective)"

    where = (
        f"{cfg.out}/train/ {cfg.out}/test/"
        if cfg.format == "folder"
        else f"{cfg.out}/train.parquet {cfg.out}/test.parquet"
    )
    print(
        f"generated {manifest.get('product', 'terminal')} line in {manifest['seconds']:.1f} s "
        f"(seed {cfg.seed}, difficulty {cfg.difficulty}):",
        file=buf,
    )
    print(f"  train {fmt('train')}, test {fmt('test')}  → {where}", file=buf)
    if "masks" in manifest:
        print(f"  defect masks → {cfg.out}/{manifest['masks']}", file=buf)
    if sum(c.get("recording", {}).values()):
        print(f"  recording {fmt('recording')} frames → {cfg.out}/recording/", file=buf)
    if manifest.get("flipped"):
        print(f"  {manifest['flipped']} train labels flipped → {cfg.out}/flipped.csv", file=buf)
    if "template_baseline_auroc" in manifest:
        size = manifest.get("baseline_input")
        at = f" (images stretched to {size['height']}×{size['width']})" if size else ""
        print(
            f"  naive template baseline AUROC {manifest['template_baseline_auroc']['all']:.3f}{at}",
            file=buf,
        )
    print(f"  preview: {cfg.out}/preview.png   manifest: {cfg.out}/manifest.json", file=buf)
    return buf.getvalue().rstrip("\n")

"""Generate the tile product: splits with defect masks, the camera recording, preview, manifest.

    twinspect generate --product tile --out data/tile

Layout (as MVTec AD and the photographed tile set): OUT/<split>/<label>/NNNNNN.png with named
labels, each image its own size; OUT/ground_truth/<split>/<label>/NNNNNN_mask.png (0/255, the
image's size) for every defective image, in both output formats; OUT/labels.json; OUT/recording/.

Workers render *and* PNG-encode, so the parent only writes bytes; each image still has its own
random stream (seed, split, index), so the bytes do not depend on the number of workers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.preprocess import resize
from edge_runtime.synthetic import tile as tl
from edge_runtime.synthetic.baseline import template_auroc
from edge_runtime.synthetic.tile_defects import DEFECT_LABELS, GOOD, LABEL_NAMES
from edge_runtime.synthetic.tile_surface import ASPECT, PREVIEW_PX, SIDE_PX
from edge_runtime.synthetic.writer import (
    MASKS,
    SPLIT_CODES,
    Config,
    begin,
    chunks,
    image_rng,
    log,
    png_bytes,
    pool_map,
    split_labels,
    write_masks,
    write_recording,
    write_split,
)

PARALLEL_MIN = 24  # a tile costs ~10 ms, so a pool pays off early
BASELINE_SIZE = (64, 64)  # the naive baseline sees images stretched to this, like load_labeled


@dataclass(frozen=True)
class Still:
    """One rendered image as the parent needs it: encoded, plus a small copy for the baseline."""

    png: bytes
    mask_png: bytes | None  # None for a good part
    small: np.ndarray  # uint8 BASELINE_SIZE, the image stretched (INTER_AREA) as loaders do
    shape: tuple[int, int]


def _render_stills(args: tuple[int, str, float, list[tuple[int, str]]]) -> list[Still]:
    seed, split, difficulty, items = args
    out = []
    for i, label in items:
        img, mask = tl.render_still(image_rng(seed, split, i), label, difficulty)
        out.append(
            Still(
                png_bytes(img),
                None if mask is None else png_bytes(mask),
                resize(img, BASELINE_SIZE),
                (int(img.shape[0]), int(img.shape[1])),
            )
        )
    return out


def _render_frames(args: tuple[int, float, int, list[tuple[int, str]]]) -> np.ndarray:
    seed, difficulty, n_frames, items = args
    phase = float(np.random.default_rng([seed, SPLIT_CODES["recording"], 1]).uniform(0, 6.28))
    out = np.empty((len(items), tl.FRAME_H, tl.FRAME_W), np.uint8)
    for k, (i, label) in enumerate(items):
        rng = image_rng(seed, "recording", i)
        out[k] = tl.render_frame(rng, label, i, n_frames, difficulty, phase)
    return out


def render_split(
    seed: int, split: str, labels: list[str], difficulty: float = 1.0, workers: int = 1
) -> list[Still]:
    """The stills of one split, image i with label i."""
    items = list(enumerate(labels))
    w = workers if len(items) >= PARALLEL_MIN else 1
    jobs = [(seed, split, difficulty, c) for c in chunks(items, 4 * w)]
    return [s for part in pool_map(_render_stills, jobs, w) for s in part]


def render_recording(
    seed: int, labels: list[str], difficulty: float = 1.0, workers: int = 1
) -> np.ndarray:
    """The camera frames, uint8 N×480×640."""
    items = list(enumerate(labels))
    if not items:
        return np.empty((0, tl.FRAME_H, tl.FRAME_W), np.uint8)
    w = workers if len(items) >= PARALLEL_MIN else 1
    jobs = [(seed, difficulty, len(labels), c) for c in chunks(items, 4 * w)]
    return np.concatenate(pool_map(_render_frames, jobs, w))


def _letterbox(img: np.ndarray, mask: np.ndarray | None, size: int) -> np.ndarray:
    """The image shrunk (aspect kept) to fit size×size on dark gray, mask outlined in red; BGR."""
    h, w = img.shape
    f = size / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    tile = np.full((size, size, 3), 32, np.uint8)
    x, y = (size - nw) // 2, (size - nh) // 2
    tile[y : y + nh, x : x + nw] = small[:, :, None]
    if mask is not None:
        m = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA) > 0
        contours, _ = cv2.findContours(
            m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(tile, contours, -1, (0, 0, 255), 1, offset=(x, y))
    return tile


def contact_sheet(
    stills: list[Still], labels: list[str], frames: np.ndarray, per_row: int = 8
) -> np.ndarray:
    """A row per label (each image letterboxed to PREVIEW_PX — the scale at which every defect
    must be visible — mask outlined in red), then recorded frames at half size with the ROI in
    green. BGR uint8."""
    name_w, gap, t = 190, 4, PREVIEW_PX
    width = name_w + per_row * (t + gap)
    rows = []
    for lab in LABEL_NAMES:
        row = np.full((t + gap, width, 3), 32, np.uint8)
        cv2.putText(
            row, f"{lab}: {LABEL_NAMES[lab]}", (6, t // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
            (255, 255, 255), 1, cv2.LINE_AA,
        )  # fmt: skip
        idx = [i for i, x in enumerate(labels) if x == lab][:per_row]
        for k, i in enumerate(idx):
            img = cv2.imdecode(np.frombuffer(stills[i].png, np.uint8), cv2.IMREAD_GRAYSCALE)
            mp = stills[i].mask_png
            mask = None if mp is None else cv2.imdecode(np.frombuffer(mp, np.uint8), 0)
            x = name_w + k * (t + gap)
            row[:t, x : x + t] = _letterbox(img, mask, t)
        rows.append(row)
    if len(frames):
        fw, fh = tl.FRAME_W // 2, tl.FRAME_H // 2
        fr_row = np.full((fh + 24, width, 3), 32, np.uint8)
        cv2.putText(
            fr_row, "recorded frames, half size (ROI in green)", (6, 16),
            cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA,
        )  # fmt: skip
        for k, f in enumerate(frames[: max(1, width // (fw + gap))]):
            bgr = cv2.cvtColor(
                cv2.resize(f, (fw, fh), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR
            )
            r = tl.ROI
            cv2.rectangle(
                bgr, (r.x // 2 - 1, r.y // 2 - 1), ((r.x + r.w) // 2, (r.y + r.h) // 2),
                (0, 200, 0), 1,
            )  # fmt: skip
            x = k * (fw + gap)
            fr_row[24:, x : x + fw] = bgr
        rows.append(fr_row)
    return np.vstack(rows)


def _observed(stills: list[Still]) -> dict:
    hs = [s.shape[0] for s in stills]
    ws = [s.shape[1] for s in stills]
    aspects = [w / h for h, w in zip(hs, ws, strict=True)]
    return {
        "height": [min(hs), max(hs)],
        "width": [min(ws), max(ws)],
        "aspect": [round(min(aspects), 3), round(max(aspects), 3)],
    }


def generate_tile(cfg: Config) -> dict:
    """Write the tile line under cfg.out (cfg already resolved and checked); the manifest."""
    fields = {
        "image_size": {"sides_px": list(SIDE_PX), "aspect_w_over_h": list(ASPECT)},
        "defect_unit": f"1 px of the image shrunk (aspect kept) to fit {PREVIEW_PX}×{PREVIEW_PX}",
        "label_names": LABEL_NAMES,
        "masks": MASKS,
        "counts": {},
    }
    out, manifest = begin(cfg, "tile", LABEL_NAMES, fields)
    t_all = time.perf_counter()
    data: dict[str, tuple[list[Still], list[str]]] = {}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        t0 = time.perf_counter()
        labels = split_labels(cfg.seed, split, n, cfg.defect_rate, DEFECT_LABELS, GOOD)
        stills = render_split(cfg.seed, split, labels, cfg.difficulty, cfg.workers)
        pngs = [s.png for s in stills]
        written = write_split(cfg, split, pngs, labels, manifest, DEFECT_LABELS, GOOD)
        write_masks(out, split, [s.mask_png for s in stills], written)
        data[split] = (stills, written)
        log(f"{split}: {n} images … done in {time.perf_counter() - t0:.1f} s")
    every = data["train"][0] + data["test"][0]
    if every:
        manifest["image_size"]["observed"] = _observed(every)

    t0 = time.perf_counter()
    rec_labels = split_labels(
        cfg.seed, "recording", cfg.n_frames, cfg.defect_rate, DEFECT_LABELS, GOOD
    )
    frames = render_recording(cfg.seed, rec_labels, cfg.difficulty, cfg.workers)
    if cfg.n_frames:
        write_recording(out, frames, rec_labels, tl.ROI, tl.FPS)
    manifest["counts"]["recording"] = {k: rec_labels.count(k) for k in sorted(set(rec_labels))}
    manifest["recording"] = {
        "frame_size": {"width": tl.FRAME_W, "height": tl.FRAME_H},
        "roi": tl.ROI.to_dict(),
        "fps": tl.FPS,
    }
    log(f"recording: {cfg.n_frames} frames … done in {time.perf_counter() - t0:.1f} s")

    (tr, tr_lab), (te, te_lab) = data["train"], data["test"]
    if GOOD in tr_lab and GOOD in te_lab and len(set(te_lab)) > 1:
        res = template_auroc(
            np.stack([s.small for s in tr]), tr_lab, np.stack([s.small for s in te]), te_lab,
            good_label=GOOD,
        )  # fmt: skip
        manifest["template_baseline_auroc"] = {k: round(v, 4) for k, v in res.items()}
        h, w = BASELINE_SIZE
        manifest["baseline_input"] = {"height": h, "width": w, "resize": "stretched, INTER_AREA"}
    sheet_src = data["test"] if cfg.n_test else data["train"]
    cv2.imwrite(str(out / "preview.png"), contact_sheet(*sheet_src, frames))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["seconds"] = round(time.perf_counter() - t_all, 2)
    return manifest

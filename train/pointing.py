"""Does the heatmap point at the defect? The pointing game on a generated line with masks.

    python -m train.pointing --model MODEL_DIR --data DATA_DIR [--split test] [--sheet FILE]

For every defective image of the split that the model rejects (NG or NOVEL), the heatmap's peak
(edge_runtime.heatmap, exactly what `twinspect run --save-ng` writes) is a hit when it lands on
the true defect mask (`DATA/ground_truth/<split>/<label>/<name>_mask.png`, written by
`twinspect generate`, either product), allowing `--tolerance` pixels (default: 2% of the image's
short side) for the heatmap's cell resolution. Prints the hit rate per defect kind as a
markdown table and, with --sheet, a contact sheet of a few overlays for people.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.datasets import GOOD, image_files, normalize_label, read_image_file
from edge_runtime.errors import BadInput
from edge_runtime.heatmap import heat_of, overlay
from edge_runtime.inspector import Inspector
from edge_runtime.model import load_model_dir


def mask_for(data: Path, split: str, label: str, image: Path) -> np.ndarray | None:
    p = data / "ground_truth" / split / label / f"{image.stem}_mask.png"
    m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    return None if m is None else m > 0


def pointing(model_dir: Path, data: Path, split: str, tolerance: float, per_kind: int) -> dict:
    model = load_model_dir(model_dir)
    insp = Inspector(model)
    score = model.score_batch
    root = data / split
    if not root.is_dir():
        raise BadInput(f"{root}: no such split folder")
    out: dict = {"kinds": {}, "examples": []}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = sub.name
        if normalize_label(label) == GOOD:
            continue
        hits = judged_ng = no_mask = 0
        for f in image_files(sub)[:per_kind]:
            img = read_image_file(f)
            j = insp.inspect(img)
            if j.verdict not in ("NG", "NOVEL"):  # only rejected parts get a heatmap
                continue
            judged_ng += 1
            mask = mask_for(data, split, label, f)
            if mask is None:
                no_mask += 1
                continue
            heat = heat_of(insp.patch(img), img.shape, model.spec, score, model.residual)
            tol = max(1, round(tolerance * min(mask.shape)))
            near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * tol + 1,) * 2, np.uint8))
            x, y = heat.peak_xy
            hit = bool(near[y, x])
            hits += hit
            if len([e for e in out["examples"] if e["label"] == label]) < 2:
                out["examples"].append(
                    {"label": label, "image": str(f), "hit": hit, "peak": heat.peak_xy}
                )
        out["kinds"][label] = {
            "ng": judged_ng,
            "hits": hits,
            "rate": hits / max(1, judged_ng - no_mask),
            "no_mask": no_mask,
        }
    return out


def sheet(model_dir: Path, examples: list[dict], path: Path, side: int = 200) -> None:
    """Overlays side by side (original | heat), one row per example, for the README."""
    model = load_model_dir(model_dir)
    insp = Inspector(model)
    score = model.score_batch
    rows = []
    for e in examples:
        img = read_image_file(Path(e["image"]))
        heat = heat_of(insp.patch(img), img.shape, model.spec, score, model.residual)
        pair = []
        for im in (cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img,
                   overlay(img, heat, model.spec)):  # fmt: skip
            s = side / max(im.shape[:2])
            im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)))
            tile = np.full((side, side, 3), 32, np.uint8)
            tile[: im.shape[0], : im.shape[1]] = im
            pair.append(tile)
        row = np.hstack([pair[0], np.full((side, 4, 3), 32, np.uint8), pair[1]])
        cv2.putText(row, e["label"], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
        rows.append(row)
    grid = [np.hstack(rows[i : i + 2]) if i + 1 < len(rows) else rows[i]
            for i in range(0, len(rows), 2)]  # fmt: skip
    width = max(g.shape[1] for g in grid)
    grid = [np.pad(g, ((0, 4), (0, width - g.shape[1]), (0, 0))) for g in grid]
    cv2.imwrite(str(path), np.vstack(grid))


def markdown(res: dict) -> str:
    lines = ["| defect kind | rejected | peak on the mask | rate |", "|---|---|---|---|"]
    for k, v in res["kinds"].items():
        lines.append(f"| {k} | {v['ng']} | {v['hits']} | {v['rate']:.0%} |")
    total = sum(v["hits"] for v in res["kinds"].values())
    n = sum(v["ng"] - v["no_mask"] for v in res["kinds"].values())
    lines.append(f"| all | {n} | {total} | {total / max(1, n):.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.pointing", description=__doc__)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--per-kind", type=int, default=1000)
    ap.add_argument("--sheet", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        res = pointing(args.model, args.data, args.split, args.tolerance, args.per_kind)
    except BadInput as e:
        print(f"pointing: error: {e}", file=sys.stderr)
        return 2
    print(markdown(res))
    if args.sheet:
        sheet(args.model, res["examples"], args.sheet)
        print(f"wrote {args.sheet}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`twinspect audit`: records whose label disagrees with their score, ranked, for a person to check.

A good-labeled part far from the reference, or a defect-labeled part close to it, is either a
hard case or a wrong label. Scores are put on one scale with a robust z-score (median and MAD
of the good-labeled scores, so a few mislabeled records barely move it). The cut between "looks
good" and "looks defective" is the z that agrees with the most labels of the audited data — not
the run's threshold: a recall-targeted threshold is dragged into the good cluster by a handful of
good parts labeled defect, which are exactly the records the audit is for. A record's
disagreement is how far it sits on the wrong side of that cut, in robust z units:
    good-labeled:   z − z_cut        defect-labeled:   z_cut − z
The disagreeing records (disagreement > 0), most disagreeing first, go to a CSV and a contact
sheet; `twinspect train --exclude THAT.csv` retrains without the listed records.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.preprocess import to_tensor
from edge_runtime.scoring import part_scores
from edge_runtime.sidecar import Sidecar
from train.fit import GOOD, check_images, embed
from train.run_folder import read_reference

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


@dataclass
class AuditResult:
    paths: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    z: np.ndarray
    disagreement: np.ndarray
    order: np.ndarray  # indices of the disagreeing records, most suspicious first
    z_cut: float  # robust z separating "looks good" from "looks defective"
    images: np.ndarray


def read_run(run: Path) -> Sidecar:
    if not (run / "embedding.keras").is_file():
        raise BadInput(f"{run}: not a training run (needs embedding.keras and reference.json)")
    return read_reference(run)


def robust_z(scores: np.ndarray, is_good: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(z, median, sigma) with median and MAD·1.4826 of the good-labeled scores."""
    good = scores[is_good]
    if good.size == 0:
        raise BadInput("the audit needs good-labeled (label 0) records to set the scale")
    med = float(np.median(good))
    sigma = float(np.median(np.abs(good - med))) * MAD_TO_SIGMA
    if sigma <= 0:
        sigma = float(np.std(good)) or 1.0
    return (scores - med) / sigma, med, sigma


def agreement_cut(z: np.ndarray, is_good: np.ndarray) -> float:
    """The cut (midway between two sorted z values) with the fewest records on the wrong side
    of it: good-labeled above, defect-labeled at or below."""
    order = np.argsort(z, kind="stable")
    zs, good = z[order], is_good[order]
    # cut after position k (k = 0..n): defects at or below + goods above
    defects_below = np.r_[0, np.cumsum(~good)]
    goods_above = good.sum() - np.r_[0, np.cumsum(good)]
    wrong = defects_below + goods_above
    k = int(np.argmin(wrong))
    if k == 0:
        return float(zs[0] - 1.0)
    if k == zs.size:
        return float(zs[-1] + 1.0)
    return float((zs[k - 1] + zs[k]) / 2.0)


def audit(run: str | Path, data: str) -> AuditResult:
    from edge_runtime.datasets import load_labeled
    from train.model import load_model

    run = Path(run)
    ref = read_run(run)
    spec = ref.input
    loaded = load_labeled(data, spec=spec)
    images = check_images(loaded.images, spec, data)
    if images.shape[0] == 0:
        raise BadInput(f"{data}: no labeled images found")
    labels = np.asarray([str(v) for v in loaded.labels])
    paths = np.asarray([os.path.normpath(str(p)) for p in loaded.paths])
    embedding = load_model(run / "embedding.keras")
    x = to_tensor(images, spec)
    scores = part_scores(embed(embedding, x), x, ref.reference.vector, ref.metric, ref.fusion, spec)
    is_good = labels == GOOD
    z = robust_z(scores, is_good)[0]
    z_cut = agreement_cut(z, is_good)
    disagreement = np.where(is_good, z - z_cut, z_cut - z)
    cand = np.flatnonzero(disagreement > 0)
    order = cand[np.argsort(-disagreement[cand], kind="stable")]
    return AuditResult(paths, labels, scores, z, disagreement, order, z_cut, images)


def write_csv(res: AuditResult, path: Path, top: int) -> np.ndarray:
    sel = res.order if top <= 0 else res.order[:top]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "path", "label", "score", "robust_z", "disagreement", "why"])
        for rank, i in enumerate(sel, 1):
            why = "good far from reference" if res.labels[i] == GOOD else "defect near reference"
            w.writerow(
                [
                    rank,
                    res.paths[i],
                    res.labels[i],
                    f"{res.scores[i]:.6g}",
                    f"{res.z[i]:.3f}",
                    f"{res.disagreement[i]:.3f}",
                    why,
                ]
            )
    os.replace(tmp, path)
    return sel


def contact_sheet(res: AuditResult, sel: np.ndarray, path: Path, max_images: int = 60) -> None:
    from train.report import _plt

    plt = _plt()
    sel = sel[:max_images]
    cols = 10
    rows = max(1, -(-sel.size // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.25), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(sel):
        ax = axes.ravel()[k]
        ax.imshow(res.images[i], cmap="gray", vmin=0, vmax=255)
        color = "tab:red" if res.labels[i] == GOOD else "tab:blue"
        ax.set_title(f"#{k + 1} lab {res.labels[i]}\nz {res.z[i]:.1f}", fontsize=7, color=color)
    fig.suptitle(
        "Audit: labels that disagree with the score (red: labeled good but far, "
        "blue: labeled defect but near)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

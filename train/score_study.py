"""Which score should a trained embedding ship with? Every candidate on the same embeddings.

    python -m train.score_study --model MODEL_DIR --data DATA_DIR [--markdown]

The exported network (onnxruntime, the line's own path) embeds the good training images and the
test split once; each candidate score is then fitted on the good training embeddings only and
evaluated on test: AUROC overall and per defect kind. Candidates: distance to the mean good
embedding (the shipped default, Minkowski p=4, and Euclidean), Mahalanobis with Ledoit–Wolf
shrinkage, and k-nearest-neighbour distance to a greedy coreset of good embeddings (k = 1, 3).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_runtime.datasets import GOOD, load_labeled
from edge_runtime.evaluation import auroc
from edge_runtime.model import load_model_dir
from edge_runtime.preprocess import to_tensor
from edge_runtime.scoring import Metric, coreset, distances, fit_inv_cov


def embed_all(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = [
        model.embed(to_tensor(images[i : i + batch], model.spec))
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out).astype(np.float64)


def candidates(good: np.ndarray) -> dict[str, tuple[Metric, np.ndarray]]:
    mean = good.mean(axis=0)
    bank = coreset(good)
    return {
        "mean, Minkowski p=4 (default)": (Metric("minkowski", 4.0), mean),
        "mean, Euclidean": (Metric("euclidean"), mean),
        "Mahalanobis (Ledoit–Wolf)": (Metric("mahalanobis", inv_cov=fit_inv_cov(good)[0]), mean),
        "kNN k=1, coreset": (Metric("knn", bank=bank, k=1), mean),
        "kNN k=3, coreset": (Metric("knn", bank=bank, k=3), mean),
    }


def study(model_dir: Path, data: Path) -> dict:
    model = load_model_dir(model_dir)
    train = load_labeled(data, "train", model.spec)
    test = load_labeled(data, "test", model.spec)
    good = embed_all(model, train.images[~train.is_defect])
    emb = embed_all(model, test.images)
    lab = np.asarray(test.labels)
    kinds = sorted(set(lab.tolist()) - {GOOD})
    res = {}
    for name, (metric, ref) in candidates(good).items():
        s = distances(emb, ref, metric)
        per = {}
        for k in kinds:
            keep = (lab == GOOD) | (lab == k)
            per[k] = auroc(s[keep], lab[keep] == k)
        res[name] = {"auroc": auroc(s, lab != GOOD), "per_label": per}
    return res


def markdown(res: dict) -> str:
    kinds = sorted(next(iter(res.values()))["per_label"])
    lines = ["| score | AUROC | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 2) + "|"]
    for name, r in res.items():
        per = " | ".join(f"{r['per_label'][k]:.3f}" for k in kinds)
        lines.append(f"| {name} | {r['auroc']:.3f} | {per} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.score_study", description=__doc__)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    args = ap.parse_args(argv)
    print(markdown(study(args.model, args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

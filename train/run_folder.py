"""The run folder: written to a temporary folder next to RUN, moved into place only on success.

Contract (export and audit read it; keep the names):
  model.keras       the twin network (two inputs → distance)
  embedding.keras   the embedding branch that ships
  reference.json    arch, input, roi, reference, metric, threshold, labels, training — the same
                    sections and field names as the sidecar (edge_runtime.sidecar.Sidecar)
  validation.npz    images (uint8 N×H×W), labels (str), paths (str), scores (float64) of the
                    validation split, scored by training with the Keras embeddings
  config.json       every setting, the data source and the hash of the data list
  metrics.json      validation figures (reference-based and pair-based), hold-out, loss
  *.png, report.md  plots and a readable summary
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_runtime import __version__
from edge_runtime.errors import BadInput, BadModel
from edge_runtime.files import read_json_object
from edge_runtime.sidecar import SCHEMA_VERSION, Sidecar, input_block
from train.fit import GOOD, Result, config_dict, paths_sha256, summary_figures

REFERENCE_SECTIONS = (
    "arch",
    "input",
    "roi",
    "reference",
    "metric",
    "fusion",
    "threshold",
    "labels",
    "prototypes",
    "training",
)


def read_reference(run: str | Path) -> Sidecar:
    """RUN/reference.json read through the sidecar schema, the one reader of these sections, so
    training, audit and export agree on every field. The model fields (hash, parity) are left
    empty for export to fill in."""
    path = Path(run) / "reference.json"
    ref = read_json_object(path, BadInput, f"is {run} a training run, from 'twinspect train'?")
    draft = {k: ref[k] for k in REFERENCE_SECTIONS if k in ref}
    if isinstance(draft.get("input"), dict):
        # runs from before input geometry was part of the model stretched gray images
        draft["input"] = {"name": "image", "fit": "stretch", "pad_value": 0, **draft["input"]}
    vector = (
        (ref.get("reference") or {}).get("vector")
        if isinstance(ref.get("reference"), dict)
        else None
    )
    draft.update(
        schema_version=SCHEMA_VERSION,
        model_file="model.onnx",
        model_sha256="",
        output={"name": "embedding", "dim": len(vector) if isinstance(vector, list) else 0},
        parity={},
        package_version=__version__,
        created="",
    )
    try:
        return Sidecar.from_dict(draft, where=str(path))
    except BadModel as e:  # a run folder is input to train/export/audit, not a line model
        raise BadInput(str(e)) from None


@contextlib.contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `out`; on success replace `out` with it, on any
    error remove it and leave an existing `out` untouched."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def label_names(r: Result) -> dict[str, str]:
    """label → name for the run's labels, as the data named them (labels.json/csv, folders)."""
    from edge_runtime.datasets import default_name

    labels = sorted(set(r.data.labels.tolist()))
    return {lab: r.data.names.get(lab) or default_name(lab) for lab in labels}


def reference_dict(r: Result) -> dict:
    cfg, spec, data = r.config, r.spec, r.data
    val = r.metrics["validation"]["reference"]
    return {
        "arch": cfg.arch,
        "input": input_block(spec),
        "roi": None,
        "reference": {
            "vector": [float(v) for v in r.reference],
            "n": len(r.ref_paths),
            "images_sha256": paths_sha256(r.ref_paths),
        },
        "metric": r.metric.to_dict(),
        "fusion": None if r.fusion is None else r.fusion.to_dict(),
        "threshold": {
            "value": float(r.threshold),
            "policy": r.metrics["threshold_policy"],
            "validation": {
                **summary_figures(val),
                # the line's drift gauge divides its rolling median good score by this
                "median_good_score": float(
                    np.median(r.val_scores[data.labels[data.val_idx] == GOOD])
                ),
            },
            "calibration": r.metrics["calibration"],
        },
        "labels": label_names(r),
        "prototypes": {k: p.to_dict() for k, p in r.prototypes.items()},
        "training": {
            "data": data.source,
            "data_sha256": data.sha256,
            "n_train": int(data.train_idx.size),
            "n_val": int(data.val_idx.size),
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "arch": cfg.arch,
            "views": r.metrics["views"]["chosen"],
            "batch_size": cfg.batch_size,
            "val_fraction": cfg.val_fraction,
            "holdout_defect": cfg.holdout_defect,
            "excluded": data.excluded,
            "train_seconds": round(r.train_seconds, 2),
        },
    }


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=True) + "\n")


def write_run(r: Result, folder: Path) -> None:
    """Everything of the contract into `folder` (the staged temporary folder)."""
    import keras

    from train import report as plots

    data = r.data
    r.twin.save(folder / "model.keras")
    r.embedding.save(folder / "embedding.keras")
    _json(folder / "reference.json", reference_dict(r))
    vi = data.val_idx
    np.savez_compressed(
        folder / "validation.npz",
        images=data.images[vi],
        labels=data.labels[vi].astype(str),
        paths=data.paths[vi].astype(str),
        scores=np.asarray(r.val_scores, dtype=np.float64),
    )
    config = {
        **config_dict(r.config),
        "data_source": data.source,
        "data_sha256": data.sha256,
        "n_records": int(data.labels.size),
        "n_train": int(data.train_idx.size),
        "n_val": int(data.val_idx.size),
        "n_holdout": int(data.holdout_idx.size),
        "n_excluded": data.excluded,
        "n_skipped_on_load": data.skipped,
        "label_counts": {
            lab: int(n) for lab, n in zip(*np.unique(data.labels, return_counts=True), strict=True)
        },
        "reference_images": sorted(r.ref_paths),
        "input": reference_dict(r)["input"],
        "versions": {
            "twinspect": __version__,
            "keras": keras.__version__,
            "tensorflow": _tf_version(),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    _json(folder / "config.json", config)
    _json(folder / "metrics.json", r.metrics)
    plots.write_plots(r, folder)
    (folder / "report.md").write_text(plots.markdown(r))


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__

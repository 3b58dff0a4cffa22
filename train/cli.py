"""The `train` and `audit` verbs. Nothing here imports TensorFlow: `--help` works without it, and
a run without the train extra stops with one line naming the extra."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge_runtime.calibration import DEFAULT_POLICY
from edge_runtime.errors import BadInput
from edge_runtime.preprocess import FITS
from edge_runtime.scoring import METRICS
from edge_runtime.verbs import Verb
from train.fit import ARCHS, DEFAULT_BATCH, DEFAULT_EPOCHS, DEFAULT_N_REF, GOOD_ONLY_POLICY


def _quiet_tensorflow() -> None:
    """TensorFlow's C++ log lines (oneDNN notices, a harmless tf.data attribute message) would
    drown the progress bar; set TF_CPP_MIN_LOG_LEVEL yourself to see them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _n_ref(text: str) -> int | None:
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise BadInput(f"--n-ref must be a whole number or 'all', got {text!r}") from None
    if n < 1:
        raise BadInput(f"--n-ref must be at least 1, got {n}")
    return n


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="labeled dataset (folder of <label>/*.png, …)")
    p.add_argument("--out", required=True, help="run folder to write (replaced only on success)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same run (default 0)")
    p.add_argument(
        "--arch",
        default="cnn",
        help=f"embedding network: {' | '.join(ARCHS)} (default cnn; mlp = the reference design)",
    )
    p.add_argument(
        "--metric",
        default="auto",
        help=f"score distance: auto | {' | '.join(METRICS)} (default auto: Minkowski p=4 or "
        "Mahalanobis, whichever separates the validation parts plus synthetic anomalies better; "
        "Mahalanobis on a good-only line)",
    )
    p.add_argument(
        "--residual",
        default="auto",
        help="add the local pixel residual of the good parts' PCA to the score: auto | on | off "
        "(default auto: added when it separates the validation parts plus synthetic anomalies "
        "better and keeps the real defects)",
    )
    p.add_argument("--p", type=float, default=4.0, help="Minkowski order (default 4)")
    p.add_argument(
        "--n-ref",
        default="all" if DEFAULT_N_REF is None else str(DEFAULT_N_REF),
        help="good training images averaged into the reference, or 'all' (default all)",
    )
    p.add_argument(
        "--threshold-policy",
        default=None,
        help="recall:R | cost:C | f1 | youden | good-quantile:Q, any but the last optionally "
        f"followed by ,max-overkill:X (default {DEFAULT_POLICY}; {GOOD_ONLY_POLICY} when the "
        "data holds no defective image)",
    )
    p.add_argument("--val-fraction", type=float, default=0.2, help="(default 0.2, stratified)")
    p.add_argument(
        "--holdout-defect",
        metavar="LABEL",
        help="leave this defect type out of training and validation; report how well it is "
        "caught unseen",
    )
    p.add_argument(
        "--exclude", metavar="FILE", help="CSV with a 'path' column (e.g. from twinspect audit)"
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirror training images top/bottom (default: on for cnn, off for mlp)",
    )
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam (default 0.001)")
    p.add_argument(
        "--input-size",
        default="auto",
        metavar="HxW|auto",
        help="the network's input in pixels; auto (default) keeps the typical training image's "
        "aspect and size, shrunk to at most 128×128 pixels of area",
    )
    p.add_argument(
        "--fit",
        default="pad",
        choices=FITS,
        help="images of another shape: pad (default: aspect kept, borders filled), crop "
        "(centre window of the input's aspect) or stretch",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=1,
        choices=(1, 3),
        help="1 = gray (default), 3 = keep colour (BGR)",
    )
    p.add_argument(
        "--synthetic",
        type=float,
        default=None,
        metavar="SHARE",
        help="share of good-vs-defect pairs whose defect is a synthetic anomaly made from a good "
        "image (scratches, pits, moved patches, stains, blur, chips); default 0.5 for inputs "
        "above 48 px, 0 for the small network",
    )
    p.add_argument(
        "--average-last",
        type=int,
        default=None,
        metavar="N",
        help="ship the mean of the last N epochs' weights (0: the last epoch's); default a third "
        "of the epochs for inputs above 48 px, 0 for the small network",
    )
    p.add_argument(
        "--views",
        default="auto",
        choices=("auto", "1", "2", "4"),
        help="2: the shipped embedding holds the part and the part turned half a turn side by "
        "side (about 2× the network's work per part); 4: the part and its three mirror images; "
        "1: the part alone; auto (default): 4 when the part looks alike in every mirror "
        "(surfaces, textures), 2 when only turned half a turn (a Z, an S), else 1 (oriented parts)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def run_train(args: argparse.Namespace) -> int:
    from train.fit import TrainConfig

    cfg = TrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        arch=args.arch,
        metric=args.metric,
        residual=args.residual,
        p=args.p,
        n_ref=_n_ref(args.n_ref),
        threshold_policy=args.threshold_policy,
        val_fraction=args.val_fraction,
        holdout_defect=args.holdout_defect,
        exclude=args.exclude,
        learning_rate=args.learning_rate,
        augment=args.augment,
        input_size=args.input_size,
        fit=args.fit,
        channels=args.channels,
        synthetic=args.synthetic,
        average_last=args.average_last,
        views=args.views if args.views == "auto" else int(args.views),
        quiet=args.quiet,
    )
    cfg.check()  # bad settings: one line, before TensorFlow is imported
    if not Path(args.data).exists():
        raise BadInput(f"--data {args.data}: no such file or folder")
    from train import require_keras

    _quiet_tensorflow()
    require_keras()
    from train.fit import train
    from train.report import summary_lines
    from train.run_folder import staged_dir, write_run

    with staged_dir(args.out) as tmp:
        result = train(cfg)
        write_run(result, tmp)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {args.out}/ (reference.json, metrics.json, report.md, plots)")
    sys.stdout.flush()
    return 0


TRAIN = Verb(
    name="train",
    help="train the twin network, build the reference and calibrate the OK/NG threshold",
    add_arguments=add_train_arguments,
    run=run_train,
    epilog="examples:\n"
    "  twinspect train --data data/line --out runs/default\n"
    "  twinspect train --data data/line --out runs/mlp --arch mlp --epochs 60\n"
    "  twinspect train --data data/line --out runs/h3 --holdout-defect 3\n"
    "  twinspect train --data data/tile --out runs/tile --input-size 96x160 --fit crop\n"
    "  twinspect train --data data/line --out runs/clean --exclude runs/default/audit.csv",
)


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="training run folder (from twinspect train)")
    p.add_argument("--data", required=True, help="labeled dataset to audit")
    p.add_argument(
        "--out",
        help="CSV to write (default RUN/audit.csv); the contact sheet is "
        "written next to it as .png",
    )
    p.add_argument(
        "--top", type=int, default=100, help="list at most N records; 0 = all (default 100)"
    )


def run_audit(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if not run.is_dir():
        raise BadInput(f"--run {run}: no such training run folder")
    if not Path(args.data).exists():
        raise BadInput(f"--data {args.data}: no such file or folder")
    if args.top < 0:
        raise BadInput(f"--top must be ≥ 0, got {args.top}")
    from train import require_keras

    _quiet_tensorflow()
    require_keras()
    from train.audit import audit, contact_sheet, write_csv

    out = Path(args.out) if args.out else run / "audit.csv"
    res = audit(run, args.data)
    sel = write_csv(res, out, args.top)
    sheet = out.with_suffix(".png")
    contact_sheet(res, sel, sheet)
    n_good = int((res.labels[res.order] == "0").sum())
    print(
        f"audited {res.labels.size} records: {res.order.size} disagree with their label at "
        f"robust z {res.z_cut:.1f} ({n_good} good-labeled far from the reference, "
        f"{res.order.size - n_good} defect-labeled near it)"
    )
    for rank, i in enumerate(sel[:5], 1):
        print(f"  #{rank} {res.paths[i]} label {res.labels[i]} robust z {res.z[i]:.1f}")
    print(f"wrote {out} ({sel.size} records) and {sheet}")
    return 0


AUDIT = Verb(
    name="audit",
    help="list records whose label disagrees with their score (possible label errors)",
    add_arguments=add_audit_arguments,
    run=run_audit,
    epilog="example:\n"
    "  twinspect audit --run runs/default --data data/line --top 200\n"
    "  twinspect train --data data/line --out runs/clean --exclude runs/default/audit.csv",
)

"""`twinspect train`, the work: data → split → twin network → reference → threshold → figures.

Every figure is computed on data the network did not train on (the validation split, and the
held-out defect type when there is one). The scoring, evaluation and calibration come from
edge_runtime, so training, export and the line judge a part the same way.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from edge_runtime.calibration import DEFAULT_POLICY, Policy, calibrate, choose_threshold
from edge_runtime.errors import BadInput
from edge_runtime.evaluation import at_threshold, auroc, report
from edge_runtime.geometry import auto_input_size, describe_fit, parse_input_size
from edge_runtime.preprocess import FITS, InputSpec, to_tensor
from edge_runtime.scoring import (
    KNN_K,
    Fusion,
    Metric,
    coreset,
    fit_inv_cov,
    fit_novelty,
    fusion_terms,
    part_scores,
)
from train.pairs import DIFFERENT, Pairs, epoch_pairs, stratified_split
from train.score_choice import (
    AUTO,
    RESIDUAL_MODES,
    VoteSet,
    choose_fusion,
    choose_metric,
    choose_views,
    pixels_alike_mirrored,
)

GOOD = "0"
SYNTHETIC = "synthetic"  # label of synthetic anomalies in a good-only run's validation figures
ARCHS = ("mlp", "cnn")  # train.model.ARCHS, without importing TensorFlow
DEFAULT_EPOCHS = 30
DEFAULT_BATCH = 128
# The reference is the mean embedding of every good training image (None): the reference
# notebook's 30 left the mean noisy — mean of all goods, default line, five held-out types:
# unseen-type AUROC 0.952 → 0.958; tile seed 0: 0.986 → 0.987 (`train.score_study`).
DEFAULT_N_REF: int | None = None
# A line that has collected no defect yet: the threshold is the 99.5% quantile of the good
# validation scores — about 1 good part in 200 rejected, whatever the defects turn out to be.
GOOD_ONLY_POLICY = "good-quantile:0.995"
# A small line gives few pairs per epoch (every good image is an anchor once); an epoch draws
# fresh pair sets until it has at least this many, so a 1,000-image line trains enough steps.
# The default line's 1,930 good training images give 3,860 pairs, so it draws two sets too:
# its test AUROC went from 0.9984 to 0.9997 (seed 0; training takes twice as long). The scaled cnn
# (inputs above 48 px) learns local evidence slowly: on the tile product its test AUROC rose
# from 0.90 at 1,000 steps to 0.94 at 2,000 (64×64, one seed), so it gets twice as many.
MIN_PAIRS_PER_EPOCH = 4096
MIN_PAIRS_PER_EPOCH_SCALED = 8192
SHAPE_MAX_DIM = 128  # defect types' Mahalanobis shapes up to this embedding size


@dataclass
class TrainConfig:
    """Every setting of a training run; stored in config.json as is."""

    data: str
    out: str
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH
    seed: int = 0
    arch: str = "cnn"  # measured better than the reference mlp; see the report
    metric: str = "auto"  # auto: Minkowski p=4 or Mahalanobis, chosen per run (train.score_choice)
    residual: str = "auto"  # add the local pixel residual to the score: auto (vote) | on | off
    p: float = 4.0
    n_ref: int | None = DEFAULT_N_REF  # None = every good training image
    # None: DEFAULT_POLICY, or GOOD_ONLY_POLICY when the data holds no defective image
    threshold_policy: str | None = None
    val_fraction: float = 0.2
    holdout_defect: str | None = None
    exclude: str | None = None
    learning_rate: float = 1e-3
    augment: bool | None = None  # None: on for cnn, off for mlp (where it does not help)
    # share of the good-vs-defect pairs whose defect is a synthetic anomaly made from a good
    # training image (train/anomalies.py); None: the measured default for the data
    synthetic: float | None = None
    # the shipped weights are the mean of the last N epochs' (N = 0: the last epoch's alone);
    # None: the measured default for the network (average_last_default)
    average_last: int | None = None
    # mirror views side by side in the shipped embedding (train.model.with_views): 1, 4, or
    # "auto" (train.score_choice.choose_views; the mlp has no picture to mirror: 1)
    views: int | str = AUTO
    input_size: str = "auto"  # "HxW", or "auto": from the training images (edge_runtime.geometry)
    fit: str = "pad"  # how images of another shape become the input: pad | crop | stretch
    channels: int = 1  # 1 = gray, 3 = colour (BGR)
    quiet: bool = False

    def check(self) -> Policy:
        """Refuse bad settings before any data is read or TensorFlow imported."""
        if self.arch not in ARCHS:
            raise BadInput(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.metric != AUTO:
            Metric(
                self.metric,
                p=self.p,
                inv_cov=np.eye(1) if self.metric == "mahalanobis" else None,
                bank=np.zeros((1, 1)) if self.metric == "knn" else None,
                k=1,
            )
        if self.residual not in RESIDUAL_MODES:
            raise BadInput(
                f"--residual {self.residual!r}: choose one of {', '.join(RESIDUAL_MODES)}"
            )
        policy = Policy.parse(self.threshold_policy or DEFAULT_POLICY)
        if self.epochs < 1:
            raise BadInput(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.n_ref is not None and self.n_ref < 1:
            raise BadInput(f"--n-ref must be a positive number or 'all', got {self.n_ref}")
        if not 0.0 < self.val_fraction < 1.0:
            raise BadInput(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.augment is None:
            self.augment = self.arch == "cnn"
        if self.views != AUTO and self.views not in (1, 2, 4):
            raise BadInput(f"--views must be auto, 1, 2 or 4, got {self.views}")
        if self.views in (2, 4) and self.arch != "cnn":
            raise BadInput(
                f"--views {self.views} needs --arch cnn (the mlp's flat input has no picture)"
            )
        if self.synthetic is not None and not 0.0 <= self.synthetic <= 1.0:
            raise BadInput(f"--synthetic must be a fraction in [0, 1], got {self.synthetic}")
        if self.learning_rate <= 0:
            raise BadInput(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.average_last is not None and not 0 <= self.average_last <= self.epochs:
            raise BadInput(
                f"--average-last must be between 0 and --epochs ({self.epochs}), "
                f"got {self.average_last}"
            )
        parse_input_size(self.input_size)
        if self.fit not in FITS:
            raise BadInput(f"--fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.channels not in (1, 3):
            raise BadInput(f"--channels must be 1 (gray) or 3 (colour), got {self.channels}")
        return policy


@dataclass
class Dataset:
    """The labeled images training uses, after exclusion, with the split and the hold-out."""

    images: np.ndarray  # uint8 N×H×W
    labels: np.ndarray  # str
    paths: np.ndarray  # str
    source: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    holdout_idx: np.ndarray  # images of the held-out defect type (empty without one)
    excluded: int = 0
    skipped: int = 0
    sha256: str = ""
    names: dict[str, str] = field(default_factory=dict)  # label → name (labels.json or folders)
    fit_line: str = ""  # how the images were fitted to the input, for people

    @property
    def is_defect(self) -> np.ndarray:
        return self.labels != GOOD


@dataclass
class Result:
    """What a run produced, in memory; run_folder writes it out."""

    config: TrainConfig
    spec: InputSpec
    data: Dataset
    twin: object
    embedding: object
    history: dict[str, list[float]]
    reference: np.ndarray
    ref_paths: list[str]
    metric: Metric
    threshold: float
    val_scores: np.ndarray
    metrics: dict
    pair_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    holdout_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_seconds: float = 0.0
    prototypes: dict = field(default_factory=dict)  # label → Prototype (known defect types)
    fusion: Fusion | None = None  # the pixel residual added to the score (train.score_choice)


# ------------------------------------------------------------------------------------ data
def data_list_sha256(paths: np.ndarray, labels: np.ndarray) -> str:
    """Hash of the sorted 'path<TAB>label' lines: which records, with which labels."""
    lines = sorted(f"{p}\t{lab}" for p, lab in zip(paths.tolist(), labels.tolist(), strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def paths_sha256(paths: list[str]) -> str:
    """The sidecar's images_sha256: SHA-256 of the newline-joined sorted paths."""
    return hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()


def read_exclude(path: str) -> set[str]:
    """Paths listed in the `path` column of a CSV (e.g. the one `twinspect audit` writes)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise BadInput(f"--exclude {path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadInput(f"--exclude {path}: not a readable CSV ({e})") from None
    if rows and "path" not in rows[0]:
        raise BadInput(f"--exclude {path}: needs a 'path' column (as `twinspect audit` writes)")
    return {_key(r["path"]) for r in rows if r.get("path")}


def _key(path: str) -> str:
    """Paths are matched absolute, so an audit run from elsewhere still lines up."""
    return os.path.abspath(str(path))


def check_images(images: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    """uint8 N×H×W(×3) at the model size, or one BadInput line saying what is wrong."""
    arr = np.asarray(images)
    if arr.ndim != 1 + len(spec.patch_shape) or arr.shape[1:] != spec.patch_shape:
        want = "×".join(map(str, spec.patch_shape))
        raise BadInput(f"{where}: images must be {want}, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number):
            raise BadInput(f"{where}: images must be numbers, got {arr.dtype}")
        bad = ~np.isfinite(arr.astype(np.float64))
        if bad.any():
            n_bad = int(bad.reshape(len(bad), -1).any(axis=1).sum())
            raise BadInput(f"{where}: {n_bad} images hold NaN or inf")
        if arr.min() < 0 or arr.max() > 255:
            raise BadInput(f"{where}: pixel values must be 0..255, got {arr.min()}..{arr.max()}")
        arr = np.rint(arr).astype(np.uint8)
    return arr


def resolve_spec(cfg: TrainConfig) -> tuple[InputSpec, str]:
    """The model's input: --input-size, or chosen from the training images (geometry
    .auto_input_size, whose budget holds the four mirror views a surface may ship); and by
    what."""
    from edge_runtime.datasets import image_sizes
    from train.model import input_spec  # imports Keras: MissingExtra without the train extra

    size = parse_input_size(cfg.input_size)
    chosen = "--input-size"
    if size is None:
        size, chosen = auto_input_size(image_sizes(cfg.data)), "auto, from the training images"
    return input_spec(cfg.arch, size, cfg.channels, cfg.fit), chosen


def load_for_views(
    cfg: TrainConfig, split_seed: np.random.SeedSequence
) -> tuple[InputSpec, Dataset, dict | None]:
    """The input spec, the dataset loaded at it, and the pixel mirror check for `--views auto`
    (score_choice.pixels_alike_mirrored, read by choose_views; None where views cannot be
    chosen). The input size does not depend on the views: auto's budget holds four of them."""
    spec, chosen_by = resolve_spec(cfg)
    data = load_dataset(cfg, spec, np.random.default_rng(split_seed), chosen_by)
    if not (cfg.arch == "cnn" and cfg.views == AUTO):
        return spec, data, None
    goods = data.images[data.train_idx[~data.is_defect[data.train_idx]]]
    return spec, data, pixels_alike_mirrored(goods, cfg.seed)


def load_dataset(
    cfg: TrainConfig, spec: InputSpec, rng: np.random.Generator, chosen_by: str = "--input-size"
) -> Dataset:
    """Load, drop excluded records, hold out a defect type, split train/validation."""
    from edge_runtime.datasets import load_labeled

    loaded = load_labeled(cfg.data, spec=spec)  # a line folder: its train/ split
    if spec.channels == 3 and loaded.n_color == 0:
        raise BadInput(
            f"{loaded.source}: --channels 3 asks for colour, but none of the {len(loaded)} images "
            "holds colour (gray, or gray stored as RGB); use --channels 1"
        )
    images = check_images(loaded.images, spec, cfg.data)
    labels = np.asarray([str(v) for v in loaded.labels])
    paths = np.asarray([os.path.normpath(str(p)) for p in loaded.paths])
    if labels.size == 0:
        raise BadInput(f"{cfg.data}: no labeled images found")
    drop = read_exclude(cfg.exclude) if cfg.exclude else set()
    unusable = [(p, why) for p, why in loaded.skipped if _key(p) not in drop]
    if unusable:
        p, why = unusable[0]
        raise BadInput(
            f"{loaded.source}: {len(unusable)} images cannot be used (first: {p}: {why}); "
            "fix them or list them in --exclude"
        )
    excluded = 0
    if cfg.exclude:
        keep = np.array([_key(p) not in drop for p in paths.tolist()], dtype=bool)
        excluded_unreadable = sum(_key(p) in drop for p, _ in loaded.skipped)
        excluded = int((~keep).sum()) + excluded_unreadable
        if drop and excluded == 0:
            raise BadInput(
                f"--exclude {cfg.exclude}: none of its {len(drop)} paths are in {cfg.data} "
                "(was it written for another dataset?)"
            )
        images, labels, paths = images[keep], labels[keep], paths[keep]
    holdout = np.zeros(labels.size, dtype=bool)
    if cfg.holdout_defect is not None:
        if cfg.holdout_defect == GOOD:
            raise BadInput("--holdout-defect must be a defect label, not the good label '0'")
        holdout = labels == cfg.holdout_defect
        if not holdout.any():
            present = ", ".join(sorted(set(labels.tolist()) - {GOOD})) or "none"
            raise BadInput(
                f"--holdout-defect {cfg.holdout_defect}: no images with that label in "
                f"{cfg.data} (defect labels present: {present})"
            )
    n_good = int(np.sum(labels == GOOD))
    n_bad = int(np.sum((labels != GOOD) & ~holdout))
    if n_good == 0:
        raise BadInput(
            f"{cfg.data}: training needs good images (label 0, good or ok); found {n_good} "
            f"good and {n_bad} defective"
        )
    if n_good < 4 or n_bad == 1:
        raise BadInput(
            f"{cfg.data}: too few images to split into training and validation "
            f"({n_good} good, {n_bad} defective; need at least 4 good, and 0 or at least 2 "
            "defective)"
        )
    rest = np.flatnonzero(~holdout)
    tr, va = stratified_split(labels[rest], cfg.val_fraction, rng)
    return Dataset(
        images=images,
        labels=labels,
        paths=paths,
        source=str(getattr(loaded, "source", cfg.data)),
        train_idx=rest[tr],
        val_idx=rest[va],
        holdout_idx=np.flatnonzero(holdout),
        excluded=excluded,
        skipped=len(getattr(loaded, "skipped", []) or []),
        sha256=data_list_sha256(paths, labels),
        names=loaded.names,
        fit_line=describe_fit(loaded.raw_sizes, spec, chosen_by) if loaded.raw_sizes else "",
    )


# ------------------------------------------------------------------------------------ model
def _verbosity(cfg: TrainConfig) -> int:
    if cfg.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _pair_arrays(x: np.ndarray, idx: np.ndarray, pairs: Pairs) -> tuple[list, np.ndarray]:
    return [x[idx[pairs.left]], x[idx[pairs.right]]], pairs.label


def augment(images: np.ndarray, rng: np.random.Generator, shift: int = 0) -> np.ndarray:
    """Label-preserving variations of uint8 N×H×W parts: a mirror about the part's long axis
    (the terminal is symmetric top/bottom, and so are its defects' kinds), and optionally a shift
    of up to `shift` pixels, border replicated. Shifts are off by default: they taught the
    network to ignore the geometric defects (held-out bent tongue AUROC 0.85 with ±1 px shifts,
    0.95 without) and made the accuracy at recall:0.99 depend on the seed."""
    out = np.array(images, copy=True)
    n, h, w = out.shape[:3]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, ::-1, :]
    if shift > 0:
        widths = ((0, 0), (shift, shift), (shift, shift)) + ((0, 0),) * (out.ndim - 3)
        padded = np.pad(out, widths, mode="edge")
        dy = rng.integers(-shift, shift + 1, size=n)
        dx = rng.integers(-shift, shift + 1, size=n)
        for oy in range(-shift, shift + 1):
            for ox in range(-shift, shift + 1):
                sel = (dy == oy) & (dx == ox)
                if sel.any():
                    y0, x0 = shift + oy, shift + ox
                    out[sel] = padded[sel, y0 : y0 + h, x0 : x0 + w]
    return out


def fit_twin(cfg: TrainConfig, spec: InputSpec, x: np.ndarray, data: Dataset, seeds) -> tuple:
    """Train the twin on fresh random pairs every epoch; return (twin, embedding, history,
    validation pairs, their tensors, how many epochs' weights the embedding averages)."""
    from train import require_keras

    keras = require_keras()
    import tensorflow as tf

    from train.model import ContrastiveLoss, build_embedding, build_twin

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    embedding = build_embedding(cfg.arch, spec, seed=cfg.seed)
    twin = build_twin(embedding)
    twin.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate),
        loss=ContrastiveLoss(margin=1.0),
    )
    is_defect = data.is_defect
    good_only = not is_defect.any()
    pair_rng = np.random.default_rng(seeds[0])
    val_rng = np.random.default_rng(seeds[1])
    val_pairs = epoch_pairs(is_defect[data.val_idx], val_rng, synthetic_negatives=good_only)
    val_x, val_y = _pair_arrays(x, data.val_idx, val_pairs)
    if good_only:  # the validation's "defects" are fixed synthetic anomalies of its goods
        right = data.images[data.val_idx[val_pairs.right]]
        val_x[1] = to_tensor(with_synthetic(right, val_pairs, None, 1.0, spec, val_rng), spec)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    verbose = _verbosity(cfg)
    callbacks = [_progress_bar(keras, cfg.epochs)] if verbose else []
    scaled = is_scaled(cfg, spec)
    synthetic = 1.0 if good_only else synthetic_share(cfg, scaled)
    min_pairs = MIN_PAIRS_PER_EPOCH_SCALED if scaled else MIN_PAIRS_PER_EPOCH
    train_goods = data.images[data.train_idx[~is_defect[data.train_idx]]]
    average = WeightAverage(cfg.epochs, average_last_default(cfg, scaled))
    for epoch in range(cfg.epochs):
        draw = lambda: epoch_pairs(  # noqa: E731 — fresh pairs every epoch
            is_defect[data.train_idx], pair_rng, synthetic_negatives=good_only
        )
        pairs = draw()
        while len(pairs) < min_pairs:
            pairs = concat_pairs(pairs, draw())
        if cfg.augment or synthetic > 0:
            left = data.images[data.train_idx[pairs.left]]
            right = data.images[data.train_idx[pairs.right]]
            if synthetic > 0:
                right = with_synthetic(right, pairs, train_goods, synthetic, spec, pair_rng)
            if cfg.augment:
                left, right = augment(left, pair_rng), augment(right, pair_rng)
            px = [to_tensor(a, spec) for a in (left, right)]
            py = pairs.label
        else:
            px, py = _pair_arrays(x, data.train_idx, pairs)
        h = twin.fit(
            px,
            py,
            batch_size=cfg.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,  # the pairs come shuffled, from the seeded generator
            validation_data=(val_x, val_y),
            verbose=verbose,
            callbacks=callbacks,
        )
        for k in history:
            history[k].extend(float(v) for v in h.history[k])
        average.add(epoch, embedding)
    average.apply(embedding)
    return twin, embedding, history, val_pairs, val_x, max(1, average.n)


def is_scaled(cfg: TrainConfig, spec: InputSpec) -> bool:
    """Whether the run trains the scaled cnn (inputs above 48 px), whose defaults differ."""
    from train.model import cnn_plan

    return cfg.arch == "cnn" and cnn_plan(spec)["design"] == "scaled"


def average_last_default(cfg: TrainConfig, scaled: bool) -> int:
    """--average-last, or the default: the last third of the epochs for the scaled cnn, whose
    runs on a textured part differed by seed more than by any recipe change measured (tile,
    four views: the worst seed's test AUROC 0.9878 → 0.9956, the best's 0.9958 → 0.9952; five
    seeds 0.992–0.995; docs/architecture-search.md), none for the small design whose measured
    default line it would change."""
    if cfg.average_last is not None:
        return cfg.average_last
    return cfg.epochs // 3 if scaled else 0


class WeightAverage:
    """The running mean of the embedding's weights over the last `last` epochs (stochastic
    weight averaging at a constant rate): one network, so no cost on the line, that sits in the
    middle of the region the last epochs wander through instead of wherever the last one
    stopped. BatchNorm's moving statistics are averaged with the weights."""

    def __init__(self, epochs: int, last: int) -> None:
        self.first = epochs - last
        self.last = last
        self.sum: list[np.ndarray] = []
        self.n = 0

    def add(self, epoch: int, embedding) -> None:
        if self.last < 2 or epoch < self.first:
            return
        weights = [np.asarray(w, dtype=np.float64) for w in embedding.get_weights()]
        self.sum = [a + b for a, b in zip(self.sum, weights, strict=True)] if self.n else weights
        self.n += 1

    def apply(self, embedding) -> None:
        if self.n:
            dtypes = [w.dtype for w in embedding.get_weights()]
            embedding.set_weights(
                [(a / self.n).astype(t) for a, t in zip(self.sum, dtypes, strict=True)]
            )


def resolve_policy(cfg: TrainConfig, policy: Policy, good_only: bool) -> Policy:
    """The threshold policy for this data: a line with no defects yet gets GOOD_ONLY_POLICY
    unless one was asked for; asking for one that needs defects is one clear line."""
    if not good_only:
        return policy
    if cfg.threshold_policy is None:
        return Policy.parse(GOOD_ONLY_POLICY)
    if policy.needs_defects:
        raise BadInput(
            f"{cfg.data}: no defective images, so --threshold-policy {policy} cannot be "
            f"calibrated; with good parts only use good-quantile:Q (default {GOOD_ONLY_POLICY}, "
            "the share Q of good parts passed)"
        )
    return policy


def synthetic_share(cfg: TrainConfig, scaled: bool) -> float:
    """--synthetic, or the default: on for the scaled cnn (inputs above 48 px, where a few
    hundred real defects are too few to learn local evidence from: tile test AUROC 0.94 with,
    0.92 without, 64×64, 2,000 steps, one seed), off for the small design whose measured default
    line it would change."""
    if cfg.synthetic is not None:
        return cfg.synthetic
    return SYNTHETIC_DEFAULT if scaled else 0.0


SYNTHETIC_DEFAULT = 0.5


def with_synthetic(
    right: np.ndarray,
    pairs: Pairs,
    goods: np.ndarray | None,
    share: float,
    spec: InputSpec,
    rng: np.random.Generator,
) -> np.ndarray:
    """Replace `share` of the defective partners by a synthetic anomaly of a good image: one
    drawn from `goods` (training), or, with goods None, the partner image itself (validation,
    so its anomalies come from validation images only)."""
    from train.anomalies import synthesize

    sel = np.flatnonzero((pairs.label == DIFFERENT) & (rng.random(len(pairs)) < share))
    if sel.size == 0:
        return right
    base = right[sel] if goods is None else goods[rng.integers(len(goods), size=sel.size)]
    out = np.array(right, copy=True)
    pad = spec.pad_value if spec.pad_mode == "constant" else None
    out[sel] = synthesize(base, rng, pad_value=pad)
    return out


def concat_pairs(a: Pairs, b: Pairs) -> Pairs:
    return Pairs(
        np.concatenate([a.left, b.left]),
        np.concatenate([a.right, b.right]),
        np.concatenate([a.label, b.label]),
    )


def _progress_bar(keras, total_epochs: int):
    """Keras' progress bar, counting epochs of the whole run ("Epoch 3/20"): fit is called once
    per epoch, with fresh pairs, so Keras alone would print "Epoch 3/3"."""

    class RunProgress(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params(params)
            self.epochs = total_epochs

    return RunProgress()


def embed(embedding, x: np.ndarray) -> np.ndarray:
    return np.asarray(embedding.predict(x, batch_size=512, verbose=0), dtype=np.float64)


# ------------------------------------------------------------------------------------ figures
def summary_figures(rep: dict) -> dict:
    """The threshold.validation block of the sidecar."""
    keys = ("auroc", "accuracy", "f1", "escape_rate", "overkill_rate", "n_good", "n_defect")
    return {k: rep[k] for k in keys}


def train(cfg: TrainConfig) -> Result:
    """The whole run, in memory. Raises BadInput before training on anything it can check."""
    policy = cfg.check()
    seeds = np.random.SeedSequence(cfg.seed).spawn(4)  # split, pairs, val pairs, reference
    spec, data, pixels = load_for_views(cfg, seeds[0])
    good_only = not data.is_defect.any()
    policy = resolve_policy(cfg, policy, good_only)
    if not cfg.quiet and data.fit_line:
        print(data.fit_line, flush=True)
    is_defect = data.is_defect
    good_train = data.train_idx[~is_defect[data.train_idx]]
    n_ref = good_train.size if cfg.n_ref is None else cfg.n_ref
    if n_ref > good_train.size:
        raise BadInput(
            f"--n-ref {cfg.n_ref} is larger than the {good_train.size} good training images; "
            "use a smaller number or 'all'"
        )
    if cfg.metric in ("mahalanobis", AUTO) and n_ref < 2:
        raise BadInput(f"--metric {cfg.metric} needs --n-ref of at least 2")
    x = to_tensor(data.images, spec)

    t0 = time.perf_counter()
    twin, embedding, history, val_pairs, val_x, averaged = fit_twin(cfg, spec, x, data, seeds[1:3])
    train_seconds = time.perf_counter() - t0
    from train.model import with_views

    # Reference vector: mean embedding of n_ref good training images (seeded choice).
    ref_rng = np.random.default_rng(seeds[3])
    ref_idx = np.sort(ref_rng.choice(good_train, size=n_ref, replace=False))
    choice = None
    val_goods = data.val_idx[~is_defect[data.val_idx]]
    vote = VoteSet(
        x[data.val_idx],
        is_defect[data.val_idx],
        data.images[val_goods],
        spec,
        cfg.seed,
        lambda t: embed(embedding, t),
    )
    views = cfg.views if cfg.arch == "cnn" else 1
    views, views_choice = choose_views(
        views, embedding, x[ref_idx], vote, embed, with_views, pixels
    )
    if cfg.views == AUTO and cfg.arch != "cnn":
        views_choice["why"] = "the mlp's flat input has no picture to mirror"
    if not cfg.quiet:
        print(f"views: {views} ({views_choice['why']})", flush=True)
    embedding = with_views(embedding, views)  # what ships; everything below scores with it
    emb_of = lambda t: embed(embedding, t)  # noqa: E731
    if views != 1:
        vote.emb = emb_of(vote.x)
    ref_emb = emb_of(x[ref_idx])
    reference = ref_emb.mean(axis=0)
    if cfg.metric == AUTO:
        metric, choice = choose_metric(ref_emb, reference, vote)
    else:
        inv_cov = fit_inv_cov(ref_emb)[0] if cfg.metric == "mahalanobis" else None
        bank = (
            coreset(embed(embedding, x[good_train]), seed=cfg.seed) if cfg.metric == "knn" else None
        )
        k = min(KNN_K, len(good_train))
        metric = Metric(cfg.metric, p=cfg.p, inv_cov=inv_cov, bank=bank, k=k)

    fusion, residual_choice = choose_fusion(
        x[good_train], reference, metric, vote, spec, cfg.residual
    )

    def score(t: np.ndarray) -> np.ndarray:  # the line's score (edge_runtime.scoring)
        return part_scores(emb_of(t), t, reference, metric, fusion, spec)

    # Score-based figures on validation.
    val_labels = data.labels[data.val_idx]
    val_scores = score(x[data.val_idx])
    # The policy's threshold, bagged over bootstrap resamples of the validation scores so one
    # odd validation part cannot swing it; its interval and expected rates travel with it.
    cal = calibrate(val_scores, val_labels != GOOD, policy, seed=cfg.seed)
    threshold = cal.value

    def terms_of(t: np.ndarray, fused: Fusion) -> np.ndarray:  # the score's two terms
        return fusion_terms(emb_of(t), t, reference, metric, fused, spec)

    fusion, novelty = place_novelty(
        fusion, x[data.val_idx], val_labels, val_scores, threshold, terms_of
    )
    if good_only:  # figures against synthetic anomalies of the validation goods
        syn = val_x[1][val_pairs.label == DIFFERENT]
        syn_scores = score(syn)
        ref_report = report(
            np.r_[val_scores, syn_scores],
            [*val_labels.tolist(), *[SYNTHETIC] * len(syn_scores)],
            threshold,
        )
    else:
        ref_report = report(val_scores, val_labels.tolist(), threshold)

    # Pair-based figures (the reference notebook's other approach): twin distance of the
    # validation pairs, good/good vs good/defect, with its own threshold by the same policy.
    right = data.val_idx[val_pairs.right]
    pair_scores = np.asarray(
        twin.predict(val_x, batch_size=512, verbose=0), dtype=np.float64
    ).ravel()
    right_labels = np.full(right.size, SYNTHETIC) if good_only else data.labels[right]
    pair_labels = np.where(val_pairs.label == DIFFERENT, right_labels, GOOD)
    pair_threshold = choose_threshold(pair_scores, pair_labels != GOOD, policy)
    pair_report = report(pair_scores, pair_labels.tolist(), pair_threshold)

    prototypes = defect_prototypes(embedding, x, data)
    metrics = {
        "arch": cfg.arch,
        "metric": metric.name if metric.name != "minkowski" else f"minkowski p={metric.p:g}",
        "metric_choice": choice,
        "residual": residual_choice,
        "views": views_choice,
        "novelty": novelty,
        "threshold_policy": str(policy),
        "good_only": good_only,
        "calibration": cal.to_dict(),
        "calibration_lines": cal.lines(),
        "validation": {
            "reference": {"policy": str(policy), **ref_report},
            "pairs": {"policy": str(policy), **pair_report},
        },
        "holdout": None,
        "loss": {"train": history["loss"], "val": history["val_loss"]},
        # the shipped weights are the mean of this many last epochs' (1: the last epoch's)
        "averaged_epochs": averaged,
        "train_seconds": round(train_seconds, 2),
        "n_train": int(data.train_idx.size),
        "n_val": int(data.val_idx.size),
        "n_ref": int(n_ref),
    }
    holdout_scores = np.zeros(0)
    if data.holdout_idx.size:
        holdout_scores = score(x[data.holdout_idx])
        good_val = val_scores[val_labels == GOOD]
        s = np.r_[good_val, holdout_scores]
        y = np.r_[np.zeros(good_val.size, bool), np.ones(holdout_scores.size, bool)]
        at = at_threshold(s, y, threshold)
        metrics["holdout"] = {
            "label": cfg.holdout_defect,
            "n": int(holdout_scores.size),
            "auroc": auroc(s, y),
            "escape_rate": at["escape_rate"],
            "recall": at["recall"],
        }
    return Result(
        config=cfg,
        spec=spec,
        data=data,
        twin=twin,
        embedding=embedding,
        history=history,
        reference=reference,
        ref_paths=data.paths[ref_idx].tolist(),
        metric=metric,
        fusion=fusion,
        threshold=threshold,
        val_scores=val_scores,
        metrics=metrics,
        pair_scores=pair_scores,
        pair_labels=pair_labels,
        holdout_scores=holdout_scores,
        train_seconds=train_seconds,
        prototypes=prototypes,
    )


def place_novelty(fusion, val_x, val_labels, val_scores, threshold, terms_of):
    """(fusion with its novelty regions, what metrics.json records): where each kind of the
    validation's rejected known defects sits in the plane of the fused score's two terms
    (scoring.Novelty), which decides NOVEL on the line. Without a fused residual, or with too
    few rejected known defects, there is none and the prototypes decide."""
    if fusion is None:
        return fusion, {"placed": False, "why": "no fused pixel residual: prototypes decide"}
    labels = np.asarray(val_labels)
    known = (labels != GOOD) & (np.asarray(val_scores) > threshold)
    novelty = fit_novelty(terms_of(val_x[known], fusion), labels[known]) if known.any() else None
    if novelty is None:
        why = f"{int(known.sum())} rejected known defects in validation: too few to place it"
        return fusion, {"placed": False, "why": why}
    each = ", ".join(f"{r.label or 'the rest'}: {r.n}" for r in novelty.regions)
    return replace(fusion, novelty=novelty), {
        "placed": True,
        "why": f"regions of {int(known.sum())} rejected known defects in validation, one per kind "
        f"({each}), radius at the 97.5th percentile of each kind's own distance",
        **novelty.to_dict(),
    }


def defect_prototypes(embedding, x: np.ndarray, data: Dataset) -> dict:
    """Each known defect type's region: the mean and shrunk covariance of its training
    embeddings, and the Mahalanobis radius that holds 95% of its validation parts (its training
    parts sit closer than new ones will). An NG part outside every region is NOVEL on the line.
    Types with no validation part are left out.

    Above SHAPE_MAX_DIM dimensions (two or four mirror views side by side: 256, 512) a type
    keeps a centre and a Euclidean radius only: a 512×512 shape from a few dozen parts is mostly
    shrinkage, and about 3 MB of sidecar per type."""
    from edge_runtime.scoring import Prototype

    out = {}
    tr_lab, va_lab = data.labels[data.train_idx], data.labels[data.val_idx]
    for label in sorted(set(tr_lab.tolist()) - {GOOD}):
        val = data.val_idx[va_lab == label]
        train = data.train_idx[tr_lab == label]
        if val.size == 0 or train.size < 2:
            continue
        emb = embed(embedding, x[train])
        inv_cov = fit_inv_cov(emb)[0] if emb.shape[1] <= SHAPE_MAX_DIM else None
        shape = Prototype(emb.mean(axis=0), 1.0, int(train.size), inv_cov)
        radius = float(np.quantile(shape.distance(embed(embedding, x[val])), 0.95))
        if radius > 0:
            out[label] = replace(shape, radius=radius)
    return out


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)

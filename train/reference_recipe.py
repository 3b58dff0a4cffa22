"""The reference notebook's recipe, as written, for comparison with twinspect (TensorFlow).

The same MLP twin network (train.model), trained once on FIXED pairs: the pairs are drawn a
single time (every good training image an anchor with one good and one defective partner, as in
train.pairs.epoch_pairs) and reused for every epoch, contrastive loss with margin 1, Adam, batch
128. It then scores parts both ways the notebook did:

  pair-based       the twin's distance between the part and one random good training image
  embedding-based  Minkowski p=4 distance of the part's embedding to the mean embedding of
                   30 random good training images

TensorFlow is imported only when a recipe is fitted, so importing this module stays cheap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.preprocess import to_tensor
from edge_runtime.scoring import Metric, distances

GOOD = "0"


@dataclass
class ReferenceRecipe:
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    n_ref: int = 30
    p: float = 4.0
    seed: int = 0
    arch: str = "mlp"
    train_seconds: float = 0.0
    twin: object = field(default=None, repr=False)
    embedding: object = field(default=None, repr=False)
    reference: np.ndarray | None = field(default=None, repr=False)
    _good_x: np.ndarray | None = field(default=None, repr=False)
    _spec: object = field(default=None, repr=False)

    def fit(self, images: np.ndarray, labels) -> ReferenceRecipe:
        """Train the twin on one fixed set of pairs; take the 30-image reference."""
        from train import require_keras

        keras = require_keras()
        import tensorflow as tf

        from train.model import ContrastiveLoss, build_embedding, build_twin, input_spec
        from train.pairs import epoch_pairs

        lab = np.asarray(labels).astype(str)
        is_defect = lab != GOOD
        good_idx = np.flatnonzero(~is_defect)
        if good_idx.size < max(2, self.n_ref):
            raise BadInput(
                f"the reference recipe needs at least {max(2, self.n_ref)} good images, "
                f"got {good_idx.size}"
            )
        self._spec = input_spec(self.arch)
        x = to_tensor(np.asarray(images), self._spec)
        rng = np.random.default_rng(self.seed)
        keras.utils.set_random_seed(self.seed)
        tf.config.experimental.enable_op_determinism()
        self.embedding = build_embedding(self.arch, self._spec, seed=self.seed)
        self.twin = build_twin(self.embedding)
        self.twin.compile(
            optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
            loss=ContrastiveLoss(margin=1.0),
        )
        pairs = epoch_pairs(is_defect, rng)  # drawn ONCE, reused every epoch
        t0 = time.perf_counter()
        self.twin.fit(
            [x[pairs.left], x[pairs.right]],
            pairs.label,
            batch_size=self.batch_size,
            epochs=self.epochs,
            shuffle=True,
            verbose=0,
        )
        self.train_seconds = time.perf_counter() - t0
        ref_idx = np.sort(rng.choice(good_idx, size=self.n_ref, replace=False))
        self.reference = self._embed(x[ref_idx]).mean(axis=0)
        self._good_x = x[good_idx]
        return self

    def _embed(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.embedding.predict(x, batch_size=512, verbose=0), dtype=np.float64)

    def score_embedding(self, images: np.ndarray) -> np.ndarray:
        """Minkowski-p distance of each embedding to the 30-image reference."""
        x = to_tensor(np.asarray(images), self._spec)
        return distances(self._embed(x), self.reference, Metric("minkowski", p=self.p))

    def score_pairs(self, images: np.ndarray, seed: int = 1) -> np.ndarray:
        """The twin's distance of each image to one random good training image."""
        x = to_tensor(np.asarray(images), self._spec)
        rng = np.random.default_rng(seed)
        partners = self._good_x[rng.integers(0, self._good_x.shape[0], size=x.shape[0])]
        d = self.twin.predict([x, partners], batch_size=512, verbose=0)
        return np.asarray(d, dtype=np.float64).ravel()

    def per_image_predict_ms(self, images: np.ndarray, n: int = 200) -> dict:
        """The notebook's way of judging one part: `predict` on a batch of one, timed per image
        (embedding-based: one embedding call; pair-based: one twin call)."""
        x = to_tensor(np.asarray(images)[:n], self._spec)
        partner = self._good_x[:1]
        self.embedding.predict(x[:1], verbose=0)  # warm-up
        self.twin.predict([x[:1], partner], verbose=0)
        out = {}
        for name, call in (
            ("embedding", lambda xi: self.embedding.predict(xi, verbose=0)),
            ("pair", lambda xi: self.twin.predict([xi, partner], verbose=0)),
        ):
            t = []
            for i in range(x.shape[0]):
                t0 = time.perf_counter()
                call(x[i : i + 1])
                t.append(time.perf_counter() - t0)
            t_ms = np.asarray(t) * 1e3
            out[name] = {
                "n": int(t_ms.size),
                "p50_ms": float(np.percentile(t_ms, 50)),
                "p99_ms": float(np.percentile(t_ms, 99)),
                "mean_ms": float(t_ms.mean()),
            }
        return out

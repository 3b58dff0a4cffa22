"""The model sidecar (`model.json`): everything the line needs to judge a part as training did.

Defined once, here, as a typed structure with validation. Export writes it through `save`; the
runtime reads it through `load`. Every refusal names the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.errors import BadInput, BadModel
from edge_runtime.files import atomic_write_bytes, read_json_object
from edge_runtime.preprocess import InputSpec, Roi
from edge_runtime.residual import Residual
from edge_runtime.scoring import Fusion, Metric, Novelty, Prototype, Region

# 2: input.fit (pad | crop | stretch), input.pad_value, input.channels 3 (BGR) allowed.
# A schema-1 sidecar still loads: it meant gray input stretched to the model size.
# 3: prototypes.<label>.inv_cov, each known defect type's shape (Mahalanobis regions for NOVEL).
# A schema-2 sidecar still loads: its prototypes are Euclidean balls, named by nearest centre.
# 4: fusion (optional): the score adds the local pixel residual (edge_runtime.residual).
# A schema-3 sidecar still loads: no fusion, the embedding distance alone.
# 5: fusion.novelty (optional): the known defects' region in the plane of the fused score's two
# terms, which decides NOVEL for a fused model. A schema-4 sidecar still loads: its prototypes
# decide NOVEL as before.
# 6: fusion.novelty.regions, one region per known defect kind (label, center, inv_cov, radius,
# n). A schema-5 sidecar still loads: its one region (center, inv_cov, radius, n at the top of
# fusion.novelty) covers every kind.
# 7: quantization (informational, what export measured) describes static int8 ("type"
# int8-static, "added_escapes", bounds "max_added_escapes" and "min_speedup"); the runtime
# reads the int8 graph like any other. A schema-6 sidecar, with its dynamic-int8 figures, loads
# as it is.
# 8: quantization.float_ops (informational): the op types static int8 left in float after the
# last convolution (the pooling, the concat, the embedding's MatMul). A schema-7 sidecar loads
# as it is: its int8 graph quantized those too.
SCHEMA_VERSION = 8
KNOWN_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)


def input_block(spec: InputSpec, name: str = "image") -> dict:
    """The sidecar's `input` section: everything the line needs to turn a frame into the tensor
    the network was trained on. Training's reference.json writes the same block."""
    return {
        "name": name,
        "height": spec.height,
        "width": spec.width,
        "channels": spec.channels,
        "scale": spec.scale,
        "layout": spec.layout,
        "dtype": "float32",
        "color": spec.color,
        "fit": spec.fit,
        "pad_value": spec.pad_value,
        "pad_mode": spec.pad_mode,
        "resize": "INTER_AREA (shrink) / INTER_LINEAR (enlarge), after the ROI crop",
    }


@dataclass
class Reference:
    """The good-part reference: mean embedding of `n` good training images."""

    vector: np.ndarray  # float64, embedding_dim values
    n: int  # how many good images were averaged
    images_sha256: str  # hash of the sorted list of their paths: which images they were


@dataclass
class Threshold:
    value: float  # NG when score > value
    policy: str  # how it was chosen, e.g. "recall:0.99"
    validation: dict = field(default_factory=dict)  # figures at this threshold on validation
    # how it was calibrated: bootstrap interval, expected escape/overkill ranges (schema 2)
    calibration: dict = field(default_factory=dict)


@dataclass
class Sidecar:
    model_sha256: str  # SHA-256 of model.onnx; the runtime refuses a mismatch
    arch: str  # "mlp" or "cnn"
    input: InputSpec
    embedding_dim: int
    reference: Reference
    metric: Metric
    threshold: Threshold
    roi: Roi | None = None  # default region of interest; None = the whole frame
    labels: dict[str, str] = field(default_factory=dict)  # label → name, "0" = good
    # known defect types (schema 2, optional): an NG part names its nearest; far from all: NOVEL
    prototypes: dict[str, Prototype] = field(default_factory=dict)
    fusion: Fusion | None = None  # schema 4: the pixel residual added to the embedding distance
    training: dict = field(default_factory=dict)  # data source, counts, data hash, seed, epochs
    parity: dict = field(default_factory=dict)  # Keras vs onnxruntime check done at export
    quantization: dict = field(default_factory=dict)  # int8 figures when export quantized
    input_name: str = "image"
    output_name: str = "embedding"
    model_file: str = "model.onnx"
    package_version: str = ""
    created: str = ""  # ISO 8601, UTC
    schema_version: int = SCHEMA_VERSION

    # ---------------------------------------------------------------- writing
    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "model_file": self.model_file,
            "model_sha256": self.model_sha256,
            "arch": self.arch,
            "input": input_block(self.input, self.input_name),
            "output": {"name": self.output_name, "dim": self.embedding_dim},
            "roi": None if self.roi is None else self.roi.to_dict(),
            "reference": {
                "vector": [float(v) for v in self.reference.vector],
                "n": self.reference.n,
                "images_sha256": self.reference.images_sha256,
            },
            "metric": self.metric.to_dict(),
            "fusion": None if self.fusion is None else self.fusion.to_dict(),
            "threshold": {
                "value": float(self.threshold.value),
                "policy": self.threshold.policy,
                "validation": self.threshold.validation,
                "calibration": self.threshold.calibration,
            },
            "labels": self.labels,
            "prototypes": {k: p.to_dict() for k, p in self.prototypes.items()},
            "training": self.training,
            "parity": self.parity,
            "quantization": self.quantization,
            "package_version": self.package_version,
            "created": self.created,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1).encode()

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, then os.replace."""
        atomic_write_bytes(Path(path), self.to_json())

    # ---------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, d: dict, where: str = "model.json") -> Sidecar:
        r = _Reader(d, where)
        version = r.get("schema_version", int)
        if version not in KNOWN_VERSIONS:
            raise BadModel(
                f"{where}: schema_version {version} is not one this runtime knows "
                f"({', '.join(map(str, KNOWN_VERSIONS))}); update twinspect"
            )
        v1 = version == 1
        try:
            spec = InputSpec(
                height=r.get("input.height", int),
                width=r.get("input.width", int),
                channels=r.get("input.channels", int),
                scale=r.get("input.scale", float),
                layout=r.get("input.layout", str),
                fit="stretch" if v1 else r.get("input.fit", str),
                pad_value=0 if v1 else r.get("input.pad_value", int),
                pad_mode="constant" if v1 else r.optional("input.pad_mode", str, "constant"),
            )
        except BadInput as e:
            raise BadModel(f"{where}: field 'input': {e}") from None
        if v1 and spec.channels != 1:
            raise BadModel(
                f"{where}: schema 1 has gray input only, got input.channels {spec.channels}"
            )
        dim = r.get("output.dim", int)
        vector = r.floats("reference.vector")
        if vector.size != dim:
            raise BadModel(
                f"{where}: field 'reference.vector' has {vector.size} values, "
                f"but output.dim is {dim}"
            )
        metric_name = r.get("metric.name", str)
        inv_cov = bank = None
        if metric_name == "knn":
            bank = r.floats("metric.bank")
            if bank.ndim != 2 or bank.shape[1] != dim:
                raise BadModel(f"{where}: field 'metric.bank' is {bank.shape}, needs M×{dim}")
        if metric_name == "mahalanobis":
            inv_cov = r.floats("metric.inv_cov")
            if inv_cov.shape != (dim, dim):
                raise BadModel(
                    f"{where}: field 'metric.inv_cov' is {inv_cov.shape}, needs {dim}×{dim}"
                )
        try:
            metric = Metric(
                metric_name,
                p=r.get("metric.p", float) if metric_name == "minkowski" else 4.0,
                inv_cov=inv_cov,
                bank=bank,
                k=r.get("metric.k", int) if metric_name == "knn" else 3,
            )
        except BadInput as e:
            raise BadModel(f"{where}: field 'metric': {e}") from None
        threshold = r.get("threshold.value", float)
        if not math.isfinite(threshold):
            raise BadModel(f"{where}: field 'threshold.value' is {threshold}, must be finite")
        roi_d = r.get("roi", (dict, type(None)))
        try:
            roi = None if roi_d is None else Roi.from_dict(roi_d, where=f"{where}: field 'roi'")
        except BadInput as e:
            raise BadModel(str(e)) from None
        return cls(
            schema_version=version,
            model_file=r.get("model_file", str),
            model_sha256=r.get("model_sha256", str),
            arch=r.get("arch", str),
            input=spec,
            input_name=r.get("input.name", str),
            output_name=r.get("output.name", str),
            embedding_dim=dim,
            roi=roi,
            reference=Reference(
                vector=vector,
                n=r.get("reference.n", int),
                images_sha256=r.get("reference.images_sha256", str),
            ),
            metric=metric,
            fusion=_fusion(r, spec),
            threshold=Threshold(
                value=threshold,
                policy=r.get("threshold.policy", str),
                validation=r.get("threshold.validation", dict),
                calibration=r.optional("threshold.calibration", dict, {}),
            ),
            labels=r.get("labels", dict),
            prototypes=_prototypes(r, dim),
            training=r.get("training", dict),
            parity=r.get("parity", dict),
            quantization=r.optional("quantization", dict, {}),
            package_version=r.get("package_version", str),
            created=r.get("created", str),
        )

    @classmethod
    def load(cls, path: str | Path) -> Sidecar:
        path = Path(path)
        d = read_json_object(path, BadModel, "a model directory holds model.onnx and model.json")
        return cls.from_dict(d, where=str(path))


def _prototypes(r: _Reader, dim: int) -> dict[str, Prototype]:
    """The optional `prototypes` section, each vector of the embedding's length and each radius
    a positive finite number."""
    raw = r.optional("prototypes", dict, {})
    out = {}
    for label in raw:
        vec = r.floats(f"prototypes.{label}.vector")
        radius = r.get(f"prototypes.{label}.radius", float)
        if vec.shape != (dim,):
            raise BadModel(f"{r.where}: field 'prototypes.{label}.vector' needs {dim} values")
        if not (math.isfinite(radius) and radius > 0):
            raise BadModel(f"{r.where}: field 'prototypes.{label}.radius' must be > 0")
        inv_cov = None
        if isinstance(raw[label], dict) and "inv_cov" in raw[label]:
            inv_cov = r.floats(f"prototypes.{label}.inv_cov")
            if inv_cov.shape != (dim, dim):
                raise BadModel(
                    f"{r.where}: field 'prototypes.{label}.inv_cov' is "
                    f"{'×'.join(map(str, inv_cov.shape))}, needs {dim}×{dim}"
                )
        out[label] = Prototype(vec, radius, r.get(f"prototypes.{label}.n", int), inv_cov)
    return out


def _fusion(r: _Reader, spec: InputSpec) -> Fusion | None:
    """The optional `fusion` section (schema 4); absent or null: the embedding distance alone."""
    if r.optional("fusion", (dict, type(None)), None) is None:
        return None
    g = "fusion.residual."
    try:
        residual = Residual(
            height=r.get(g + "height", int),
            width=r.get(g + "width", int),
            channels=r.get(g + "channels", int),
            window=r.get(g + "window", int),
            mean=r.floats(g + "mean"),
            components=r.floats(g + "components"),
        )
        if residual.channels != spec.channels:
            raise BadInput(f"residual has {residual.channels} channels, the input {spec.channels}")
        novelty = None
        block = r.optional("fusion.novelty", (dict, type(None)), None)
        if block is not None:
            regions = r.optional("fusion.novelty.regions", list, None)
            if regions is None:  # schema 5: one region over every known kind
                novelty = Novelty((_region(r, "fusion.novelty."),))
            else:
                novelty = Novelty(
                    tuple(_region(r, f"fusion.novelty.regions.{i}.") for i in range(len(regions)))
                )
        return Fusion(
            residual,
            r.get("fusion.embedding_scale", float),
            r.get("fusion.residual_scale", float),
            novelty,
        )
    except BadInput as e:
        raise BadModel(f"{r.where}: field 'fusion': {e}") from None


def _region(r: _Reader, at: str) -> Region:
    """One known kind's novelty region at the dotted path `at` (schema 5: the only one)."""
    return Region(
        center=r.floats(at + "center"),
        inv_cov=r.floats(at + "inv_cov"),
        radius=r.get(at + "radius", float),
        n=r.get(at + "n", int),
        label=r.optional(at + "label", str, None),
    )


class _Reader:
    """Dotted-path access that turns a missing or mistyped field into one clear BadModel line."""

    def __init__(self, d: dict, where: str) -> None:
        self.d, self.where = d, where

    def _raw(self, dotted: str):
        node = self.d
        for part in dotted.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]  # a list's item: regions.0.center
                continue
            if not isinstance(node, dict) or part not in node:
                raise BadModel(f"{self.where}: missing field '{dotted}'")
            node = node[part]
        return node

    def get(self, dotted: str, kind):
        value = self._raw(dotted)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise BadModel(
                f"{self.where}: field '{dotted}' should be {names}, got {type(value).__name__}"
            )
        return value

    def optional(self, dotted: str, kind, default):
        """A field added after schema 1 was first written: absent means `default`."""
        try:
            self._raw(dotted)
        except BadModel:
            return default
        return self.get(dotted, kind)

    def floats(self, dotted: str) -> np.ndarray:
        value = self._raw(dotted)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise BadModel(f"{self.where}: field '{dotted}' must hold numbers only") from None
        if arr.size == 0 or not np.all(np.isfinite(arr)):
            raise BadModel(f"{self.where}: field '{dotted}' must hold finite numbers only")
        return arr

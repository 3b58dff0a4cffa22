"""`twinspect export`: a training run → MODEL_DIR/model.onnx + model.json, verified first."""

from __future__ import annotations

import argparse

from edge_runtime.preprocess import Roi
from edge_runtime.verbs import Verb


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="training run folder (from 'twinspect train')")
    p.add_argument("--out", required=True, help="model directory to write (replaced atomically)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--quantize",
        choices=["auto", "int8", "off"],
        default="auto",
        help="int8: try static int8 (calibrated on the validation images), kept only if the "
        "validation verdicts and AUROC hold and a part is judged ≥ 1.1× faster; auto (default): "
        "try it where the fp32 branch takes ≥ 300 µs a part on this PC; off: fp32",
    )
    p.add_argument("--roi", type=Roi.parse, help="default region of interest x,y,w,h for the line")


def _run(args: argparse.Namespace) -> int:
    from train import require_keras

    require_keras()
    from export.build import export_run, parity_counts

    result = export_run(args.run, args.out, args.opset, args.quantize, args.roi)
    sc = result.sidecar
    val = sc.threshold.validation
    print(
        f"model: {result.model_dir}  arch={sc.arch}  metric={sc.metric.name}"
        f"{f' p={sc.metric.p:g}' if sc.metric.name == 'minkowski' else ''}"
        f"{' + pixel residual' if sc.fusion is not None else ''}  "
        f"threshold={sc.threshold.value:.4g} ({sc.threshold.policy})"
    )
    if val:
        print(
            "validation at threshold: "
            + "  ".join(
                f"{k}={val[k]:.4g}"
                for k in ("auroc", "accuracy", "escape_rate", "overkill_rate")
                if k in val
            )
        )
    par = sc.parity
    print(
        f"parity: {parity_counts(par)}, max |Keras − ONNX| {par['max_abs_diff']:.1e}, "
        f"{par['verdict_disagreements']} verdict disagreements"
    )
    return 0


VERB = Verb(
    name="export",
    help="export a training run's embedding branch to ONNX with its verified sidecar",
    add_arguments=_add,
    run=_run,
    epilog="example:\n  twinspect export --run runs/default --out models/default\n"
    "  twinspect export --run runs/default --out models/int8 --quantize int8",
)

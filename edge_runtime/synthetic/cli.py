"""`twinspect generate`: the synthetic production line (crimped terminals, or tile surfaces)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.verbs import Verb


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument(
        "--product",
        default="terminal",
        metavar="NAME",
        help="terminal (default: crimped ring terminals, 26×36 stills) or tile (photographed "
        "surface crops of varying size); both write defect masks in OUT/ground_truth/, in both "
        "formats",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--n-train", type=int, default=None, help="training images (default 3600; tile 1000)"
    )
    p.add_argument("--n-test", type=int, default=None, help="test images (default 1200; tile 400)")
    p.add_argument(
        "--n-frames", type=int, default=None, help="recorded frames (default 300; tile 200)"
    )
    p.add_argument(
        "--defect-rate",
        type=float,
        default=None,
        help="fraction defective (default 0.33; tile 0.3)",
    )
    p.add_argument(
        "--difficulty", type=float, default=1.0, help="scales all nuisance (default 1.0)"
    )
    p.add_argument("--format", choices=("folder", "parquet"), default="folder")
    p.add_argument(
        "--flip-labels",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="flip this fraction of TRAIN labels good↔defect (listed in OUT/flipped.csv)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")


def _run(args: argparse.Namespace) -> int:
    from edge_runtime.synthetic.writer import Config, generate, summary

    kw = {} if args.workers is None else {"workers": args.workers}
    cfg = Config(
        out=args.out,
        product=args.product,
        seed=args.seed,
        n_train=args.n_train,
        n_test=args.n_test,
        n_frames=args.n_frames,
        defect_rate=args.defect_rate,
        difficulty=args.difficulty,
        format=args.format,
        flip_labels=args.flip_labels,
        **kw,
    ).resolved()
    manifest = generate(cfg)
    print(summary(cfg, manifest))
    return 0


VERB = Verb(
    name="generate",
    help="Generate the synthetic production line: dataset, camera recording, preview.",
    add_arguments=_add_arguments,
    run=_run,
    epilog="""examples:
  twinspect generate --out data/line
  twinspect generate --out data/hard --difficulty 2 --format parquet
  twinspect generate --out data/noisy --flip-labels 0.05   # for the data audit
  twinspect generate --out data/tile --product tile        # surface photos + defect masks""",
)

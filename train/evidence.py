"""Evidence: how good twinspect is, against what a line engineer would pick instead.

    python -m train.evidence --out BENCHMARKS.md [--quick]      (what `make bench` runs)

Everything is produced from scratch by this one run: the synthetic lines are generated, twinspect
is trained, exported and judged through its own CLI (`twinspect train/export/eval/bench`, as
subprocesses, so the figures really come from the edge runtime), the baselines and the reference
notebook's recipe are fitted in this process on the same splits, and BENCHMARKS.md plus the raw
figures (results/benchmarks.json) are written at the end. Progress goes to stderr.

    python -m train.evidence --render-only results/benchmarks.json --out BENCHMARKS.md

rewrites the markdown from an earlier run's raw figures without measuring anything.

This module is the run itself — `run` orders the stages and decides what is kept of each, `main`
is the command line — and the one place callers import from. The stages live beside it, each
readable on its own:

    train.evidence_plumbing   the plan, the log, subprocesses, the machine, twinspect's steps
    train.evidence_quality    every method on the same splits: default, unseen types, difficulty
    train.evidence_speed      twinspect bench, the GEMM floor, MACs, peak RSS, installed sizes
    train.evidence_report     BENCHMARKS.md from the results dict, and its small formatters
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

import numpy as np

from edge_runtime.calibration import Policy
from train.baselines import GOOD
from train.evidence_plumbing import (
    COMMANDS,
    EDGE_DISTS,
    LOG,
    MLP_LAYERS,
    MLP_MACS,
    POLICY,
    RECIPE_EMB,
    RECIPE_PAIR,
    TRAIN_EXTRA,
    TWINSPECT,
    TWINSPECT_MLP,
    VERSIONED,
    Log,
    Plan,
    cpu_model,
    dig,
    generate,
    git_commit,
    machine,
    python_child,
    read_json,
    train_export_eval,
    twinspect,
    version,
)
from train.evidence_quality import (
    BASELINES,
    TUNE,
    Split,
    eval_figures,
    fit_baseline,
    load_split,
    quality_default,
    quality_difficulty,
    quality_good_only,
    quality_unseen,
)
from train.evidence_report import (
    _describe,
    _setting,
    f3,
    markdown,
    ms,
    pct,
    speed_md,
    table,
    us,
    verdict,
)
from train.evidence_speed import (
    GEMM_CODE,
    RSS_BARE,
    RSS_EDGE,
    RSS_KERAS,
    RSS_PEAK,
    _closure,
    bench,
    embedding_macs,
    footprint,
    gemm_rate,
    peak_rss,
)

# Every name this module defined before it was split, so `from train.evidence import X` keeps
# working for the tests, train.evidence_surface and anyone else.
__all__ = [
    "BASELINES",
    "COMMANDS",
    "EDGE_DISTS",
    "GEMM_CODE",
    "LOG",
    "MLP_LAYERS",
    "MLP_MACS",
    "POLICY",
    "RECIPE_EMB",
    "RECIPE_PAIR",
    "RSS_BARE",
    "RSS_EDGE",
    "RSS_KERAS",
    "RSS_PEAK",
    "TRAIN_EXTRA",
    "TUNE",
    "TWINSPECT",
    "TWINSPECT_MLP",
    "VERSIONED",
    "Log",
    "Plan",
    "Split",
    "_closure",
    "_describe",
    "_jsonable",
    "_setting",
    "bench",
    "cpu_model",
    "dig",
    "embedding_macs",
    "eval_figures",
    "f3",
    "fit_baseline",
    "footprint",
    "gemm_rate",
    "generate",
    "git_commit",
    "load_split",
    "machine",
    "main",
    "markdown",
    "ms",
    "pct",
    "peak_rss",
    "python_child",
    "quality_default",
    "quality_difficulty",
    "quality_good_only",
    "quality_unseen",
    "read_json",
    "run",
    "runtime_embed_us",
    "speed_md",
    "table",
    "train_export_eval",
    "twinspect",
    "us",
    "verdict",
    "version",
]


# ----------------------------------------------------------------------------------- main
def runtime_embed_us(bench_json: dict) -> float | None:
    """The batch-1 embed stage p50 in µs from bench's JSON."""
    v = dig(bench_json, "latency_us", "embed", "p50")
    return float(v) if isinstance(v, int | float) else None


SECTION = re.compile(r"^<!-- ([\w-]+):begin -->$.*?^<!-- \1:end -->$", re.S | re.M)


def write_keeping_sections(path: Path, text: str) -> None:
    """Write BENCHMARKS.md, keeping the sections other benchmarks own (`make bench-surface`,
    `make soak`, the page's cost: each between its `<!-- name:begin/end -->` markers)."""
    old = path.read_text() if path.exists() else ""
    kept = [m.group(0) for m in SECTION.finditer(old) if m.group(0) not in text]
    path.write_text(text.rstrip("\n") + "".join(f"\n\n{k}" for k in kept) + "\n")


def run(plan: Plan, out_md: Path, out_json: Path, argv: list[str]) -> dict:
    started = dt.datetime.now(dt.UTC)
    host = machine()  # versions and git commit of the code that runs, taken before it runs
    plan.work.mkdir(parents=True, exist_ok=True)
    res: dict = {
        "plan": {**plan.__dict__, "work": str(plan.work), "difficulties": list(plan.difficulties)}
    }

    LOG.stage("generate data")
    datas = {d: generate(plan, d) for d in plan.difficulties}
    data = datas[1.0]

    LOG.stage("twinspect: train, export, eval (default line)")
    default = train_export_eval(plan, data, "default")
    mlp = None
    if default["arch"] != "mlp":
        LOG.stage("twinspect --arch mlp (the reference architecture, for the side by side)")
        mlp = train_export_eval(plan, data, "default-mlp", "--arch", "mlp")
    res["twinspect_default"] = {
        k: default[k] for k in ("arch", "epochs", "augment", "train_wall_s")
    }

    LOG.stage("quality: reference recipe and baselines on the default line")
    q, extra = quality_default(plan, default, data)
    if mlp is not None:
        q = {TWINSPECT: q[TWINSPECT], TWINSPECT_MLP: eval_figures(mlp["eval"])} | {
            k: v for k, v in q.items() if k != TWINSPECT
        }
    res["quality"], res["split"] = q, extra["split"]
    recipe, sp = extra["recipe_obj"], extra["split_obj"]
    try:
        from edge_runtime.synthetic.defects import LABEL_NAMES

        res["label_names"] = dict(LABEL_NAMES)
    except ImportError:
        res["label_names"] = {}
    for name, r in q.items():
        LOG(
            f"  {name}: AUROC {f3(r['auroc'])}, escape {pct(r['escape_rate'])}, "
            f"overkill {pct(r['overkill_rate'])}"
        )

    LOG.stage("speed: twinspect bench, Keras per-image predict, GEMM floor")
    speed: dict = {}
    try:
        speed["bench"] = bench(plan, default["model"], default["run"], data, "default")
    except RuntimeError as e:  # say so in BENCHMARKS.md rather than lose the rest of the run
        LOG(f"  bench failed: {e}")
        speed["bench"] = {"error": str(e)}
    speed["runtime_embed_us_p50"] = runtime_embed_us(speed["bench"])
    speed["models"] = {
        f"default ({default['arch']})": {
            "macs": embedding_macs(default["run"]),
            "bench": speed["bench"],
        }
    }
    if mlp is not None:
        try:
            b_mlp = bench(plan, mlp["model"], mlp["run"], data, "mlp")
        except RuntimeError as e:
            b_mlp = {"error": str(e)}
        speed["models"]["--arch mlp"] = {"macs": embedding_macs(mlp["run"]), "bench": b_mlp}
    speed["recipe_keras"] = recipe.per_image_predict_ms(sp.x_test, n=100)
    speed["gemm"] = gemm_rate()
    model8 = plan.work / "models" / "default-int8"
    twinspect("export", "--run", str(default["run"]), "--out", str(model8), "--quantize", "int8")
    qinfo = dig(read_json(model8 / "model.json"), "quantization") or {}
    if qinfo.get("kept"):
        ev8 = plan.work / "eval" / "default-int8.json"
        twinspect(
            "eval",
            "--model",
            str(model8),
            "--data",
            str(data),
            "--split",
            "test",
            "--json",
            str(ev8),
        )
        speed["int8"] = {
            "status": "kept (verdicts within export's bounds)",
            "quantization": qinfo,
            "eval": eval_figures(read_json(ev8)),
        }
        try:
            speed["int8"]["bench"] = bench(plan, model8, default["run"], data, "int8")
        except RuntimeError as e:
            speed["int8"]["bench"] = {"error": str(e)}
        res["quality"]["twinspect int8 (ONNX, edge runtime)"] = speed["int8"]["eval"]
        speed["models"]["default int8"] = {
            "macs": speed["models"][f"default ({default['arch']})"]["macs"],
            "bench": speed["int8"]["bench"],
        }
    else:
        speed["int8"] = {
            "status": "rejected by export ("
            + ("; ".join(qinfo.get("rejected_because") or []) or "outside its bounds")
            + "); the fp32 model is the one that ships",
            "quantization": qinfo,
        }
    res["speed"] = speed
    del recipe

    LOG.stage("footprint: installed sizes and peak RSS")
    res["footprint"] = footprint()
    res["rss"] = peak_rss(default["model"], default["run"], data)

    LOG.stage("unseen-defect protocol")
    labels = sorted(set(sp.y_test.tolist()) - {GOOD})
    res["unseen"], res["unseen_settings"], res["unseen_verdicts"] = quality_unseen(
        plan, data, labels
    )

    LOG.stage("where: the heatmap's pointing game (default line)")
    from train.pointing import pointing

    res["pointing"] = pointing(default["model"], data, "test", 0.02, 10_000)["kinds"]

    LOG.stage("good parts only (default line)")
    res["good_only"] = quality_good_only(plan, data)
    LOG(f"  good-only: AUROC {f3(res['good_only']['auroc'])} ({res['good_only']['score']})")

    LOG.stage("difficulty sweep")
    runs = {1.0: default}
    for d in plan.difficulties:
        if d != 1.0:
            runs[d] = train_export_eval(plan, datas[d], f"difficulty-{d:g}", *plan.protocol_args())
    res["difficulty"] = quality_difficulty(plan, runs, datas)

    LOG.stage("seed spread on the default line")
    keep = ("auroc", "escape_rate", "overkill_rate")
    res["seeds"] = {str(plan.seed): {k: {f: r[f] for f in keep} for k, r in q.items()}}
    for i in range(1, plan.extra_seeds + 1):
        s = plan.seed + i
        r = train_export_eval(plan, data, f"seed-{s}", *plan.protocol_args(), seed=s)
        qs, _ = quality_default(plan, r, data, seed=s)
        res["seeds"][str(s)] = {k: {f: v[f] for f in keep} for k, v in qs.items()}
    LOG.stage("")

    res["stages"] = LOG.stages
    res["commands"] = COMMANDS
    n_tr = sp.y_fit.size + sp.y_val.size
    epochs = default["epochs"]
    res["meta"] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_minutes": LOG.elapsed() / 60,
        "command": "python -m train.evidence " + " ".join(argv),
        "json": str(out_json),
        "machine": host,
        "data": f"`twinspect generate --seed {plan.seed} {' '.join(plan.gen_args)}`".replace(
            " `", "`"
        )
        + f" (difficulty 1; also 0.5 and 2 for the sweep): {n_tr} train images "
        f"({int((np.r_[sp.y_fit, sp.y_val] == GOOD).sum())} good), {sp.y_test.size} test "
        f"images ({int((sp.y_test == GOOD).sum())} good)",
        "training": f"twinspect: `twinspect train` defaults ({default['arch']}, {epochs} epochs, "
        f"augmentation {'on' if default['augment'] else 'off'}), seed {plan.seed} (default run "
        f"{default['train_wall_s']:.0f} s wall); the 5 hold-out runs, the 2 difficulty runs and "
        "the extra seed runs use the same settings"
        + (f" but {plan.protocol_epochs} epochs" if plan.protocol_epochs else "")
        + "; `--arch mlp` run for the side by side; "
        f"reference recipe (MLP, fixed pairs) {plan.recipe_epochs} epochs",
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=1, default=_jsonable) + "\n")
    write_keeping_sections(out_md, markdown(res))
    LOG(f"wrote {out_md} and {out_json}")
    return res


def _jsonable(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(
        prog="python -m train.evidence", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--out", default="BENCHMARKS.md", help="markdown to write (default %(default)s)"
    )
    ap.add_argument("--json", default="results/benchmarks.json", help="raw figures")
    ap.add_argument("--quick", action="store_true", help="tiny data, 2 epochs: a smoke test")
    ap.add_argument("--seed", type=int, default=0, help="data and training seed (default 0)")
    ap.add_argument("--work", default="results/bench", help="scratch folder (replaced)")
    ap.add_argument("--epochs", type=int, help="twinspect epochs (default: twinspect's default)")
    ap.add_argument("--recipe-epochs", type=int, help="reference recipe epochs (default 20)")
    ap.add_argument(
        "--protocol-epochs",
        type=int,
        help="epochs of the hold-out, difficulty and extra-seed twinspect runs "
        "(default: the same as the default run)",
    )
    ap.add_argument(
        "--extra-seeds",
        type=int,
        default=1,
        help="retrain the default line at this many more seeds for the spread (default 1)",
    )
    ap.add_argument(
        "--no-holdout-recipe",
        action="store_true",
        help="skip retraining the reference recipe for each held-out defect type",
    )
    ap.add_argument(
        "--render-only",
        metavar="JSON",
        help="only rewrite --out from the raw figures an earlier run wrote (no measuring)",
    )
    args = ap.parse_args(argv)
    if args.render_only:
        write_keeping_sections(Path(args.out), markdown(read_json(Path(args.render_only))))
        return 0
    Policy.parse(POLICY)
    plan = Plan.make(args)
    run(plan, Path(args.out), Path(args.json), argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real-surface evidence: twinspect on the generated tile product, with default commands,
over several training seeds, beside what a line engineer would pick instead; the calibration's
stability across seeds; and the speed at the tile's auto input size against a 26×36 model.

    python -m train.evidence_surface --out BENCHMARKS.md      # make bench-surface

Writes (or replaces) the section between the markers below in BENCHMARKS.md, and the figures as
JSON in results/benchmarks-surface.json. Generates its own data and trains its own models
(15–20 min a seed on a shared 2-core box); an interrupted run is resumed from the seeds whose
model and evaluation are already in --work, and a seed whose training finished is exported and
evaluated again without retraining.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.calibration import DEFAULT_POLICY, calibrate
from edge_runtime.datasets import load_labeled
from edge_runtime.evaluation import report
from edge_runtime.preprocess import InputSpec
from train.baselines import GOOD, LogisticPixels, PcaReconstruction, PixelTemplate, label_auroc
from train.evidence import f3, pct, table, twinspect
from train.evidence_plumbing import good_only_data, score_label
from train.pairs import stratified_split

BEGIN, END = "<!-- real-surface:begin -->", "<!-- real-surface:end -->"
BASELINE_SIZE = (64, 64)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_twinspect(
    data: Path, work: Path, seed: int, extra: list[str], name: str, train_data: Path | None = None
) -> dict:
    """train (default commands + extra, on train_data or data) → export → eval on data's test
    split; the figures."""
    run, model = work / f"run-{name}", work / f"model-{name}"
    ev = work / f"eval-{name}.json"
    t0 = time.perf_counter()
    reused = ev.is_file() and (model / "model.json").is_file()
    trained_before = reused or (run / "report.md").is_file()  # report.md: train's last file
    if reused:  # done by an earlier, interrupted run
        _log(f"  {name}: reusing {model} and {ev}")
    else:
        if trained_before:  # trained before the interruption: exported and evaluated now
            _log(f"  {name}: reusing the trained {run}")
        else:
            twinspect("train", "--data", str(train_data or data), "--out", str(run),
                      "--seed", str(seed), "--quiet", *extra)  # fmt: skip
        twinspect("export", "--run", str(run), "--out", str(model))
        twinspect("eval", "--model", str(model), "--data", str(data), "--split", "test",
                  "--json", str(ev))  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    seconds = metrics.get("train_seconds", 0.0)
    config = json.loads((run / "config.json").read_text())
    e = json.loads(ev.read_text())
    side = json.loads((model / "model.json").read_text())
    cal = side["threshold"].get("calibration", {})
    return {
        "name": name,
        "seed": seed,
        "reused": reused,
        "trained_before": trained_before,
        "input": f"{side['input']['height']}×{side['input']['width']}",
        "train_seconds": round(seconds, 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "auroc": e["auroc"],
        "accuracy": e["accuracy"],
        "escape_rate": e["escape_rate"],
        "metric": score_label(side),
        # as the run recorded them: a reused run may predate today's defaults
        "settings": f"reference of {config.get('n_ref') or 'every'} good image(s), "
        f"--metric {config.get('metric')}, --residual {config.get('residual', 'off')} → "
        f"{score_label(side)}, weights the mean of the last "
        f"{metrics.get('averaged_epochs', 1)} epoch(s)",
        "overkill_rate": e["overkill_rate"],
        "per_label": {k: v["auroc"] for k, v in e.get("per_label", {}).items()},
        "threshold": side["threshold"]["value"],
        "interval": cal.get("interval"),
        "expected_escape": cal.get("escape_range"),
        "expected_overkill": cal.get("overkill_range"),
        "model": str(model),
        "int8": _int8_line(side.get("quantization") or {}),
    }


def _int8_line(q: dict) -> str:
    """What export's --quantize auto made of the run: 'int8', 'fp32 (why)', or 'fp32'."""
    if not q:
        return "fp32"
    return "int8" if q.get("kept") else f"fp32 (int8 {'; '.join(q.get('rejected_because', []))})"


def run_baselines(data: Path, seed: int) -> list[dict]:
    """Pixel baselines on 64×64 stretched images: fit on the same 80% of train twinspect uses,
    threshold by the same default policy on the other 20%, figures on test."""
    spec = InputSpec(*BASELINE_SIZE, fit="stretch")
    tr = load_labeled(data, "train", spec)
    te = load_labeled(data, "test", spec)
    labels = np.asarray(tr.labels)
    fit_idx, val_idx = stratified_split(labels, 0.2, np.random.default_rng(seed))
    out = []
    for m in (LogisticPixels(), PcaReconstruction(), PixelTemplate()):
        m.fit(tr.images[fit_idx], labels[fit_idx])
        cal = calibrate(m.score(tr.images[val_idx]), labels[val_idx] != GOOD, DEFAULT_POLICY)
        s = m.score(te.images)
        rep = report(s, te.labels, cal.value)
        rep["per_label"] = {
            k: label_auroc(s, te.labels, k) for k in sorted(set(te.labels) - {GOOD})
        }
        out.append({"name": m.name, "seed": seed, **rep})
    return out


def bench(model: Path, other: Path, data: Path, work: Path) -> dict:
    out = work / "bench.json"
    twinspect("bench", "--model", str(model), "--data", str(data / "recording"),
              "--compare", str(other), "--json", str(out))  # fmt: skip
    return json.loads(out.read_text())


def markdown(res: dict) -> str:
    runs, base = res["twinspect"], res["baselines"]
    kinds = sorted(runs[0]["per_label"])
    lines = [
        BEGIN,
        "## Real-surface product (generated tile line)",
        "",
        f"`{res['command']}` on {res['host']}, {res['date']}, {res['minutes']:.0f} min. Data: "
        f"`twinspect generate --product tile` (seed 0; {res['n_train']} training, "
        f"{res['n_test']} test images of mixed sizes and aspects, five defect kinds a few "
        "pixels wide). twinspect with default commands (no size flags: auto input "
        f"{runs[0]['input']}), one run per training seed; the baselines on 64×64 stretched "
        "pixels, fitted on the same 80% and thresholded on the same 20% by the same default "
        f"policy (`{DEFAULT_POLICY}`, bagged).",
        "",
    ]
    head = ["method", "seed", "test AUROC", "accuracy", "escape", "overkill"]
    head += [f"AUROC {k}" for k in kinds]
    rows = []
    for r in [*runs, *base, *res.get("fixed", [])]:
        name = r["name"] if r in base else f"twinspect {r['input']}"
        if r in res.get("fixed", []):
            name = f"twinspect, fixed {r['input']} (last round's geometry)"
        rows.append([name, str(r["seed"]), f3(r["auroc"]), pct(r["accuracy"]),
                     pct(r["escape_rate"]), pct(r["overkill_rate"])]
                    + [f3(r["per_label"].get(k)) for k in kinds])  # fmt: skip
    lines += table(head, rows)
    settings = sorted({r.get("settings") for r in runs if r.get("settings")})
    if settings:
        lines += ["", "twinspect runs as recorded in their config.json: " + "; ".join(settings)]
    shipped = [f"seed {r['seed']} {r['int8']}" for r in runs if r.get("int8")]
    if shipped:
        lines += ["", "What export shipped (`--quantize auto`): " + "; ".join(shipped) + "."]
    every = [*runs, *res.get("fixed", []), *([res["good_only"]] if res.get("good_only") else [])]
    reused = [r["name"] for r in every if r.get("reused")]
    if reused:
        lines += [
            "",
            f"Reused from earlier runs of this command in its work folder (trained then, not in "
            f"the minutes above): {', '.join(reused)}.",
        ]
    again = [r["name"] for r in every if r.get("trained_before") and not r.get("reused")]
    if again:
        lines += [
            "",
            f"Trained before this run by the same train command in its work folder (an earlier, "
            f"interrupted run, or ahead of it; not in the minutes above), exported and evaluated "
            f"in this one: {', '.join(again)}.",
        ]
    acc = np.array([r["accuracy"] for r in runs])
    au = np.array([r["auroc"] for r in runs])
    lines += [
        "",
        f"Seed spread (twinspect, {len(runs)} seeds): AUROC {au.min():.3f}–{au.max():.3f} "
        f"(mean {au.mean():.3f}); accuracy at the calibrated threshold {acc.min():.1%}–"
        f"{acc.max():.1%} (spread {100 * (acc.max() - acc.min()):.1f} points).",
        "",
        "### Calibration stability",
        "",
    ]
    rows = [
        [str(r["seed"]), f"{r['threshold']:.4g}",
         "–".join(f"{v:.4g}" for v in r["interval"] or []),
         "–".join(pct(v) for v in r["expected_escape"] or []), pct(r["escape_rate"]),
         "–".join(pct(v) for v in r["expected_overkill"] or []), pct(r["overkill_rate"]),
         pct(r["accuracy"])]
        for r in runs
    ]  # fmt: skip
    lines += table(
        ["seed", "threshold", "95% interval", "expected escape", "test escape",
         "expected overkill", "test overkill", "test accuracy"], rows)  # fmt: skip
    go = res.get("good_only")
    if go:
        lines += [
            "",
            "### From good parts only",
            "",
            "`twinspect train` on the tile's good training images alone "
            "(seed 0, default commands: synthetic anomalies as the only negatives, threshold "
            f"`good-quantile:0.995`, score {go.get('metric', '—')}), judged on the same test "
            f"split: AUROC {f3(go['auroc'])}, accuracy {pct(go['accuracy'])}, escape "
            f"{pct(go['escape_rate'])}, overkill {pct(go['overkill_rate'])}; per kind "
            + ", ".join(f"{k} {f3(v)}" for k, v in sorted(go["per_label"].items()))
            + ".",
        ]
    pt = res.get("pointing")
    if pt:
        rows = [[k, str(v["ng"]), str(v["hits"]), pct(v["rate"])] for k, v in pt.items()]
        hits = sum(v["hits"] for v in pt.values())
        n = sum(v["ng"] - v["no_mask"] for v in pt.values())
        rows.append(["all", str(n), str(hits), pct(hits / max(1, n))])
        lines += [
            "",
            "### Where: the heatmap's pointing game",
            "",
            "Seed 0's model, every rejected defective test part: a hit when the heatmap's peak "
            "(`edge_runtime/heatmap.py`, what `twinspect run --save-ng` writes) lands on the "
            "true defect mask (`ground_truth/`), within 2% of the image's short side "
            "(`python -m train.pointing`).",
            "",
            *table(["defect kind", "rejected", "peak on the mask", "rate"], rows),
        ]
    b = res.get("bench")
    if b:
        c = b["compare"]
        lines += [
            "",
            "### Speed at the auto input size",
            "",
            f"`twinspect bench` on the tile recording (ROI crop), one onnxruntime thread, "
            f"both models in the same run: input {b['input']} end-to-end p50 "
            f"{b['latency_us']['total']['p50']:.0f} µs (p99 "
            f"{b['latency_us']['total']['p99']:.0f} µs; embed p50 "
            f"{b['latency_us']['embed']['p50']:.0f} µs); the {c['input']} model "
            f"{c['latency_us']['total']['p50']:.0f} µs — ratio {c['ratio_p50']:.1f}×. "
            f"Stages p50: preprocess {b['latency_us']['preprocess']['p50']:.0f} µs, score "
            f"{b['latency_us']['score']['p50']:.0f} µs. The heatmap of an NG part "
            f"({b['heatmap_ms']['method']}, what `--save-ng` adds): p50 "
            f"{b['heatmap_ms']['p50']:.0f} ms.",
        ]
    lines += ["", END]
    return "\n".join(lines)


def write_section(md_path: Path, section: str) -> None:
    text = md_path.read_text() if md_path.exists() else ""
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md_path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.evidence_surface")
    ap.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--json", type=Path, default=Path("results/benchmarks-surface.json"))
    ap.add_argument("--work", type=Path, default=Path("results/evidence-surface"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="(default: train's default)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = work / "tile"
    if not (data / "manifest.json").is_file():
        _log("generating the tile product")
        twinspect("generate", "--product", "tile", "--out", str(data))
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    runs, base = [], []
    for seed in range(args.seeds):
        _log(f"twinspect seed {seed}")
        runs.append(run_twinspect(data, work, seed, extra, f"seed{seed}"))
        _log(f"  {runs[-1]['auroc']:.4f} AUROC, {runs[-1]['accuracy']:.2%} accuracy")
        base += run_baselines(data, seed)
    _log("twinspect with the last round's fixed 26×36 stretched input")
    fixed = [run_twinspect(data, work, 0,
                           [*extra, "--input-size", "26x36", "--fit", "stretch",
                            "--synthetic", "0", "--views", "1"], "fixed26x36")]  # fmt: skip
    res = {
        "command": "python -m train.evidence_surface" + (" " + " ".join(argv) if argv else ""),
        "host": "2-core box",
        "date": time.strftime("%Y-%m-%d"),
        "n_train": len(load_labeled(data, "train", InputSpec(16, 16)).labels),
        "n_test": len(load_labeled(data, "test", InputSpec(16, 16)).labels),
        "twinspect": runs,
        "baselines": base,
        "fixed": fixed,
    }
    _log("twinspect from good parts only")
    res["good_only"] = run_twinspect(
        data, work, 0, extra, "goodonly", train_data=good_only_data(data, work)
    )
    _log("pointing game (heatmap peak on the defect mask), seed 0's model")
    from train.pointing import pointing

    res["pointing"] = pointing(Path(runs[0]["model"]), data, "test", 0.02, 1000)["kinds"]
    _log("bench")
    res["bench"] = bench(Path(runs[0]["model"]), Path(fixed[0]["model"]), data, work)
    res["minutes"] = (time.perf_counter() - t0) / 60
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1, default=float) + "\n")
    write_section(args.out, markdown(res))
    _log(f"wrote {args.out} ({res['minutes']:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plots (matplotlib, Agg backend) and the readable summary of a training run.

pair_distances.png   twin distance of validation pairs, by pair label (same / different kind)
scores.png           reference distance of validation images, good vs defect, threshold drawn
loss.png             contrastive loss per epoch, training and validation pairs
roc.png              ROC of the reference-distance score and of the pair distance
report.md            the figures a quality engineer asks for, in a few tables
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.evaluation import roc_curve

GOOD = "0"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bins(*arrays: np.ndarray, n: int = 50) -> np.ndarray:
    v = np.concatenate([np.asarray(a, float) for a in arrays if np.size(a)])
    lo, hi = float(v.min()), float(v.max())
    return np.linspace(lo, hi if hi > lo else lo + 1.0, n + 1)


def write_plots(r, folder: Path) -> None:
    plt = _plt()
    val_labels = r.data.labels[r.data.val_idx]
    good = val_labels == GOOD
    ref_val = r.metrics["validation"]["reference"]
    pair_val = r.metrics["validation"]["pairs"]

    fig, ax = plt.subplots(figsize=(6.4, 4))
    same = r.pair_labels == GOOD
    b = _bins(r.pair_scores)
    ax.hist(r.pair_scores[same], b, alpha=0.6, label=f"0 same kind, good/good (n={same.sum()})")
    ax.hist(
        r.pair_scores[~same], b, alpha=0.6, label=f"1 different, good/defect (n={(~same).sum()})"
    )
    ax.axvline(pair_val["threshold"], color="k", ls="--", label="pair threshold")
    ax.set(xlabel="twin distance", ylabel="validation pairs", title="Pair distance by pair label")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "pair_distances.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    s = r.val_scores
    b = _bins(s, r.holdout_scores)
    ax.hist(s[good], b, alpha=0.6, label=f"good (n={good.sum()})")
    ax.hist(s[~good], b, alpha=0.6, label=f"defect (n={(~good).sum()})")
    if np.size(r.holdout_scores):
        ax.hist(
            r.holdout_scores,
            b,
            histtype="step",
            lw=1.5,
            label=f"held-out defect {r.config.holdout_defect} (n={r.holdout_scores.size})",
        )
    ax.axvline(r.threshold, color="k", ls="--", label=f"threshold {r.threshold:.4g}")
    ax.set(
        xlabel=f"distance to reference ({r.metrics['metric']})",
        ylabel="validation images",
        title=f"Reference distance — escape {ref_val['escape_rate']:.1%}, "
        f"overkill {ref_val['overkill_rate']:.1%}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "scores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    epochs = np.arange(1, len(r.history["loss"]) + 1)
    ax.plot(epochs, r.history["loss"], marker=".", label="train pairs")
    ax.plot(epochs, r.history["val_loss"], marker=".", label="validation pairs")
    ax.set(xlabel="epoch", ylabel="contrastive loss", title="Training loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr = roc_curve(s, ~good)
    ax.plot(fpr, tpr, label=f"reference distance (AUROC {ref_val['auroc']:.4f})")
    fpr, tpr = roc_curve(r.pair_scores, ~same)
    ax.plot(fpr, tpr, label=f"pair distance (AUROC {pair_val['auroc']:.4f})")
    ax.plot([0, 1], [0, 1], color="0.7", ls=":")
    ax.set(
        xlabel="false positive rate (overkill)",
        ylabel="true positive rate (1 − escape)",
        title="ROC on validation",
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "roc.png", dpi=110)
    plt.close(fig)


def _row(name: str, m: dict) -> str:
    return (
        f"| {name} | {m['auroc']:.4f} | {m['accuracy']:.2%} | {m['f1']:.4f} | "
        f"{m['escape_rate']:.2%} | {m['overkill_rate']:.2%} | {m['threshold']:.4g} |"
    )


def _fused(m: dict) -> bool:
    return (m.get("residual") or {}).get("chosen") == "on"


def score_name(m: dict) -> str:
    """What the run scores with, e.g. 'minkowski p=4 + pixel residual'."""
    return m["metric"] + (" + pixel residual" if _fused(m) else "")


def summary_lines(r) -> list[str]:
    """The closing summary printed by `twinspect train`."""
    m = r.metrics
    ref, pair = m["validation"]["reference"], m["validation"]["pairs"]
    lines = [
        f"trained {m['arch']} for {r.config.epochs} epochs in {m['train_seconds']:.0f} s on "
        f"{m['n_train']} images; validation {ref['n_good']} good + {ref['n_defect']} "
        + (
            "synthetic anomalies of them (good-only line: no defect collected yet)"
            if m.get("good_only")
            else "defective"
        ),
        f"score ({score_name(m)}, n_ref {m['n_ref']}): AUROC {ref['auroc']:.4f}, "
        f"accuracy {ref['accuracy']:.2%}, escape {ref['escape_rate']:.2%}, "
        f"overkill {ref['overkill_rate']:.2%} at threshold {ref['threshold']:.4g} "
        f"({m['threshold_policy']})",
        "  per label AUROC: "
        + ", ".join(f"{k} {v['auroc']:.4f}" for k, v in ref["per_label"].items()),
        *(
            [f"  score {m['metric_choice']['chosen']} (--metric auto): {m['metric_choice']['why']}"]
            if m.get("metric_choice")
            else []
        ),
        *([f"  views {m['views']['chosen']}: {m['views']['why']}"] if m.get("views") else []),
        *(
            [f"  weights: the mean of the last {m['averaged_epochs']} epochs' (--average-last)"]
            if m.get("averaged_epochs", 1) > 1
            else []
        ),
        *(
            [f"  pixel residual {m['residual']['chosen']}: {m['residual']['why']}"]
            if m.get("residual")
            else []
        ),
        *(
            [f"  NOVEL decided by the {m['novelty']['why']}"]
            if (m.get("novelty") or {}).get("placed")
            else []
        ),
        *(f"  {line}" for line in m.get("calibration_lines", [])),
        f"pair distance: AUROC {pair['auroc']:.4f}, accuracy {pair['accuracy']:.2%}, "
        f"escape {pair['escape_rate']:.2%}, overkill {pair['overkill_rate']:.2%}",
    ]
    if m.get("holdout"):
        h = m["holdout"]
        lines.append(
            f"held-out defect {h['label']} (never trained on, n={h['n']}): AUROC {h['auroc']:.4f}, "
            f"escape {h['escape_rate']:.2%} at the threshold"
        )
    return lines


def markdown(r) -> str:
    m = r.metrics
    ref, pair = m["validation"]["reference"], m["validation"]["pairs"]
    names = _names(r)
    out = [
        f"# Training run: {m['arch']}, {r.config.epochs} epochs, seed {r.config.seed}",
        "",
        f"Data: `{r.data.source}` — {m['n_train']} training and {m['n_val']} validation "
        f"images (stratified {r.config.val_fraction:.0%} split); {r.data.excluded} records "
        f"excluded. Every figure below is on validation data the network did not train on.",
        "",
        f"Score: {m['metric']} distance of the embedding to the mean embedding of "
        f"{m['n_ref']} good training images"
        + (
            ", plus the local pixel residual of the good parts' PCA (each in units of its "
            "spread over the validation goods)"
            if _fused(m)
            else ""
        )
        + f". Threshold policy `{m['threshold_policy']}`: "
        "NG when score > threshold. Escape = defects passed as OK; overkill = good parts "
        "rejected.",
        "",
        "Calibration (the threshold and what to expect of it on the line):",
        "",
        *(f"- {line}" for line in m.get("calibration_lines", [])),
        "",
        f"Input: {r.data.fit_line}" if r.data.fit_line else "",
        "",
        "| approach | AUROC | accuracy | F1 | escape | overkill | threshold |",
        "|---|---|---|---|---|---|---|",
        _row("reference distance (shipped)", ref),
        _row("pair distance (twin output)", pair),
        "",
        "Per defect label (reference distance):",
        "",
        "| label | name | n | AUROC | escape |",
        "|---|---|---|---|---|",
    ]
    for k, v in ref["per_label"].items():
        out.append(
            f"| {k} | {names.get(k, k)} | {v['n']} | {v['auroc']:.4f} | {v['escape_rate']:.2%} |"
        )
    if m.get("holdout"):
        h = m["holdout"]
        out += [
            "",
            f"Held-out defect type {h['label']} ({names.get(h['label'], h['label'])}), never "
            f"seen in training: n={h['n']}, AUROC vs good validation {h['auroc']:.4f}, "
            f"escape {h['escape_rate']:.2%} at the threshold.",
        ]
    out += [
        "",
        f"Training took {m['train_seconds']:.0f} s; final loss {r.history['loss'][-1]:.4f} "
        f"(train pairs), {r.history['val_loss'][-1]:.4f} (validation pairs)"
        + (
            f"; the shipped weights are the mean of the last {m['averaged_epochs']} epochs' "
            "(`--average-last`)."
            if m.get("averaged_epochs", 1) > 1
            else "."
        ),
        "",
        "![reference distance](scores.png) ![ROC](roc.png)",
        "",
        "![pair distance](pair_distances.png) ![loss](loss.png)",
        "",
    ]
    return "\n".join(out)


def _names(r) -> dict[str, str]:
    from train.run_folder import label_names

    return label_names(r)

"""Shared ground of the evidence modules: the run's plan, the progress log, running twinspect
and fresh interpreters as subprocesses, the machine the figures come from, and the generate →
train → export → eval steps every protocol repeats.

It exists so the quality, speed and report modules (and `train.evidence`, which runs them) can
share one `LOG`, one `COMMANDS` list and one set of method names without importing each other.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

POLICY = "recall:0.99"
MLP_LAYERS = ((936, 512), (512, 256), (256, 128))
MLP_MACS = sum(a * b for a, b in MLP_LAYERS)  # 643 072 multiply-adds per embedding
EDGE_DISTS = ("numpy", "scipy", "onnxruntime", "opencv-python-headless")
TRAIN_EXTRA = ("tensorflow-cpu", "tf2onnx", "matplotlib", "pyarrow")
TWINSPECT = "twinspect (ONNX, edge runtime)"
TWINSPECT_MLP = "twinspect --arch mlp (ONNX, edge runtime)"
RECIPE_PAIR = "reference recipe, pair-based"
RECIPE_EMB = "reference recipe, 30-image reference"

# Distributions whose versions head BENCHMARKS.md.
VERSIONED = (
    "numpy",
    "scipy",
    "onnxruntime",
    "opencv-python-headless",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "tf2onnx",
    "twinspect",
)


# ----------------------------------------------------------------------------------- plumbing
@dataclass
class Plan:
    """What this run does; `--quick` shrinks everything to a smoke test."""

    quick: bool = False
    seed: int = 0
    work: Path = Path("results/bench")
    epochs: int | None = None  # None: twinspect's default
    recipe_epochs: int = 20
    difficulties: tuple[float, ...] = (0.5, 1.0, 2.0)
    gen_args: list[str] = field(default_factory=list)
    holdout_recipe: bool = True
    protocol_epochs: int | None = None  # hold-out/difficulty/seed runs; None = as default
    extra_seeds: int = 1  # default line retrained at seed+1 … seed+N for the spread

    @classmethod
    def make(cls, args: argparse.Namespace) -> Plan:
        p = cls(quick=args.quick, seed=args.seed, work=Path(args.work))
        if args.quick:
            p.epochs, p.recipe_epochs = 2, 2
            p.gen_args = ["--n-train", "300", "--n-test", "200", "--n-frames", "60"]
        if args.epochs is not None:
            p.epochs = args.epochs
        if args.recipe_epochs is not None:
            p.recipe_epochs = args.recipe_epochs
        p.holdout_recipe = not args.no_holdout_recipe
        if args.protocol_epochs is not None:
            p.protocol_epochs = args.protocol_epochs
        p.extra_seeds = 1 if args.quick else args.extra_seeds
        return p

    def protocol_args(self) -> list[str]:
        """Extra `twinspect train` options of the hold-out, difficulty and seed runs."""
        return ["--epochs", str(self.protocol_epochs)] if self.protocol_epochs else []

    def train_args(self, seed: int | None = None) -> list[str]:
        args = ["--seed", str(self.seed if seed is None else seed), "--quiet"]
        return args + (["--epochs", str(self.epochs)] if self.epochs is not None else [])


class Log:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._stage: tuple[str, float] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, msg: str) -> None:
        e = self.elapsed()
        print(f"[evidence {int(e // 60):2d}:{e % 60:04.1f}] {msg}", file=sys.stderr, flush=True)

    def stage(self, name: str) -> None:
        now = self.elapsed()
        if self._stage:
            self.stages[self._stage[0]] = round(now - self._stage[1], 1)
        self._stage = (name, now) if name else None
        if name:
            self(f"— {name}")


LOG = Log()
COMMANDS: list[str] = []


def twinspect(*args: str, timeout: float = 3600) -> str:
    """Run one `twinspect` verb as the user would; its stdout, or a RuntimeError with stderr."""
    exe = Path(sys.executable).with_name("twinspect")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edge_runtime.cli"]
    cmd += list(args)
    shown = "twinspect " + " ".join(args)
    COMMANDS.append(shown)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"`{shown}` failed (exit {proc.returncode}):\n{tail}")
    LOG(f"  {shown}  ({time.perf_counter() - t0:.1f}s)")
    return proc.stdout


def python_child(code: str, env: dict | None = None, timeout: float = 900) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child process failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def dig(d, *keys, default=None):
    """d[k0][k1]…, or `default` when any level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


# ----------------------------------------------------------------------------------- header
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict:
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": affinity,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {d: version(d) for d in VERSIONED},
        "git": git_commit(),
    }


def generate(plan: Plan, difficulty: float) -> Path:
    out = plan.work / "data" / f"line-d{difficulty:g}"
    shutil.rmtree(out, ignore_errors=True)
    args = ["generate", "--out", str(out), "--seed", str(plan.seed)]
    if difficulty != 1.0:
        args += ["--difficulty", f"{difficulty:g}"]
    twinspect(*args, *plan.gen_args)
    return out


def train_export_eval(
    plan: Plan,
    data: Path,
    name: str,
    *extra: str,
    seed: int | None = None,
    train_data: Path | None = None,
) -> dict:
    """twinspect train (on train_data, or data) → export → eval on data's test split; the paths
    and the eval figures."""
    run = plan.work / "runs" / name
    model = plan.work / "models" / name
    ev = plan.work / "eval" / f"{name}.json"
    ev.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    twinspect(
        "train",
        "--data",
        str(train_data or data),
        "--out",
        str(run),
        *plan.train_args(seed),
        *extra,
    )
    train_s = time.perf_counter() - t0
    twinspect("export", "--run", str(run), "--out", str(model))
    twinspect(
        "eval", "--model", str(model), "--data", str(data), "--split", "test", "--json", str(ev)
    )
    return {
        "run": run,
        "model": model,
        "eval": read_json(ev),
        "train_wall_s": round(train_s, 1),
        "train_seconds": dig(read_json(run / "metrics.json"), "train_seconds"),
        "epochs": dig(read_json(run / "config.json"), "epochs"),
        "arch": dig(read_json(run / "config.json"), "arch"),
        "augment": dig(read_json(run / "config.json"), "augment"),
        "val": dig(read_json(run / "metrics.json"), "validation", "reference"),
    }


def good_only_data(data: Path, work: Path) -> Path:
    """A good-only line: the data's good training folder (`0` or `good`) alone, linked into
    WORK/good-only/train/good, not copied."""
    src = next((data / "train" / g for g in ("0", "good") if (data / "train" / g).is_dir()), None)
    if src is None:
        raise RuntimeError(f"{data}/train has no good folder (0 or good)")
    link = work / "good-only" / "train" / "good"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(src.resolve(), target_is_directory=True)
    return link.parent.parent


def score_label(model_json: dict) -> str:
    """What a shipped model scores with, e.g. 'minkowski + pixel residual' or 'minkowski, 2
    views' (the part and its mirror images side by side)."""
    name = dig(model_json, "metric", "name") or "—"
    views = dig(model_json, "training", "views")
    return (
        name
        + (" + pixel residual" if model_json.get("fusion") else "")
        + (f", {views} views" if isinstance(views, int) and views > 1 else "")
    )

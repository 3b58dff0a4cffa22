"""`twinspect run` and `twinspect eval`: thin argument parsing over `runner` and the runtime.

Imports only the edge runtime (numpy, OpenCV, onnxruntime, scipy) — never train/ or export/.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.files import write_json
from edge_runtime.preprocess import Roi
from edge_runtime.verbs import Verb


def _roi(text: str) -> Roi:
    try:
        return Roi.parse(text)
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    v = _finite(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0–65535 (0: any free port), got {v}")
    return v


def _checked(check_name: str):
    """An argparse type from a sinks_hook check (imported only when the option is given)."""

    def parse(text: str) -> str:
        from edge_runtime import sinks_hook

        try:
            return getattr(sinks_hook, check_name)(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = check_name  # argparse names the type in its messages
    return parse


def _opcua_port(text: str) -> int:
    v = _port(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be 1–65535: OPC UA clients need to know the port")
    return v


def add_session_arguments(p: argparse.ArgumentParser, given_only: bool = False) -> None:
    """--threads/--spin. `given_only`: default None, so `run --config` can tell an option that
    was given (it overrides the station file) from one that was not."""
    p.add_argument(
        "--threads", type=_positive_int, default=None if given_only else 1,
        help="onnxruntime intra-op threads (default 1: measured best for single parts)",
    )  # fmt: skip
    p.add_argument(
        "--spin", action="store_true", default=None if given_only else False,
        help="let idle onnxruntime threads spin (burns a core; off by default)",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- run
# Every run option's default is None here, so `--config` can tell given from not given: a given
# option overrides the station's [defaults] (never a camera's own key). The defaults a plain run
# uses are RunConfig's (runner.py), said in each option's help.
def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", type=Path, metavar="STATION.toml",
        help="a station file: several cameras in one process, each with its own source, "
        "results file and settings (see README, 'Station file'). Other options given with it "
        "override the file's [defaults], not a camera's own keys",
    )  # fmt: skip
    p.add_argument("--model", type=Path, help="model directory (model.onnx + model.json)")
    p.add_argument(
        "--source",
        help="camera index (0), video file, image folder, glob ('frames/*.png'), rtsp/http URL, "
        "or a recording folder from 'twinspect generate'",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="results file (default: stdout); one record per frame")
    p.add_argument("--csv", action="store_true", default=None, help="write CSV, not JSON lines")
    p.add_argument(
        "--roi",
        type=_roi,
        help="region of interest x,y,w,h (default: recording's roi.json, else the sidecar's)",
    )
    p.add_argument(
        "--threshold",
        type=_finite,
        help="override the sidecar's threshold (recorded in each record)",
    )
    p.add_argument(
        "--batch", type=_positive_int, help="offline sources: embed N frames at a time (default 1)"
    )
    p.add_argument(
        "--resume", action="store_true", default=None,
        help="continue --out: skip frames it already holds. Refused (exit 2) when the source, "
        "model, threshold or ROI differ from those in OUT.run.json",
    )  # fmt: skip
    p.add_argument(
        "--force", action="store_true", default=None,
        help="with --resume: continue even so (OUT.run.json then says the file mixes runs)",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true", default=None, help="replace an existing --out file"
    )
    p.add_argument(
        "--fsync", choices=["every", "batch", "off"],
        help="when records are forced to disk. Every record is in the file as soon as it is "
        "decided, so a crash of twinspect loses nothing; this is about a power cut. every: "
        "fsync each record (nothing lost, but a disk flush per part); batch (default): every "
        "100 records or 1 s, whichever first (at most that lost); off: the OS decides "
        "(typically up to 30 s lost)",
    )  # fmt: skip
    p.add_argument(
        "--save-ng", type=Path, metavar="DIR", help="save each NG crop and annotated frame here"
    )
    p.add_argument(
        "--show",
        action="store_true",
        default=None,
        help="live window with the overlay (needs an OpenCV GUI build)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        default=None,
        help="play a video file like a camera: at its frame rate, newest frame only (a slow "
        "inspector skips frames); the run ends at the end of the file",
    )
    p.add_argument(
        "--max-reconnects", type=int,
        help="reconnect attempts per camera outage before giving up with exit 1 (default 10)",
    )  # fmt: skip
    p.add_argument(
        "--reconnect-wait", type=float, metavar="S",
        help="first reconnect wait in seconds, doubling up to 10 s (default 0.5)",
    )  # fmt: skip
    p.add_argument(
        "--open-timeout", type=_positive_float, metavar="S",
        help="seconds to wait for a camera or stream to open (and reopen) before giving up "
        "(default 5). A live source silent for 5 s counts as an outage",
    )  # fmt: skip
    p.add_argument("--max-frames", type=_positive_int, help="stop after N frames")
    p.add_argument(
        "--fps", type=float, help="offline sources: pace frames at this rate, like the line"
    )
    p.add_argument(
        "--camera", metavar="NAME",
        help="this camera's name in records, metrics and /healthz (default cam0; a station "
        "file names each camera)",
    )  # fmt: skip
    p.add_argument(
        "--part-id-from", choices=["frame", "filename"],
        help="each record's part_id: the frame counter (default) or the image file's stem "
        "(folder, glob or recording frames)",
    )  # fmt: skip
    p.add_argument(
        "--deadline-ms", type=_positive_float, metavar="MS",
        help="a verdict decided later than this after capture is replaced by --fail-safe and "
        "recorded late: true, with the model's verdict in verdict_original (default: none)",
    )  # fmt: skip
    p.add_argument(
        "--fail-safe", choices=["NG", "ERROR", "OK"],
        help="the verdict of a part decided after --deadline-ms (default NG: reject)",
    )  # fmt: skip
    p.add_argument(
        "--sink", action="append", type=_checked("check_sink_url"), metavar="URL",
        help="also send each verdict to mqtt://host:1883/prefix, modbus://plc:502, "
        "opcua://host:4840 or an http(s):// webhook (repeatable; the 'line' extra). Queued "
        "sinks keep undelivered verdicts in OUT.sinks/ beside --out, which they need",
    )  # fmt: skip
    p.add_argument(
        "--mqtt", type=_checked("mqtt_url"), metavar="mqtt://HOST:PORT/PREFIX",
        help="shorthand for --sink: each verdict on PREFIX/<camera>/verdict (QoS 1)",
    )  # fmt: skip
    p.add_argument(
        "--modbus", type=_checked("modbus_url"), metavar="HOST:PORT",
        help="shorthand for --sink modbus://HOST:PORT: each verdict into the PLC's registers "
        "(options may follow, e.g. plc:502?device_id=3&hr_base=8)",
    )  # fmt: skip
    p.add_argument(
        "--opcua-port", type=_opcua_port, metavar="N",
        help="serve every camera's latest state on an OPC UA server at opc.tcp://127.0.0.1:N "
        "(another address: --sink opcua://ADDR:N)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-port", type=_port, metavar="N",
        help="serve Prometheus /metrics and /healthz on this port (0: any free port, printed "
        "on stderr); needs the 'line' extra",
    )  # fmt: skip
    p.add_argument(
        "--metrics-host", metavar="ADDR",
        help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 to be scraped from "
        "another machine)",
    )  # fmt: skip
    p.add_argument(
        "--stale-after", type=_positive_float, metavar="S",
        help="/healthz answers 503 when a camera has delivered no frame for S seconds "
        "(default 5)",
    )  # fmt: skip
    add_session_arguments(p, given_only=True)


# argparse dest → station key (station_config); the same names as RunConfig's fields except
# model → model_dir and format → fmt (runner.RunConfig).
RUN_OPTIONS = {
    "model": "model",
    "roi": "roi",
    "threshold": "threshold",
    "batch": "batch",
    "resume": "resume",
    "force": "force",
    "overwrite": "overwrite",
    "fsync": "fsync",
    "save_ng": "save_ng",
    "show": "show",
    "live": "live",
    "max_reconnects": "max_reconnects",
    "reconnect_wait": "reconnect_wait_s",
    "open_timeout": "open_timeout_s",
    "max_frames": "max_frames",
    "fps": "fps",
    "part_id_from": "part_id_from",
    "deadline_ms": "deadline_ms",
    "fail_safe": "fail_safe",
    "stale_after": "stale_after_s",
    "sink": "sinks",
    "mqtt": "mqtt",
    "modbus": "modbus",
    "opcua_port": "opcua_port",
    "threads": "threads",
    "spin": "spin",
    "metrics_port": "metrics_port",
    "metrics_host": "metrics_host",
}
FIELD = {"model": "model_dir", "format": "fmt"}


def given_options(args: argparse.Namespace) -> dict:
    """The run options given on the command line, by station key."""
    given = {key: getattr(args, dest) for dest, key in RUN_OPTIONS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    if args.csv:
        given["format"] = "csv"
    if "sinks" in given:
        given["sinks"] = tuple(given["sinks"])
    return given


def _run(args: argparse.Namespace) -> int:
    if args.max_reconnects is not None and args.max_reconnects < 0:
        raise BadInput(f"--max-reconnects must be ≥ 0, got {args.max_reconnects}")
    given = given_options(args)
    if args.config is not None:
        return _run_station(args, given)
    if args.model is None or args.source is None:
        missing = " and ".join(
            o for o, v in (("--model", args.model), ("--source", args.source)) if v is None
        )
        raise BadInput(f"{missing} needed (or --config STATION.toml for a station of cameras)")
    from edge_runtime.runner import RunConfig, run

    kwargs = {FIELD.get(k, k): v for k, v in given.items()}
    run(RunConfig(source=args.source, out=args.out, camera=args.camera or "cam0", **kwargs))
    return 0


def _run_station(args: argparse.Namespace, given: dict) -> int:
    for opt, value in (("--source", args.source), ("--out", args.out), ("--camera", args.camera)):
        if value is not None:
            raise BadInput(
                f"{opt} is set per camera in the station file {args.config}; drop it here"
            )
    try:
        from edge_runtime.station_config import load_station
    except ImportError as e:
        if (e.name or "").split(".")[0] not in ("pydantic", "pydantic_core", "annotated_types"):
            raise
        raise MissingExtra("--config (a station file)", "line") from None
    from edge_runtime.station import run_station

    run_station(load_station(args.config, given))
    return 0


RUN = Verb(
    name="run",
    help="Inspect parts on the line: one OK/NG record per frame (edge runtime only).",
    add_arguments=_run_arguments,
    run=_run,
    epilog="""examples:
  twinspect run --model models/default --source data/line/recording --out results.jsonl
  twinspect run --model models/default --source 0 --save-ng ng/ --out shift.jsonl
  twinspect run --model models/default --source 'rtsp://cam1/stream' --csv --out shift.csv
  twinspect run --model models/default --source shift.avi --batch 64 --out replay.jsonl
  twinspect run --model models/default --source 0 --out shift.jsonl --resume
  twinspect run --model models/default --source http://cam1/stream.mjpg --open-timeout 10 \\
      --fsync every --deadline-ms 150 --metrics-port 9108 --out shift.jsonl
  twinspect run --model models/default --source 0 --out shift.jsonl \
      --mqtt mqtt://broker:1883/line1 --modbus plc:502 --opcua-port 4840
  twinspect run --config station.toml                   # several cameras, one process
  twinspect run --config station.toml --max-frames 100  # every camera without its own max_frames

OUT.run.json beside the results keeps the source, model SHA-256, threshold and ROI; --resume
refuses others (--force to mix). One run writes a results file at a time.

Station file (--config): a camera's own key wins over the command line, which wins over the
file's [defaults]; --source, --out and --camera belong to each camera and are refused with it.
Metrics: --metrics-port or [metrics] port serves /metrics (Prometheus) and /healthz (200 while
every camera delivers a frame within --stale-after / stale_after_s, else 503 naming it).

exit codes: 0 done (also after SIGINT/SIGTERM), 1 camera lost beyond --max-reconnects,
            2 bad arguments, source, model or station file; --out in use by another run; a
              --resume that does not match; a write to --out that failed (disk full), after
              the summary; a missing 'line' extra for --config or --metrics-port""",
)


# ---------------------------------------------------------------------------------------- eval
def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, type=Path, help="model directory (model.onnx + model.json)"
    )
    p.add_argument(
        "--data", required=True, help="folder dataset, parquet file, or recording with labels.csv"
    )
    p.add_argument(
        "--split",
        help="dataset split to score (default: test when the dataset has one; the split used "
        "is always printed)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    p.add_argument("--roi", type=_roi, help="crop x,y,w,h (default: a recording's roi.json)")
    p.add_argument("--threshold", type=_finite, help="override the sidecar's threshold")
    p.add_argument(
        "--batch", type=_positive_int, default=256, help="embedding batch size (default 256)"
    )
    add_session_arguments(p)


def choose_split(data: str, split: str | None) -> tuple[str | None, str]:
    """The split eval scores, and how to say so. Without --split a dataset's *test* split is
    scored when it has one: the loader's own default is train (right for training), and scoring
    the training images reported figures that looked far better than the line will see."""
    from edge_runtime.datasets import SPLITS, _is_recording, _split_parquet

    if split is not None:
        return split, f"split {split}"
    p = Path(data)
    if not p.exists():
        return None, "split train (the default of a Hugging Face dataset; --split to choose)"
    if p.is_file():
        return None, "every row of the file"
    if _is_recording(p):
        return None, "recording (labels.csv)"
    have = [s for s in SPLITS if (p / s).is_dir() or _split_parquet(p, s) is not None]
    if "test" in have:
        return "test", "split test (default: the dataset has one; --split to choose)"
    if have:
        return have[0], f"split {have[0]} (the only split; there is no test split)"
    return None, "every labeled image in the folder (no train/test split)"


def evaluate(
    model_dir: Path,
    data: str,
    split: str | None = None,
    roi: Roi | None = None,
    threshold: float | None = None,
    batch: int = 256,
    threads: int = 1,
    spin: bool = False,
) -> dict:
    """Score a labeled source with the runtime alone and return the figures.

    With defect-type prototypes in the sidecar the figures also hold `verdicts`: per true label,
    the counts of OK/NG/NOVEL the line would record (the Inspector's own `judge`, at the
    threshold used here) and how many rejected parts were named after the right type — the
    known-vs-novel confusion that AUROC and escape rates cannot show.
    """
    from edge_runtime.datasets import load_labeled
    from edge_runtime.evaluation import report, verdicts_by_label
    from edge_runtime.inspector import Inspector
    from edge_runtime.model import SessionOptions, load_model_dir

    model = load_model_dir(model_dir, SessionOptions(threads, spin))
    split, split_note = choose_split(str(data), split)
    ds = load_labeled(data, split=split, spec=model.spec, roi=roi)
    inspector = Inspector(model, None, threshold, max_batch=batch)
    protos = model.sidecar.prototypes
    verdicts = None
    if protos:
        scores, judged = inspector.judge_patches(ds.images)
        verdicts = verdicts_by_label(
            ds.labels, [v.verdict for v in judged], [v.nearest for v in judged], protos
        )
    else:
        scores = inspector.score_patches(ds.images)
    figures = report(scores, ds.labels, inspector.threshold)
    names = model.sidecar.labels
    for label, d in figures["per_label"].items():
        d["name"] = names.get(label, label)
    if verdicts is not None:
        for label, d in verdicts.items():
            d["name"] = names.get(label, label)
        figures["verdicts"] = verdicts
    return {
        "model": str(model_dir),
        "data": ds.source,
        "split": split,
        "split_note": split_note,
        "threshold_from": inspector.threshold_from,
        "skipped": [{"path": p, "reason": r} for p, r in ds.skipped],
        **figures,
    }


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.4f}"  # NaN: one class only


def format_figures(f: dict) -> str:
    lines = [
        f"twinspect eval: {f['data']} ({f['split_note']}) — {f['n']} images ({f['n_good']} good, "
        f"{f['n_defect']} defect), threshold {f['threshold']:.6g} ({f['threshold_from']})",
        f"  AUROC {_fmt(f['auroc'])}  accuracy {_fmt(f['accuracy'])}  F1 {_fmt(f['f1'])}  "
        f"escape rate {_fmt(f['escape_rate'])}  overkill rate {_fmt(f['overkill_rate'])}",
        f"  confusion: defects caught (TP) {f['tp']}, escaped (FN) {f['fn']}, "
        f"good rejected (FP) {f['fp']}, good passed (TN) {f['tn']}",
    ]
    if f["per_label"]:
        lines.append("  per defect label        n    AUROC   escape")
        for label, d in f["per_label"].items():
            name = f"{label} ({d['name']})" if d["name"] != label else label
            lines.append(
                f"    {name:<18} {d['n']:>6} {_fmt(d['auroc']):>8} {_fmt(d['escape_rate']):>8}"
            )
    if f.get("verdicts"):  # only a model with defect-type prototypes; old JSON has none
        lines.append(
            "  verdicts by label (known types named by nearest prototype; NOVEL = like no "
            "known type)"
        )
        names = {
            label: f"{label} ({d['name']})" if d.get("name", label) != label else label
            for label, d in f["verdicts"].items()
        }
        w = max(18, *map(len, names.values()))  # user's names can be long: keep columns aligned
        lines.append(f"    {'label':<{w}} {'n':>6} {'OK':>7} {'NG':>7} {'NOVEL':>7}  named right")
        for label, d in f["verdicts"].items():
            if d["named_right"] is None:
                right = "— (not a known type)" if label != "0" else "—"
            else:
                right = f"{d['named_right']}/{d['NG'] + d['NOVEL']}"
            lines.append(
                f"    {names[label]:<{w}} {d['n']:>6} {d['OK']:>7} {d['NG']:>7} {d['NOVEL']:>7}"
                f"  {right}"
            )
    if f["skipped"]:
        first = f["skipped"][0]
        lines.append(
            f"  skipped {len(f['skipped'])} unreadable images "
            f"(first: {first['path']}: {first['reason']})"
        )
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    figures = evaluate(
        args.model,
        args.data,
        args.split,
        args.roi,
        args.threshold,
        args.batch,
        args.threads,
        args.spin,
    )
    print(format_figures(figures))
    if args.json:
        write_json(args.json, figures)
        print(f"  figures written to {args.json}", file=sys.stderr)
    return 0


EVAL = Verb(
    name="eval",
    help="Score a labeled source with the edge runtime: AUROC, accuracy, F1, escape/overkill.",
    add_arguments=_eval_arguments,
    run=_eval,
    epilog="""examples:
  twinspect eval --model models/default --data data/line --json eval-test.json  # test split
  twinspect eval --model models/default --data data/line/recording
  twinspect eval --model models/default --data parts.parquet""",
)

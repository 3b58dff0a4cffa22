"""`twinspect serve`: `twinspect run` with the station page (see server.py and README).

Every `twinspect run` option works here with the same meaning (one camera from --model/--source,
or a station file with --config), plus the page's own. FastAPI and uvicorn (the `page` extra)
are imported only when the verb runs: without them it is one line naming the extra, exit 2,
and the base install still runs `twinspect run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.inspect_cli import FIELD, _port, _run_arguments, given_options
from edge_runtime.verbs import Verb


def _arguments(p: argparse.ArgumentParser) -> None:
    _run_arguments(p)
    g = p.add_argument_group("the station page")
    g.add_argument(
        "--host", default="127.0.0.1",
        help="address the page listens on (default 127.0.0.1: this machine only)",
    )  # fmt: skip
    g.add_argument("--port", type=_port, default=8080, help="page port (default 8080; 0: any)")
    g.add_argument(
        "--token-file", type=Path, metavar="FILE",
        help="the token state changes need (made at first start, mode 0600; default "
        "~/.config/twinspect/token)",
    )  # fmt: skip
    g.add_argument(
        "--review", type=Path, metavar="DIR",
        help="where relabelled parts go, as DIR/train/<label>/<part>.png (default OUT.review/)",
    )  # fmt: skip
    g.add_argument(
        "--run", type=Path, metavar="RUN",
        help="the model's training run folder: its validation.npz gives the escape and "
        "overkill a proposed threshold would have had",
    )  # fmt: skip
    g.add_argument(
        "--shifts", default="06:00,14:00,22:00",
        help="shift start times, local (default 06:00,14:00,22:00)",
    )  # fmt: skip
    g.add_argument(
        "--exit-when-done", action="store_true",
        help="stop serving when every camera has ended (default: the page stays up)",
    )  # fmt: skip


def require_page(what: str) -> None:
    """One line naming the extra (exit 2) when FastAPI or uvicorn is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MissingExtra(what, "page") from None


def _serve(args: argparse.Namespace) -> int:
    require_page("twinspect serve")
    from edge_runtime.page.server import ServeOptions, serve
    from edge_runtime.runner import RunConfig
    from edge_runtime.station import Station

    if args.max_reconnects is not None and args.max_reconnects < 0:
        raise BadInput(f"--max-reconnects must be ≥ 0, got {args.max_reconnects}")
    given = given_options(args)
    if args.config is not None:
        per_camera = (("--source", args.source), ("--out", args.out), ("--camera", args.camera))
        for opt, value in per_camera:
            if value is not None:
                raise BadInput(f"{opt} is set per camera in the station file {args.config}")
        try:
            from edge_runtime.station_config import load_station
        except ImportError:
            raise MissingExtra("--config (a station file)", "line") from None
        st = load_station(args.config, given)
    else:
        missing = [o for o, v in (("--model", args.model), ("--source", args.source),
                                  ("--out", args.out)) if v is None]  # fmt: skip
        if missing:
            raise BadInput(f"{' and '.join(missing)} needed (or --config STATION.toml)")
        kwargs = {FIELD.get(k, k): v for k, v in given.items()}
        cfg = RunConfig(source=args.source, out=args.out, camera=args.camera or "cam0", **kwargs)
        st = Station(
            cameras=[cfg], threads=cfg.threads, spin=cfg.spin,
            metrics_port=cfg.metrics_port, metrics_host=cfg.metrics_host,
        )  # fmt: skip
    opts = ServeOptions(
        host=args.host, port=args.port, token_file=args.token_file, review=args.review,
        run_dir=args.run, shifts=args.shifts, exit_when_done=args.exit_when_done,
    )  # fmt: skip
    return serve(st, opts)


VERB = Verb(
    name="serve",
    help="Inspect parts and serve the station page: live view, yield, NG gallery, sign-off.",
    add_arguments=_arguments,
    run=_serve,
    epilog="""examples:
  twinspect serve --model models/default --source 0 --out shift.jsonl --port 8080
  twinspect serve --model models/default --source data/line/recording --fps 10 \\
      --out replay.jsonl --run runs/default --port 0
  twinspect serve --config station.toml --host 0.0.0.0 --port 8080

Every 'twinspect run' option works the same here. Open the printed address in a browser. Reading
needs nothing; a threshold change, a rollback or a relabel needs the token from --token-file
(made at first start, mode 0600; default ~/.config/twinspect/token), sent as
'Authorization: Bearer <token>' (the page asks for it once). Threshold changes write a new
sidecar version (MODEL/versions/model.vN.json) and a line in MODEL/changes.jsonl (who, when, why,
old, new; hash-chained); the running inspection uses the new threshold from the next frame.

exit codes: as 'twinspect run'; 2 also for a missing 'page' extra, a port in use, or a token
            file others can read""",
)

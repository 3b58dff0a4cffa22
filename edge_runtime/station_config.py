"""The station file: `twinspect run --config station.toml` — several cameras, one process.

Read with the standard library's tomllib and checked with pydantic models (the `line` extra,
imported only when a station file is given): strict types — `deadline_ms = "200"` is a mistake,
not a number — and no unknown keys, because a misspelt `dedline_ms` silently ignored is a line
running without the deadline its engineer wrote down. Every mistake is one line naming the file
and the key path (`station.toml: cameras[1].deadline_ms: must be > 0, got -5`), exit 2, before
a model is loaded or a results file touched.

Layout: station-wide keys at the top (`threads`, `spin`), a `[metrics]` table, a `[defaults]`
table holding any camera key, and one `[[cameras]]` table per camera (`name`, `source`, `out`
and any camera key). Where a camera's value comes from, first match wins:
    the camera's own key  >  the command line  >  [defaults]  >  twinspect's default
so a command-line option overrides the station's defaults (e.g. `--max-frames 100` for a smoke
test of every camera) but never a value an engineer set on one camera on purpose. Station-wide
keys and [metrics] are overridden by the command line.

Relative paths in the file (model, source, out, save_ng, a webhook's token_file) are relative
to the file's own folder, so a station file means the same whatever folder the service starts
in; paths given on the command line are relative to the current folder, as always.

A webhook's bearer token is never written in the file: a `sinks` entry may be a table
`{ url = "https://…", token_env = "VARIABLE" }` (or `token_file = "path"`, its first line),
handed to open_sink as the mapping it takes, so the sink reads the secret with its own code
(sinks.base.Options.secret). That same code is run once here, so a variable that is not set or
a file that cannot be read is one line naming the station file and the key, exit 2, before a
model is loaded.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from edge_runtime.errors import BadInput
from edge_runtime.parts import NAME_RE
from edge_runtime.preprocess import Roi
from edge_runtime.runner import RunConfig
from edge_runtime.sinks_hook import check_sink_url, modbus_url, mqtt_url, scheme, sink_urls
from edge_runtime.sources import URL_RE
from edge_runtime.station import Station


def _roi(v: Any) -> Roi | None:
    """ "x,y,w,h" as on the command line, a table {x, y, w, h} as in roi.json, or [x, y, w, h]."""
    try:
        if isinstance(v, str):
            return Roi.parse(v)
        if isinstance(v, dict):
            return Roi.from_dict(v, where="roi")
        if isinstance(v, list) and len(v) == 4 and all(type(n) is int for n in v):
            return Roi.from_dict(dict(zip("xywh", v, strict=True)), where="roi")
    except BadInput as e:
        raise ValueError(str(e).removeprefix("--roi ").removeprefix("roi: ")) from None
    raise ValueError(f'expected "x,y,w,h", [x, y, w, h] or {{x=…, y=…, w=…, h=…}}, got {_show(v)}')


def _sink(url: str) -> str:
    return check_sink_url(url)


def _source(v: Any) -> Any:
    return str(v) if type(v) is int else v  # source = 0: camera index 0


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookTable(_Table):
    """A `sinks` entry for a webhook with a bearer token, read at start and never written here:
    `{ url = "https://…", token_env = "VARIABLE" }` or `token_file = "path"` (its first line);
    `ca = "path"` (a CA file for an https endpoint with its own certificate authority) and
    `timeout` (seconds per request, default 5) as the webhook sink takes them."""

    url: Annotated[str, AfterValidator(_sink)]
    token_env: str | None = None
    token_file: str | None = None
    ca: str | None = None
    timeout: PositiveFloat | None = None

    @model_validator(mode="after")
    def _webhook_only(self) -> WebhookTable:
        if scheme(self.url) not in ("http", "https"):
            raise ValueError(
                f"{self.url!r}: token_env/token_file/ca/timeout in a table are for http(s):// "
                "webhooks (other sinks take password_env/password_file and ca in the URL)"
            )
        return self


# A `sinks` entry: a URL, or a webhook's table, told apart by their TOML type (so an error is
# about the one the engineer wrote); the tags are dropped from an error's key path.
SINK_URL, SINK_TABLE = SINK_TAGS = ("sink URL", "sink table")


def _sink_kind(v: Any) -> str:
    return SINK_TABLE if isinstance(v, dict | WebhookTable) else SINK_URL


SinkEntry = Annotated[
    Annotated[Annotated[str, AfterValidator(_sink)], Tag(SINK_URL)]
    | Annotated[WebhookTable, Tag(SINK_TABLE)],
    Discriminator(_sink_kind),
]


class CameraKeys(_Table):
    """Keys a camera takes, each also valid in [defaults]; None = not given here."""

    model: str | None = None
    format: Literal["jsonl", "csv"] | None = None
    roi: Annotated[Any, AfterValidator(_roi)] = None
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = None
    batch: Annotated[int, Field(ge=1)] | None = None
    resume: bool | None = None
    force: bool | None = None
    overwrite: bool | None = None
    fsync: Literal["every", "batch", "off"] | None = None
    save_ng: str | None = None
    show: bool | None = None
    live: bool | None = None
    max_reconnects: Annotated[int, Field(ge=0)] | None = None
    reconnect_wait_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    open_timeout_s: PositiveFloat | None = None
    max_frames: Annotated[int, Field(ge=1)] | None = None
    fps: PositiveFloat | None = None
    deadline_ms: PositiveFloat | None = None
    fail_safe: Literal["NG", "ERROR", "OK"] | None = None
    part_id_from: Literal["frame", "filename"] | None = None
    stale_after_s: PositiveFloat | None = None
    sinks: list[SinkEntry] | None = None
    mqtt: Annotated[str, AfterValidator(mqtt_url)] | None = None
    modbus: Annotated[str, AfterValidator(modbus_url)] | None = None


class CameraTable(CameraKeys):
    """One [[cameras]] table: a name, a source, its own results file, and any camera key."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    source: Annotated[str, BeforeValidator(_source)]
    out: str | None = None


class MetricsTable(_Table):
    port: Annotated[int, Field(ge=0, le=65535)]
    host: str = "127.0.0.1"


class StationFile(_Table):
    threads: Annotated[int, Field(ge=1)] | None = None
    spin: bool | None = None
    opcua_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    metrics: MetricsTable | None = None
    defaults: CameraKeys | None = None
    cameras: Annotated[list[CameraTable], Field(min_length=1)]


CAMERA_KEYS = tuple(CameraKeys.model_fields)
PATH_KEYS = ("model", "out", "save_ng")
# Station key → RunConfig field, where the names differ.
RUN_FIELD = {"model": "model_dir", "format": "fmt", "name": "camera"}


# ----------------------------------------------------------------------------- messages
def _show(v: Any) -> str:
    """A value as it reads in TOML (true, "3", -5)."""
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(v)


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _table_keys(loc: tuple) -> list[str]:
    """The keys allowed in the table holding loc's last key (for an unknown key's hint)."""
    parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
    if not parent:
        return list(StationFile.model_fields)
    return list(
        {
            "cameras": CameraTable.model_fields,
            "defaults": CameraKeys.model_fields,
            "metrics": MetricsTable.model_fields,
            "sinks": WebhookTable.model_fields,
        }.get(parent[-1], {})
    )


def _message(err: dict) -> str:
    """One pydantic error as a person would say it."""
    kind, got, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    loc = err["loc"]
    if kind == "extra_forbidden":
        keys = _table_keys(loc)
        near = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"did you mean {near[0]}?" if near else f"known keys: {', '.join(keys)}"
        return f"unknown key ({hint})"
    if kind == "missing":
        return "missing (required)"
    if kind == "too_short" and loc == ("cameras",):
        return "needs at least one [[cameras]] table"
    bounds = {
        "greater_than": ("gt", ">"),
        "greater_than_equal": ("ge", "≥"),
        "less_than_equal": ("le", "≤"),
    }
    if kind in bounds:
        key, sign = bounds[kind]
        return f"must be {sign} {ctx[key]:g}, got {_show(got)}"
    expected = {
        "int_type": "a whole number",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "model_type": "a table",
        "dict_type": "a table",
    }
    if kind in expected:
        return f"expected {expected[kind]}, got {_show(got)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {_show(got)}"
    if kind == "finite_number":
        return f"must be a finite number, got {got!r}"
    if kind == "string_pattern_mismatch":
        return (
            f"{_show(got)}: a camera name is 1–64 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit (it names metrics, records and files)"
        )
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return str(err["msg"])


# ----------------------------------------------------------------------------- loading
def read_station(path: Path) -> StationFile:
    """Parse and check the file's own content; BadInput naming the file and key path."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such station file") from None
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not valid TOML (not UTF-8 text)") from None
    try:
        return StationFile.model_validate(doc)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        first["loc"] = tuple(p for p in first["loc"] if p not in SINK_TAGS)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BadInput(f"{path}: {_where(first['loc'])}: {_message(first)}{more}") from None


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _source_path(base: Path, source: str) -> str:
    """A file, folder or glob relative to the station file; URLs and camera indices as given."""
    if URL_RE.match(source) or source.isdigit():
        return source
    return str(_resolve(base, source))


# files a sink reads, named in its URL's query or a webhook's table: relative to the station file
SINK_FILES = ("password_file", "token_file", "ca")


def _sink_target(sink: str | WebhookTable, base: Path, where: str) -> str | dict:
    """A `sinks` entry as open_sink takes it: the URL, or the webhook's mapping, with the files
    it names (password_file, token_file, ca) relative to the station file, like every other
    path in it. The sink's own readers are run on it now, so a variable that is not set or a
    file that cannot be read is refused at start, by key."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from edge_runtime.sinks.base import Options

    if isinstance(sink, str):
        parts = urlsplit(sink)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if not any(k in SINK_FILES for k, _ in query):
            return sink
        query = [(k, str(_resolve(base, v)) if k in SINK_FILES else v) for k, v in query]
        url = urlunsplit(parts._replace(query=urlencode(query, safe="/")))
        Options(where, dict(query)).secret("password")
        Options(where, dict(query)).path("ca")
        return url
    target = sink.model_dump(exclude_none=True)
    for key in SINK_FILES:
        if key in target:
            target[key] = str(_resolve(base, target[key]))
    Options(where, target).secret("token")  # BadInput "<where>: token_env: the variable … "
    Options(where, target).path("ca")  # BadInput "<where>: ca=…: no such file"
    return target


def load_station(path: Path, cli: dict[str, Any] | None = None) -> Station:
    """The station file with [defaults] and the command line applied (see the module doc).

    `cli` maps station keys (camera keys, and threads, spin, metrics_port, metrics_host) to
    the values given on the command line; options not given must be absent.
    """
    cli = dict(cli or {})
    doc = read_station(path)
    base = path.parent
    defaults = doc.defaults or CameraKeys()

    def fail(where: str, msg: str) -> BadInput:
        return BadInput(f"{path}: {where}: {msg}")

    cameras: list[RunConfig] = []
    names: dict[str, int] = {}
    outs: dict[Path, int] = {}
    for i, cam in enumerate(doc.cameras):
        if cam.name in names:
            raise fail(
                f"cameras[{i}].name",
                f"duplicate camera name {cam.name!r} (also cameras[{names[cam.name]}])",
            )
        names[cam.name] = i
        kwargs: dict[str, Any] = {"camera": cam.name, "source": _source_path(base, cam.source)}
        where: dict[str, str] = {}
        for key in CAMERA_KEYS:
            if key in cam.model_fields_set:
                value, where[key], from_file = getattr(cam, key), f"cameras[{i}].{key}", True
            elif key in cli:
                value, where[key], from_file = cli[key], f"--{key.replace('_', '-')}", False
            elif key in defaults.model_fields_set:
                value, where[key], from_file = getattr(defaults, key), f"defaults.{key}", True
            else:
                continue
            if key in PATH_KEYS and from_file:
                value = _resolve(base, value)
            elif key in PATH_KEYS:
                value = Path(value)
            if key == "sinks" and from_file:
                value = tuple(
                    _sink_target(sink, base, f"{path}: {where[key]}[{k}]")
                    for k, sink in enumerate(value)
                )
            elif key == "sinks":
                value = tuple(value)
            if key == "mqtt" and from_file and value is not None:
                value = _sink_target(value, base, f"{path}: {where[key]}")
            if key == "threshold":
                kwargs["threshold_from"] = "station file" if from_file else ""
            kwargs[RUN_FIELD.get(key, key)] = value
        model = kwargs.get("model_dir")
        if model is None:
            raise fail(
                f"cameras[{i}].model", "missing (set it here, in [defaults] or with --model)"
            )
        if not Path(model).is_dir():
            raise fail(where["model"], f"{model}: no such model directory")
        if "out" in cam.model_fields_set:
            out = _resolve(base, cam.out)
            key = out.resolve()
            if key in outs:
                raise fail(
                    f"cameras[{i}].out",
                    f"{out} is also cameras[{outs[key]}].out; each camera needs its own results "
                    "file",
                )
            outs[key] = i
            kwargs["out"] = out
        elif len(doc.cameras) > 1:
            raise fail(
                f"cameras[{i}].out",
                "missing: a station of several cameras needs a results file per camera",
            )
        src = kwargs["source"]
        is_path = not (URL_RE.match(src) or src.isdigit() or any(c in src for c in "*?["))
        if is_path and not Path(src).exists():
            raise fail(f"cameras[{i}].source", f"{src}: no such file or folder")
        cameras.append(RunConfig(**kwargs))

    _check_register_blocks(path, cameras)
    metrics = doc.metrics
    port = cli.get("metrics_port", metrics.port if metrics else None)
    host = cli.get("metrics_host", metrics.host if metrics else "127.0.0.1")
    return Station(
        cameras=cameras,
        threads=cli.get("threads", doc.threads or 1),
        spin=cli.get("spin", bool(doc.spin)),
        metrics_port=port,
        metrics_host=host,
        opcua_port=cli.get("opcua_port", doc.opcua_port),
        path=str(path),
    )


def _modbus_block(url: str) -> tuple[tuple, range, range] | None:
    """(PLC, holding registers, coils) a modbus:// sink writes, None for other sinks or options
    the sink itself will refuse (it says so, by name, when it opens)."""
    from edge_runtime.sinks.modbus import ACK

    parts = urlsplit(url)
    if parts.scheme != "modbus":
        return None
    q = dict(parse_qsl(parts.query))
    try:
        device = int(q.get("device_id", 1))
        hr, coil = int(q.get("hr_base", 0)), int(q.get("coil_base", 0))
        plc = (parts.hostname, parts.port or 502, device)
    except ValueError:
        return None
    return plc, range(hr, hr + ACK + 1), range(coil, coil + 3)


def _overlap(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


def _check_register_blocks(path: Path, cameras: list[RunConfig]) -> None:
    """Two cameras writing the same PLC registers would overwrite each other's parts without
    an error anywhere: refuse it, naming both (each camera needs its own hr_base/coil_base)."""
    seen: list[tuple[int, tuple, range, range]] = []
    for i, cfg in enumerate(cameras):
        for url in sink_urls(cfg):
            block = _modbus_block(url)
            if block is None:
                continue
            plc, hr, coils = block
            for j, plc_j, hr_j, coils_j in seen:
                if plc == plc_j and (_overlap(hr, hr_j) or _overlap(coils, coils_j)):
                    raise BadInput(
                        f"{path}: cameras[{i}]: modbus sink {url} writes the PLC registers of "
                        f"cameras[{j}] ({plc[0]}:{plc[1]} device {plc[2]}, holding registers "
                        f"{hr_j.start}–{hr_j.stop - 1}, coils {coils_j.start}–{coils_j.stop - 1}); "
                        "give each camera its own hr_base and coil_base"
                    )
            seen.append((i, plc, hr, coils))

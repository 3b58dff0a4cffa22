"""Everything the station page knows, in one place, with no web framework in it.

`PageState` is built from the station (one camera for `--model/--source`, several for
`--config`) before the inspection starts, and `attach`ed to the opened cameras before their
first frame: each camera gets a watcher (its newest frame, for the live view) and — unless its
threshold was pinned on the command line or in the station file — its model directory's
threshold holder, which a signed-off change or a rollback sets once the new sidecar version is
on disk. The web layer (`app.py`) only parses requests and turns errors into status codes, so
what the page does can be read here without FastAPI.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.errors import BadInput
from edge_runtime.metrics import drift_scale
from edge_runtime.page.estimate import Validation, preview
from edge_runtime.page.gallery import Review, confined
from edge_runtime.page.live import LiveFrames, ThresholdHolder
from edge_runtime.page.stats import CameraRecords, Shifts, tables
from edge_runtime.page.versions import ModelVersions, check_text, check_threshold
from edge_runtime.runner import RunConfig
from edge_runtime.sidecar import Sidecar


class NotFound(BadInput):
    """No such camera or gallery item (HTTP 404)."""


@dataclass
class ModelPage:
    """One model directory: its versions, its threshold holder, who follows it."""

    dir: Path
    versions: ModelVersions
    holder: ThresholdHolder
    sidecar: Sidecar
    validation: Validation | None
    cameras: list[str] = field(default_factory=list)  # following the holder
    pinned: dict[str, str] = field(default_factory=dict)  # camera → why its threshold is fixed

    @property
    def scale(self) -> tuple[float, str]:
        return drift_scale(self.sidecar)


def ng_folder(cfg: RunConfig) -> Path:
    """Where a camera's NG crops go: its --save-ng folder, else `<out>.ng/` beside the results."""
    return cfg.save_ng if cfg.save_ng is not None else cfg.out.with_name(cfg.out.name + ".ng")


class PageState:
    """See the module doc. Every method may be called from any web worker thread."""

    def __init__(
        self,
        cameras: list[RunConfig],
        review_dir: Path,
        shifts: Shifts,
        run_dir: Path | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.closing = threading.Event()
        self.cfgs = {c.camera: c for c in cameras}
        self.live = LiveFrames(list(self.cfgs))
        self.records = {
            c.camera: CameraRecords(c.camera, c.out, ng_folder(c), shifts) for c in cameras
        }
        validation = Validation.load(run_dir) if run_dir is not None else None
        self.models: dict[Path, ModelPage] = {}
        for c in cameras:
            key = Path(c.model_dir).resolve()
            if key not in self.models:
                versions = ModelVersions(key)
                sidecar = Sidecar.load(versions.sidecar_path)
                current = versions.history()["current"]
                label = f"sidecar v{current}" if current else "sidecar"
                holder = ThresholdHolder(sidecar.threshold.value, label)
                self.models[key] = ModelPage(key, versions, holder, sidecar, validation)
            m = self.models[key]
            if c.threshold is None:
                m.cameras.append(c.camera)
            else:
                m.pinned[c.camera] = f"{c.threshold:g} ({c.threshold_from or 'command line'})"
        labels = next(iter(self.models.values())).sidecar.labels
        self.review = Review(review_dir, labels, with_camera=len(cameras) > 1)
        self.cams: dict = {}  # name → edge_runtime.camera.Camera, once attached
        self.inspection = {"state": "starting", "error": None}

    # ---------------------------------------------------------------- wiring
    def attach(self, cams: list) -> None:
        """Called with the opened cameras before their first frame (station.run_station)."""
        for cam in cams:
            cam.watchers.append(self.live.watcher(cam.name))
            model = self.model_for(cam.name)
            if cam.name in model.cameras:
                cam.threshold_holder = model.holder
            self.cams[cam.name] = cam
        self.inspection["state"] = "running"

    def camera(self, name: str) -> CameraRecords:
        if name not in self.records:
            raise NotFound(f"no camera named {name!r} (cameras: {', '.join(self.records)})")
        return self.records[name]

    def model_for(self, camera: str | None) -> ModelPage:
        """The model a request is about: its camera's, or the only one."""
        if camera is None:
            if len(self.models) > 1:
                raise BadInput("several models on this station: name the camera")
            return next(iter(self.models.values()))
        self.camera(camera)
        return self.models[Path(self.cfgs[camera].model_dir).resolve()]

    # ---------------------------------------------------------------- reading
    def _update(self) -> None:
        for r in self.records.values():
            r.update()

    def snapshot(self) -> dict:
        """The page's live figures: cameras, counts, trend, thresholds, drift."""
        with self.lock:
            self._update()
            now = time.monotonic()
            cameras = []
            for name, cfg in self.cfgs.items():
                cam = self.cams.get(name)
                status = cam.status.to_dict(now) if cam is not None else {"state": "starting"}
                cameras.append({"name": name, **status, **self.live.status(name),
                                "source": cfg.source})  # fmt: skip
            models = []
            for m in self.models.values():
                value, label = m.holder.get()
                scale, scale_from = m.scale
                hist = m.versions.history()
                models.append({
                    "dir": str(m.dir), "threshold": value, "label": label,
                    "version": hist["current"], "log_ok": hist["ok"],
                    "log_error": hist.get("error"), "cameras": m.cameras, "pinned": m.pinned,
                    "scale": scale, "scale_from": scale_from,
                    "drift": {c: self.records[c].drift(scale) for c in m.cameras + list(m.pinned)},
                })  # fmt: skip
            return {
                "now": datetime.now(UTC).isoformat(timespec="seconds"),
                "inspection": dict(self.inspection),
                "cameras": cameras,
                "counts": tables(list(self.records.values())),
                "trend": {n: list(r.trend) for n, r in self.records.items()},
                "models": models,
                "ng_items": sum(len(r.items) for r in self.records.values()),
            }

    def gallery(
        self, camera: str | None, since: float | None, until: float | None, limit: int
    ) -> dict:
        """NG parts with saved crops, newest first, within [since, until] (epoch seconds)."""
        with self.lock:
            self._update()
            recs = [self.camera(camera)] if camera else list(self.records.values())
            items = [
                i
                for r in recs
                for i in r.items
                if (since is None or i["ts"] >= since) and (until is None or i["ts"] <= until)
            ]
        items.sort(key=lambda i: i["ts"], reverse=True)
        labelled = self.review.labelled()
        shown = [{**i, "label": labelled.get(i["id"])} for i in items[:limit]]
        return {"items": shown, "total": len(items), "types": self.review.types()}

    def image(self, camera: str, name: str) -> Path:
        """A gallery image, confined to the camera's NG folder (gallery.confined)."""
        r = self.camera(camera)
        if r.ng_dir is None:
            raise NotFound(f"camera {camera} keeps no NG images")
        return confined(r.ng_dir, name)

    def preview(self, proposed: object, camera: str | None) -> dict:
        value = check_threshold(proposed)
        m = self.model_for(camera)
        with self.lock:
            self._update()
            recent = [s for c in m.cameras for s in self.records[c].recent]
        current, _ = m.holder.get()
        return preview(value, current, m.validation, m.sidecar.threshold.calibration, recent)

    # ---------------------------------------------------------------- changing
    def set_threshold(self, body: dict, client: str) -> dict:
        m = self.model_for(_camera(body))
        args = (body.get("threshold"), body.get("reason"), _who(body), client)
        return self._signed(m, m.versions.set_threshold, args)

    def rollback(self, body: dict, client: str) -> dict:
        m = self.model_for(_camera(body))
        args = (body.get("version"), body.get("reason"), _who(body), client)
        return self._signed(m, m.versions.rollback, args)

    def _signed(self, m: ModelPage, change, args: tuple) -> dict:
        """Write the new version (refusals change nothing), then hand its threshold to the
        cameras: a batch already being judged keeps the old one, the next frame has the new."""
        try:
            entry = change(*args)
        except OSError as e:
            raise BadInput(f"{m.dir}: cannot write the new version ({e.strerror or e})") from None
        m.holder.set(entry["new"], f"sidecar v{entry['version']}")
        return {**_public(entry), "cameras": m.cameras, "pinned": m.pinned}

    def versions(self, camera: str | None) -> dict:
        m = self.model_for(camera)
        return {"dir": str(m.dir), **m.versions.history()}

    def relabel(self, body: dict, client: str) -> dict:
        camera = _camera(body)
        if camera is None:
            raise BadInput("camera is required")
        frame = body.get("frame")
        with self.lock:
            self._update()
            r = self.camera(camera)
            item = r.by_id.get(frame) if isinstance(frame, int) else None
        if item is None:
            raise NotFound(f"camera {camera} has no NG part with a saved crop at frame {frame!r}")
        crop = confined(r.ng_dir, item["crop"])
        return self.review.relabel(item, crop, body.get("label"), _who(body), client)


def _camera(body: dict) -> str | None:
    cam = body.get("camera")
    if cam is not None and not isinstance(cam, str):
        raise BadInput(f"camera must be a camera name, got {json.dumps(cam)}")
    return cam


def _who(body: dict) -> str:
    return check_text(body.get("who"), "who", False, 64) or "operator"


def _public(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "prev_sha256"}

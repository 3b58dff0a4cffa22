"""Issue 12: `twinspect serve`, the station page. Real components only: an exported (untrained)
model, a generated recording replayed as a live MJPEG camera on 127.0.0.1, `twinspect serve` in
a child process (uvicorn on a free port), Debian's headless Chromium driven by selenium, and
plain HTTP requests. No timed assertions: bounded waits for conditions only.

The tests of the served station share one child process and one browser (module fixtures) and
run in file order: live view, threshold sign-off, rollback, counts, gallery, refusals, stop.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import BadInput
from edge_runtime.linesim import MjpegCamera
from edge_runtime.page.versions import LogTampered, ModelVersions
from edge_runtime.sidecar import Sidecar
from edge_runtime.synthetic.writer import Config, generate

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROME_FLAGS = [  # offline box: no sandbox (root), no GPU, nothing that reaches for a network
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1000",
]  # fmt: skip
ROI = "106,81,108,78"


# ----------------------------------------------------------------------------- plumbing
def wait_for(what: str, cond: Callable[[], object], proc=None, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"serve ended ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def frames_of(path: Path) -> list[dict]:
    """Whole lines only (a line being written is not a record yet)."""
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [r for r in map(json.loads, lines) if r["event"] == "frame"]


def at_least(path: Path, n: int) -> list[dict] | None:
    """The records once there are at least n of them (for wait_for)."""
    recs = frames_of(path)
    return recs if len(recs) >= n else None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Served:
    """`twinspect serve` on a live camera, in a child process; its files and HTTP helpers."""

    def __init__(self, root: Path, model: Path, run: Path, camera: MjpegCamera) -> None:
        self.root, self.model, self.camera = root, model, camera
        self.out, self.token_file = root / "results" / "shift.jsonl", root / "token"
        self.ng, self.review = (
            root / "results" / "shift.jsonl.ng",
            root / "results" / "shift.jsonl.review",
        )
        argv = ["serve", "--model", model, "--source", camera.url, "--roi", ROI, "--out",
                self.out, "--port", 0, "--token-file", self.token_file, "--run", run,
                "--max-reconnects", 1000, "--reconnect-wait", 0.05]  # fmt: skip
        cmd = [sys.executable, "-m", "edge_runtime.cli", *map(str, argv)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        self.out_lines: list[str] = []
        self.err_lines: list[str] = []
        for stream, sink in (
            (self.proc.stdout, self.out_lines),
            (self.proc.stderr, self.err_lines),
        ):
            threading.Thread(target=sink.extend, args=(stream,), daemon=True).start()
        line = wait_for("the page address", self._address, self.proc)
        self.url = line.split("station page on ")[1].split(";")[0]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        self.token = self.token_file.read_text().strip()

    def _address(self) -> str | None:
        return next((s for s in list(self.err_lines) if "station page on http://" in s), None)

    def request(
        self,
        method: str,
        path: str,
        body=None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict | None = None,
    ) -> tuple[int, dict, dict]:
        """(status, JSON body or {}, headers) — http.client sends the path exactly as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = {"_bytes": payload}
        return resp.status, parsed, dict(resp.getheaders())

    def finish(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("line") / "line"
    generate(Config(out=out, n_train=4, n_test=4, n_frames=12, workers=1))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, untrained_model_dir, untrained_run, line) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("station")
    model = root / "model"
    shutil.copytree(untrained_model_dir, model)
    camera = MjpegCamera(sorted((line / "recording" / "frames").glob("*.png")), 1 / 8)
    camera.start()
    s = Served(root, model, untrained_run, camera)
    yield s
    s.finish()
    camera.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed: run `make deps`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never looks for a browser online
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def page_text(driver, selector: str) -> str:
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", selector
    )


def click(driver, target) -> None:
    """Click as a person would on a live page: centre the element, and if a part of the page
    above it moved between aiming and clicking (frames and figures keep arriving), aim again.
    Selenium refuses an intercepted click before delivering it, so a retry never clicks twice."""
    from selenium.common.exceptions import ElementClickInterceptedException

    el = css(driver, target) if isinstance(target, str) else target
    deadline = time.monotonic() + 10.0
    while True:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        try:
            el.click()
            return
        except ElementClickInterceptedException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def set_value(driver, selector: str, value: str) -> None:
    el = css(driver, selector)
    el.clear()
    el.send_keys(value)


def use_token(driver, token: str) -> None:
    set_value(driver, "#token", token)
    click(driver, "#token-save")


def open_page(driver, served: Served) -> None:
    if not driver.current_url.startswith(served.url):
        driver.get(served.url)
    wait_for("the page's first state", lambda: page_text(driver, "#inspection") == "running")


def screenshot(driver, name: str) -> None:
    DOCS.mkdir(exist_ok=True)
    driver.save_screenshot(str(DOCS / name))


# ----------------------------------------------------------------------------- 1 live view
def test_live_view_updates_while_the_recording_is_replayed(served, browser):
    """The page shows the newest annotated frame of the camera and it keeps changing while the
    recording is replayed; the JPEG and MJPEG endpoints serve real images."""
    open_page(browser, served)
    img = ".camera[data-camera='cam0'] img"

    def shown() -> int:
        ok = browser.execute_script(
            "const i = document.querySelector(arguments[0]); return i && i.complete && "
            "i.naturalWidth > 0 ? Number(i.dataset.seq) : 0;", img)  # fmt: skip
        return ok or 0

    first = wait_for("a first frame on the page", shown, served.proc)
    wait_for("the live view to move on by 5 frames", lambda: shown() >= first + 5, served.proc)
    assert "fps" in page_text(browser, ".camera[data-camera='cam0'] .fps")
    assert page_text(browser, ".camera[data-camera='cam0'] .verdict").split()[0] in ("OK", "NG")
    status, _, headers = served.request("GET", "/api/cameras/cam0/frame.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert int(headers["x-frame-seq"]) >= first
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/api/cameras/cam0/live.mjpg")
    resp = conn.getresponse()
    assert resp.getheader("content-type").startswith("multipart/x-mixed-replace")
    got = b""
    while got.count(b"\xff\xd8") < 2:  # two JPEGs (start-of-image markers) in the stream
        got += resp.read1(65536)
    conn.close()


# ----------------------------------------------------------------------------- 5 threshold
def _switches(recs: list[dict]) -> list[tuple[int, float, str]]:
    """(first frame, threshold, threshold_from) of each run of equal thresholds."""
    out: list[tuple[int, float, str]] = []
    for r in recs:
        if not out or (out[-1][1], out[-1][2]) != (r["threshold"], r["threshold_from"]):
            out.append((r["frame"], r["threshold"], r["threshold_from"]))
    return out


def _click_when_shown(browser, selector: str, text: str) -> str:
    click(browser, selector)
    return wait_for(
        f"'{text}' on the page", lambda: text in (m := page_text(browser, "#threshold-msg")) and m
    )


def test_threshold_needs_the_token_and_the_run_uses_it_from_the_next_frame(
    served, browser, untrained_run
):
    """Without the token (401) or with a wrong one (403) nothing changes; with it the sidecar
    gets a new version (the old one kept whole, a hash-chained log line) and every record
    after the answer carries the new threshold — no frame dropped, one switch."""
    open_page(browser, served)
    original = (served.model / "model.json").read_bytes()
    t0 = Sidecar.load(served.model / "model.json").threshold.value
    recs = wait_for("10 records", lambda: at_least(served.out, 10))
    t1 = float(np.median([r["score"] for r in recs]))
    assert t1 != t0
    set_value(browser, "#proposed", repr(t1))
    preview = wait_for(
        "the preview", lambda: "calibration data" in (p := page_text(browser, "#preview")) and p
    )
    z = np.load(untrained_run / "validation.npz")
    bad = z["scores"][z["labels"] != "0"]
    assert f"escape {100 * np.mean(bad <= t1):.2f} %" in preview
    set_value(browser, "#reason", "reject rate too high on this batch")
    set_value(browser, "#who", "ana")
    assert "401" in _click_when_shown(browser, "#apply", "401")
    use_token(browser, "not-the-token-at-all-1234")
    assert "403" in _click_when_shown(browser, "#apply", "403")
    assert (served.model / "model.json").read_bytes() == original  # nothing changed
    assert (
        not (served.model / "versions").exists() and not (served.model / "changes.jsonl").exists()
    )

    use_token(browser, served.token)
    _click_when_shown(browser, "#apply", "version 2")
    n0 = len(frames_of(served.out))  # the answer has come: the holder holds t1 now
    assert (served.model / "versions" / "model.v1.json").read_bytes() == original
    assert (served.model / "versions" / "model.v2.json").read_bytes() == (
        served.model / "model.json").read_bytes()  # fmt: skip
    assert Sidecar.load(served.model / "model.json").threshold.value == t1
    lines = (served.model / "changes.jsonl").read_bytes().splitlines()
    log = [json.loads(s) for s in lines]
    assert [e["action"] for e in log] == ["baseline", "threshold"]
    assert log[1]["prev_sha256"] == sha(lines[0]) and log[0]["prev_sha256"] == "0" * 64
    assert (log[1]["who"], log[1]["old"], log[1]["new"]) == ("ana", t0, t1)
    assert log[1]["why"] == "reject rate too high on this batch"

    recs = wait_for("records after the change", lambda: at_least(served.out, n0 + 4))
    assert [r["frame"] for r in recs] == list(range(len(recs)))  # none dropped
    assert all((r["threshold"], r["threshold_from"]) == (t1, "sidecar v2") for r in recs[n0 + 1 :])
    switches = _switches(recs)
    assert [(t, f) for _, t, f in switches] == [(t0, "sidecar"), (t1, "sidecar v2")]
    assert 0 < switches[1][0] <= n0 + 1
    for r in recs[n0 + 1 :]:
        assert r["verdict"] == ("NG" if r["score"] > t1 else "OK")
    wait_for("the header to say v2", lambda: "sidecar v2" in page_text(browser, "#threshold-label"))


def test_a_rollback_restores_the_previous_version(served, browser):
    """Rolling back to version 1 from the page writes version 3, byte for byte version 1, logs
    it (chained), and the records after the answer carry the old threshold again."""
    open_page(browser, served)
    v1 = (served.model / "versions" / "model.v1.json").read_bytes()
    t0 = Sidecar.load(served.model / "versions" / "model.v1.json").threshold.value
    set_value(browser, "#reason", "back to the calibrated threshold")
    wait_for(
        "a rollback button for v1", lambda: page_text(browser, "button.rollback[data-version='1']")
    )
    _click_when_shown(browser, "button.rollback[data-version='1']", "version 3")
    n1 = len(frames_of(served.out))
    assert (served.model / "model.json").read_bytes() == v1
    assert (served.model / "versions" / "model.v3.json").read_bytes() == v1
    lines = (served.model / "changes.jsonl").read_bytes().splitlines()
    last = json.loads(lines[-1])
    assert (last["version"], last["action"], last["restored"], last["new"]) == (
        3,
        "rollback",
        1,
        t0,
    )
    assert last["prev_sha256"] == sha(lines[1])
    recs = wait_for("records after the rollback", lambda: at_least(served.out, n1 + 4))
    assert all((r["threshold"], r["threshold_from"]) == (t0, "sidecar v3") for r in recs[n1 + 1 :])
    assert [f for _, _, f in _switches(recs)] == ["sidecar", "sidecar v2", "sidecar v3"]
    wait_for(
        "v3 in force in the versions table",
        lambda: "v3 (in force)" in page_text(browser, "#versions"),
    )
    browser.execute_script("document.querySelector('#threshold').scrollIntoView()")
    screenshot(browser, "page-threshold.png")
    wait_for("good parts on the drift gauge", lambda: "×" in page_text(browser, "#drift-text"))
    browser.set_window_size(1280, 1400)
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "page-live.png")
    browser.set_window_size(1280, 1000)


# ----------------------------------------------------------------------------- 2 counts
def _shift(when: datetime) -> str:
    """The default shifts 06:00, 14:00, 22:00, worked out here on their own."""
    for hour in (22, 14, 6):
        if when.hour >= hour:
            return when.replace(hour=hour, minute=0).strftime("%Y-%m-%d %H:%M")
    return (when - timedelta(days=1)).replace(hour=22, minute=0).strftime("%Y-%m-%d %H:%M")


def _row(key: str, recs: list[dict]) -> list[str]:
    c = Counter(r["verdict"] for r in recs)
    judged = c["OK"] + c["NG"] + c["NOVEL"]
    y = f"{100 * c['OK'] / judged:.2f} %" if judged else "–"
    late = sum(bool(r.get("late")) for r in recs)
    return [key, *(str(c[k]) for k in ("OK", "NG", "NOVEL", "ERROR")), str(late), y]


def _expected_tables(recs: list[dict]) -> dict:
    def grouped(key) -> list[list[str]]:
        groups: dict[str, list[dict]] = {}
        for r in recs:
            groups.setdefault(key(datetime.fromtimestamp(r["ts"])), []).append(r)
        return [_row(k, groups[k]) for k in sorted(groups, reverse=True)]

    return {
        "totals": [_row("cam0", recs), _row("all", recs)],
        "shifts": grouped(_shift),
        "hours": grouped(lambda d: d.strftime("%Y-%m-%d %H:00")),
    }


PAGE_TABLES = """
const t = {};
for (const id of ["totals", "shifts", "hours"]) {
  t[id] = [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) =>
    [tr.dataset.key, ...[...tr.querySelectorAll("td[data-k]")].map((td) => td.textContent)]);
}
return t;
"""


def test_counts_on_the_page_match_the_records(served, browser):
    """With the camera stopped, the page's totals, per-shift and per-hour rows (OK / NG / NOVEL
    / ERROR / late / yield) are exactly what the JSONL says."""
    open_page(browser, served)
    served.camera.stop()  # the line stops: the records stop growing

    def equal() -> dict | None:
        shown = browser.execute_script(PAGE_TABLES)
        return shown if shown == _expected_tables(frames_of(served.out)) else None

    got = wait_for("the page's tables to equal the records'", equal, served.proc)
    recs = frames_of(served.out)
    assert got == _expected_tables(recs) and len(recs) > 20
    assert sum(int(row[2]) for row in got["hours"]) == sum(r["verdict"] == "NG" for r in recs)


def _settled(out: Path) -> bool:
    """True when the results file holds the same records twice, half a second apart."""
    before = len(frames_of(out))
    time.sleep(0.5)
    return len(frames_of(out)) == before


# ----------------------------------------------------------------------------- 3, 4 gallery
def test_the_gallery_shows_the_ng_parts_and_a_relabel_lands_in_the_review_folder(served, browser):
    """The gallery lists the NG parts of the records (newest first; a time filter narrows it),
    a click enlarges one, and relabelling copies its crop to <review>/train/<label>/<part>.png
    (moved when relabelled again); a label that is not a safe folder name is refused."""
    from selenium.webdriver.support.ui import Select

    open_page(browser, served)
    use_token(browser, served.token)  # relabelling is a change: it needs the token
    served.camera.stop()  # the records stop growing, whichever test ran first
    wait_for("the records to stop growing", lambda: _settled(served.out))
    ng = [r for r in frames_of(served.out) if r["verdict"] == "NG" and r.get("saved_crop")]
    assert len(ng) >= 3
    click(browser, "#gallery-refresh")
    want = f"{min(200, len(ng))} shown of {len(ng)} NG parts"
    wait_for(want, lambda: page_text(browser, "#gallery-count") == want)
    frames = browser.execute_script(
        "return [...document.querySelectorAll('#gallery-grid .item')].map(e => +e.dataset.frame)"
    )
    assert frames == [r["frame"] for r in sorted(ng, key=lambda r: -r["ts"])][:200]
    thumbs = browser.execute_script(
        "return [...document.querySelectorAll('#gallery-grid .item img')].map(e => e.src)"
    )
    assert thumbs and all("_heat.png" in t for t in thumbs)  # the heatmap overlay is shown

    middle = ng[len(ng) // 2]["ts"]
    since = math.ceil(middle)
    local = datetime.fromtimestamp(since).strftime("%Y-%m-%dT%H:%M:%S")
    browser.execute_script("document.querySelector('#since').value = arguments[0]", local)
    click(browser, "#gallery-refresh")
    n = sum(r["ts"] >= since for r in ng)
    want = f"{min(200, n)} shown of {n} NG parts"
    wait_for(want, lambda: page_text(browser, "#gallery-count") == want)
    browser.execute_script("document.querySelector('#since').value = ''")
    click(browser, "#gallery-refresh")
    wait_for(
        "the whole gallery again",
        lambda: f"of {len(ng)} NG" in page_text(browser, "#gallery-count"),
    )

    item = css(browser, "#gallery-grid .item")
    frame = int(item.get_attribute("data-frame"))
    rec = next(r for r in ng if r["frame"] == frame)
    click(browser, item)
    wait_for("the enlarged part", lambda: browser.execute_script(
        "const i = document.querySelector('#viewer-img'); return !document.querySelector('#viewer')"
        ".hidden && i.complete && i.naturalWidth > 0"))  # fmt: skip
    assert Path(rec["saved_frame"]).name in css(browser, "#viewer-img").get_attribute("src")
    assert f"part {rec['part_id']}" in page_text(browser, "#viewer-info")
    browser.execute_script("document.querySelector('#gallery').scrollIntoView()")
    screenshot(browser, "page-gallery.png")

    crop = Path(rec["saved_crop"]).read_bytes()
    good = served.review / "train" / "good" / f"{rec['part_id']}.png"
    Select(css(browser, "#relabel-label")).select_by_value("good")
    click(browser, "#relabel-go")
    wait_for(
        "the relabel answer", lambda: "copied to train/good/" in page_text(browser, "#relabel-msg")
    )
    assert good.read_bytes() == crop
    Select(css(browser, "#relabel-label")).select_by_value("__new__")
    set_value(browser, "#relabel-new", "dent-2")
    click(browser, "#relabel-go")
    wait_for("the second relabel", lambda: "train/dent-2/" in page_text(browser, "#relabel-msg"))
    assert (served.review / "train" / "dent-2" / good.name).read_bytes() == crop
    assert not good.exists()  # a part lives under one label
    before = sorted(p.relative_to(served.review) for p in served.review.rglob("*"))
    set_value(browser, "#relabel-new", "../evil")
    click(browser, "#relabel-go")
    wait_for("the refusal", lambda: "400" in page_text(browser, "#relabel-msg"))
    assert sorted(p.relative_to(served.review) for p in served.review.rglob("*")) == before
    log = [json.loads(s) for s in (served.review / "relabels.jsonl").read_text().splitlines()]
    assert [(e["frame"], e["label"]) for e in log] == [(frame, "good"), (frame, "dent-2")]
    click(browser, "#viewer-close")


# ----------------------------------------------------------------------------- refusals
def _state(served: Served) -> dict:
    """Everything a refused request must leave as it was."""
    m = served.model
    return {
        "model.json": (m / "model.json").read_bytes(),
        "log": (m / "changes.jsonl").read_bytes(),
        "versions": sorted(p.name for p in (m / "versions").iterdir()),
        "review": sorted(str(p.relative_to(served.review)) for p in served.review.rglob("*")),
    }


def test_bad_inputs_are_refused_and_change_nothing(served, browser):
    """Gallery paths outside the run's folders (403), a NaN, negative or non-number threshold
    (400), a missing version (404), no token (401) and a tampered or cut change log (409) are
    each one JSON error; nothing on disk changes, and GET never changes state."""
    token = served.token
    before = _state(served)
    ng = next(r for r in frames_of(served.out) if r["verdict"] == "NG" and r.get("saved_crop"))
    outside = served.ng / "escape.png"
    outside.symlink_to(served.model / "model.json")  # a link out of the NG folder
    for path in ("/files/cam0/../../model/model.json", "/files/cam0/..%2F..%2Ftoken",
                 "/files/cam0/%2Fetc%2Fpasswd", "/files/cam0/escape.png"):  # fmt: skip
        status, body, _ = served.request("GET", path)
        assert status == 403 and "outside the run's folders" in body["error"], (path, body)
    assert served.request("GET", f"/files/cam0/{Path(ng['saved_crop']).name}")[0] == 200
    assert served.request("GET", "/files/nope/x.png")[0] == 404

    cases = [
        (b'{"threshold": NaN, "reason": "r"}', 400, "must be finite"),
        (b'{"threshold": -0.5, "reason": "r"}', 400, "must be ≥ 0"),
        (b'{"threshold": "0.3", "reason": "r"}', 400, "must be a number"),
        (b'{"threshold": true, "reason": "r"}', 400, "must be a number"),
        (b'{"threshold": 0.3}', 400, "reason is required"),
        (b"not json", 400, "JSON object"),
    ]
    for raw, code, text in cases:
        status, body, _ = served.request("POST", "/api/threshold", raw=raw, token=token)
        assert status == code and text in body["error"], (raw, body)
    status, body, _ = served.request("POST", "/api/rollback", {"version": 99, "reason": "r"}, token)
    assert status == 404 and "version 99 does not exist" in body["error"]
    for path in ("/api/threshold", "/api/rollback", "/api/relabel"):
        status, body, headers = served.request("POST", path, {"threshold": 0.3, "reason": "r"})
        assert status == 401 and headers.get("www-authenticate") == "Bearer"
    assert served.request("GET", "/api/threshold?threshold=0.3&reason=r", token=token)[0] == 405
    assert served.request("GET", "/api/state", headers={"Host": "evil.example"})[0] == 400
    assert served.request("GET", "/api/threshold/preview?threshold=nan")[0] == 400
    assert _state(served) == before

    log = served.model / "changes.jsonl"
    good_log = log.read_bytes()
    lines = good_log.splitlines(keepends=True)
    lines[1] = lines[1].replace(b"reject rate too high", b"reject rate was fine")
    log.write_bytes(b"".join(lines))
    tampered = _state(served)
    status, body, _ = served.request(
        "POST", "/api/threshold", {"threshold": 0.3, "reason": "r"}, token
    )
    assert status == 409 and "hash chain is broken" in body["error"]
    status, body, _ = served.request("POST", "/api/rollback", {"version": 1, "reason": "r"}, token)
    assert status == 409 and "line 3" in body["error"]
    assert served.request("GET", "/api/versions")[1]["ok"] is False
    open_page(browser, served)
    wait_for("the page's alert", lambda: "change log refused" in page_text(browser, "#log-alert"))
    assert _state(served) == tampered
    log.write_bytes(b"".join(lines[:-1]).replace(b"reject rate was fine", b"reject rate too high"))
    status, body, _ = served.request(
        "POST", "/api/threshold", {"threshold": 0.3, "reason": "r"}, token
    )
    assert status == 409 and "model.v3.json has no line in the log" in body["error"]
    log.write_bytes(good_log)
    outside.unlink()
    assert _state(served) == before
    assert served.request("GET", "/api/versions")[1]["ok"] is True


def test_sigterm_stops_the_station_and_its_page_cleanly(served):
    """SIGTERM: the frame in hand is finished, the summary printed, exit 0, records whole."""
    assert served.finish() == 0, "".join(served.err_lines)
    stdout = "".join(served.out_lines)
    assert "stopped by SIGTERM" in stdout and "cam0: stream" in stdout
    recs = frames_of(served.out)
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert served.out.read_text().endswith("\n")


# ----------------------------------------------------------------------------- the rest
def test_versions_log_a_hand_edit_first_and_refuse_another_models_version(
    untrained_model_dir, tmp_path
):
    """A model.json changed outside the page is logged as "external" before the next change;
    a version of another model.onnx is not restored; a bad value is refused before any write."""
    model = tmp_path / "model"
    shutil.copytree(untrained_model_dir, model)
    v = ModelVersions(model)
    with pytest.raises(BadInput, match="must be finite"):
        v.set_threshold(float("nan"), "r", "me")
    assert not (model / "versions").exists() and v.entries() == []
    v.set_threshold(0.5, "first", "me")
    hand = Sidecar.load(model / "model.json")
    hand.threshold.value = 0.7
    hand.save(model / "model.json")  # the README allows editing it by hand
    v.set_threshold(0.6, "second", "me")
    assert [(e["action"], e["new"]) for e in v.entries()] == [
        ("baseline", Sidecar.load(model / "versions" / "model.v1.json").threshold.value),
        ("threshold", 0.5), ("external", 0.7), ("threshold", 0.6)]  # fmt: skip
    other = Sidecar.load(model / "versions" / "model.v2.json")
    other.model_sha256 = "0" * 64
    other.save(model / "versions" / "model.v2.json")
    with pytest.raises(LogTampered, match="not the file the log recorded"):
        v.rollback(2, "r", "me")
    assert v.history()["current"] == 4


def test_bad_starts_are_one_line_and_exit_2(untrained_model_dir, line, tmp_path, capsys):
    """Refused before anything runs or is written: a token file others can read, --csv, no
    --out, a port in use, a source that does not exist; without the 'page' extra, serve and
    bench --with-page are one line naming it."""
    out = tmp_path / "r.jsonl"
    base = ["serve", "--model", str(untrained_model_dir), "--port", "0"]
    src = ["--source", str(line / "recording")]
    loose = tmp_path / "loose-token"
    loose.write_text("x" * 40 + "\n")
    loose.chmod(0o644)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        token = ["--token-file", str(tmp_path / "t")]
        cases = {
            "mode 0644 lets others read it": [*base, *src, "--out", str(out), "--token-file",
                                              str(loose)],
            "drop --csv": [*base, *src, "--out", str(out), "--csv", *token],
            "--out needed": [*base, *src, *token],
            "cannot listen": [*base[:-1], port, *src, "--out", str(out), *token],
            "no-such-folder": [*base, "--source", str(tmp_path / "no-such-folder"), "--out",
                               str(out), *token],
        }  # fmt: skip
        for what, argv in cases.items():
            assert main(argv) == 2, what
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and what in err[0] and "Traceback" not in err[0], (what, err)
            assert not out.exists() or what == "no-such-folder", what
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o600  # made at first start
    child = (
        "import sys\n"
        "sys.modules.update(fastapi=None, uvicorn=None)\n"
        "from edge_runtime.cli import main\n"
        "m, src, out = sys.argv[1:]\n"
        "print([main(['serve', '--model', m, '--source', src, '--out', out]),\n"
        "       main(['bench', '--model', m, '--with-page'])])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, str(untrained_model_dir), str(line / "recording"), str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "[2, 2]", proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and all("'page' extra" in e for e in errors), errors


def test_bench_reports_latency_with_and_without_a_page_client(untrained_model_dir, tmp_path, line):
    """`bench --with-page`: p50/p99 without and with a client pulling the MJPEG stream and the
    events, same run; the client really received frames and events."""
    figures = tmp_path / "bench.json"
    argv = ["bench", "--model", str(untrained_model_dir), "--data", str(line / "recording"),
            "--parts", "200", "--batch-parts", "64", "--rss-frames", "5", "--with-page",
            "--page-seconds", "1", "--json", str(figures)]  # fmt: skip
    assert main(argv) == 0
    page = json.loads(figures.read_text())["page"]
    for side in ("with", "without"):
        assert 0 < page[side]["p50"] <= page[side]["p99"]
    assert page["jpeg_frames"] > 0 and page["events"] > 0 and page["parts"] >= 200


def test_the_page_never_imports_the_training_stack():
    """Everything `serve` and `bench --with-page` import stays on the edge side."""
    child = (
        "import sys\n"
        "import edge_runtime.page.app, edge_runtime.page.server, edge_runtime.page.cli\n"
        "import edge_runtime.page.bench_page, edge_runtime.page.state\n"
        "bad = ('tensorflow', 'keras', 'tf2onnx', 'train', 'export')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(bad)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip() == "[]", proc.stderr

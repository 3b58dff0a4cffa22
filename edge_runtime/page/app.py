"""The station page's HTTP side (FastAPI): routes, the token check, errors as JSON.

Imported only by `twinspect serve` and `bench --with-page` (the `page` extra). Reading is open
to whoever reaches the address (localhost by default); every state change is a POST that needs
the token, and no GET changes anything. Errors are one JSON object, `{"error": "…"}`, with the
status that says whose problem it is: 400 a bad value, 401 no token, 403 a wrong token or a path
outside the run's folders, 404 no such camera, item or version, 409 a change log or model
directory that must be repaired by a person first.
"""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge_runtime.errors import BadInput, BadModel, TwinspectError
from edge_runtime.page import auth
from edge_runtime.page.gallery import Refused
from edge_runtime.page.state import NotFound, PageState
from edge_runtime.page.versions import LogTampered, NoSuchVersion

STATIC = Path(str(files("edge_runtime.page") / "static"))
EVENT_INTERVAL_S = 1.0  # server-sent state, once a second
STREAM_FPS = 10.0  # MJPEG: at most this many frames a second per client
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
STATUS = (  # most specific first
    (auth.Unauthorized, 401),
    (auth.Forbidden, 403),
    (Refused, 403),
    (NotFound, 404),
    (NoSuchVersion, 404),
    (LogTampered, 409),
    (BadModel, 409),
    (BadInput, 400),
)


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(state: PageState, token: str, host: str = "127.0.0.1") -> FastAPI:
    """The app for one station; `host` is what it listens on (loopback: other Host headers
    are refused, so a web page elsewhere cannot read it through DNS rebinding)."""
    app = FastAPI(title="twinspect station page", docs_url=None, redoc_url=None)
    if host in LOOPBACK:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(TwinspectError)
    async def twinspect_error(_request: Request, e: TwinspectError) -> JSONResponse:
        status = next((code for cls, code in STATUS if isinstance(e, cls)), 400)
        return _error(status, str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return _error(400, f"{where}: {first.get('msg', 'bad value')}")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    async def body_of(request: Request) -> dict:
        """The token checked first (nothing is parsed for a stranger), then a JSON object."""
        auth.check(request.headers.get("authorization"), token)
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise BadInput("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadInput("the body must be a JSON object")
        return body

    def client(request: Request) -> str:
        return request.client.host if request.client else ""

    # ---------------------------------------------------------------- reading
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/state")
    def get_state() -> dict:
        return state.snapshot()

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        """The state as server-sent events, once a second, until the client or server goes."""

        async def stream():
            while not state.closing.is_set() and not await request.is_disconnected():
                data = json.dumps(await run_in_threadpool(state.snapshot))
                yield f"event: state\ndata: {data}\n\n"
                await asyncio.sleep(EVENT_INTERVAL_S)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @app.get("/api/cameras/{name}/frame.jpg")
    def frame(name: str) -> Response:
        state.camera(name)
        got = state.live.jpeg(name)
        if got is None:
            raise NotFound(f"camera {name} has judged no frame yet")
        seq, data = got
        headers = {"Cache-Control": "no-store", "X-Frame-Seq": str(seq)}
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/cameras/{name}/live.mjpg")
    async def mjpeg(name: str, request: Request) -> StreamingResponse:
        """multipart/x-mixed-replace: each new judged frame, at most STREAM_FPS a second."""
        state.camera(name)

        async def stream():
            last = 0
            while not state.closing.is_set() and not await request.is_disconnected():
                if state.live.seq(name) != last:
                    got = await run_in_threadpool(state.live.jpeg, name)
                    if got is not None and got[0] != last:
                        last, data = got
                        head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
                        yield head.encode() + b"\r\n\r\n" + data + b"\r\n"
                await asyncio.sleep(1.0 / STREAM_FPS)

        media = "multipart/x-mixed-replace; boundary=frame"
        return StreamingResponse(stream(), media_type=media, headers={"Cache-Control": "no-store"})

    @app.get("/api/gallery")
    def gallery(
        camera: str | None = None,
        since: float | None = Query(None, allow_inf_nan=False),
        until: float | None = Query(None, allow_inf_nan=False),
        limit: int = Query(200, ge=1, le=1000),
    ) -> dict:
        return state.gallery(camera, since, until, limit)

    @app.get("/files/{camera}/{name:path}")
    def image(camera: str, name: str) -> FileResponse:
        return FileResponse(state.image(camera, name), headers={"Cache-Control": "no-store"})

    @app.get("/api/threshold/preview")
    def threshold_preview(threshold: str, camera: str | None = None) -> dict:
        try:
            value = float(threshold)
        except ValueError:
            raise BadInput(f"threshold must be a number, got {threshold!r}") from None
        return state.preview(value, camera)

    @app.get("/api/versions")
    def versions(camera: str | None = None) -> dict:
        return state.versions(camera)

    # ---------------------------------------------------------------- changing (token)
    @app.post("/api/threshold")
    async def set_threshold(request: Request) -> dict:
        body = await body_of(request)
        return await run_in_threadpool(state.set_threshold, body, client(request))

    @app.post("/api/rollback")
    async def rollback(request: Request) -> dict:
        body = await body_of(request)
        return await run_in_threadpool(state.rollback, body, client(request))

    @app.post("/api/relabel")
    async def relabel(request: Request) -> dict:
        body = await body_of(request)
        return await run_in_threadpool(state.relabel, body, client(request))

    return app

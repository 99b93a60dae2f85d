"""The explorer's web app: FastAPI routes over :class:`stages.explore.engine.ExploreEngine`, and the page.

The page (``static/index.html``, ``app.js``, ``style.css``: plain HTML, CSS and JavaScript, no framework, no CDN,
nothing fetched from outside) is served with the API:

======================================  =====================================================================
``GET  /``                              the page (its query is the state: a permalink)
``GET  /api/catalog``                   generator, sliders by attribute, labelers' attributes, notes
``GET  /api/render?<state>``            PNG of the state's image
``GET  /api/scores?<state>``            ``{"scores": {attribute: value}}`` of that image
``GET  /api/compare?<state>``           PNG: the start, then each set's edit of ``cmp`` by ``calpha``; the
                                        ``X-Compare-Tiles`` header names the tiles
``GET  /api/compare/scores?<state>``    the tiles' scores
``POST /api/photos``                    the photo's bytes as the body → an inversion job
``GET  /api/jobs/<id>``                 its progress; ``POST /api/jobs/<id>/cancel`` cancels it
``GET  /api/photos/<id>/aligned.png``   the aligned crop a photo was inverted from
``GET  /api/export/...``                ``image.png``, ``strip.png``, ``traversal.gif|webp``, ``latent.npy``
======================================  =====================================================================

**Safety.** It binds 127.0.0.1 unless told otherwise, and then answers only requests whose ``Host`` is a loopback
name (a web page elsewhere cannot reach it through DNS rebinding) and refuses cross-origin POSTs. Uploads are read
up to the byte limit and no further, then checked before decoding (:func:`stages.explore.photos.check_upload`).
Every error is JSON ``{"error": "one line"}``: 400 for a bad request (naming the key and what was expected), 404,
405, 413, 415, and 500 for a bug (its traceback goes to the server's log, never to the page). Nothing from a
request names a file: sliders, sets and photos are looked up by id in the opened run, photo ids are 32 hex digits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from latentatlas.errors import LatentAtlasError
from latentatlas.locations import StorePath
from latentatlas.params import Params
from stages.explore.engine import ExploreEngine, pin_this_thread
from stages.explore.exports import latent_npy, png_bytes, strip_png, traversal, traversal_formats
from stages.explore.photos import UploadError
from stages.explore.state import ALPHA_LIMIT, PSI_RANGE, ExploreInputError, ExploreState, parse_query

logger = logging.getLogger("latentatlas.explore")

STATIC = resources.files("pipeline.explore") / "static"
#: ``latentatlas explore``'s port when none is given (a free one is taken when it is busy).
DEFAULT_PORT = 8765
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """``Host`` header → its name (``127.0.0.1:8765`` → ``127.0.0.1``, ``[::1]:80`` → ``::1``)."""
    return urlsplit(f"//{header}").hostname or ""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "export"


def _download(payload: bytes, media_type: str, filename: str) -> Response:
    return Response(
        payload,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **NO_STORE},
    )


def _int(request: Request, key: str, default: int) -> int:
    text = request.query_params.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ExploreInputError(f"{key} {text!r}: expected an integer") from None


def _float(request: Request, key: str, default: float) -> float:
    text = request.query_params.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ExploreInputError(f"{key} {text!r}: expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ExploreInputError(f"{key} {text!r}: expected a finite number")
    return value


class Guard:
    """ASGI middleware: answer only loopback ``Host`` names when bound to loopback, refuse cross-origin POSTs, and
    add :data:`SECURITY_HEADERS` to every response (plain ASGI, so a request costs no extra task)."""

    def __init__(self, app: Any, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(
                        (name.lower().encode(), value.encode())
                        for name, value in SECURITY_HEADERS.items()
                        if name.lower().encode() not in present
                    ),
                ]
            await send(message)

        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        host_header = headers.get("host", "")
        host, origin = _host_name(host_header), headers.get("origin")
        refusal = None
        if self.loopback_only and not is_loopback(host):
            refusal = (
                f"this explorer answers only on its loopback address (Host {host!r} refused); start it with "
                f"--host to serve other names"
            )
        elif scope["method"] not in ("GET", "HEAD") and origin is not None and urlsplit(origin).netloc != host_header:
            refusal = f"cross-origin {scope['method']} from {origin!r} refused"
        if refusal is not None:
            await _error(403, refusal)(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)


def create_app(engine: ExploreEngine, bind_host: str = "127.0.0.1") -> FastAPI:
    """The app over ``engine``; ``bind_host`` decides which ``Host`` headers are answered (loopback binds: only
    loopback names; any other bind: any).

    The image of a state is rendered on one thread and the labelers score on another (on two cores the next image
    and the last one's scores are computed at once); other requests (compare, exports, photos) run on the server's
    worker threads. (A lower scheduling priority for the scoring thread made images slower in a trial: a preempted
    thread can be holding the GIL.)"""
    render_pool = ThreadPoolExecutor(1, thread_name_prefix="explore-render", initializer=pin_this_thread)
    score_pool = ThreadPoolExecutor(1, thread_name_prefix="explore-score", initializer=pin_this_thread)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        render_pool.shutdown(wait=False, cancel_futures=True)
        score_pool.shutdown(wait=False, cancel_futures=True)

    async def on(pool: ThreadPoolExecutor, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    app = FastAPI(title="latentatlas explore", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    catalog = {
        **engine.describe(),
        "formats": traversal_formats(),
        "alpha_limit": ALPHA_LIMIT,
        "psi_range": list(PSI_RANGE),
    }

    app.add_middleware(Guard, loopback_only=is_loopback(bind_host))

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, error: UploadError) -> JSONResponse:
        return _error(error.status, str(error))

    @app.exception_handler(LatentAtlasError)
    async def user_error(request: Request, error: LatentAtlasError) -> JSONResponse:
        return _error(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())) or "request"
        return _error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = {
            404: f"no such page or API: {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        return _error(error.status_code, message)

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        logger.error("explore: %s %s failed", request.method, request.url.path, exc_info=error)
        return _error(500, f"internal error ({type(error).__name__}); the server's log has the details")

    def state_of(request: Request, *extra: str) -> ExploreState:
        return parse_query(request.query_params.multi_items(), extra=extra)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/catalog")
    def describe() -> JSONResponse:
        return JSONResponse({**catalog, "photo": engine.describe()["photo"]}, headers=NO_STORE)

    def render_png(state: ExploreState) -> tuple[bytes, str, float]:
        started = time.perf_counter()
        rendered = engine.render(state)
        return png_bytes(rendered.pixels), rendered.space, (time.perf_counter() - started) * 1000

    @app.get("/api/render")
    async def render(request: Request) -> Response:
        payload, space, milliseconds = await on(render_pool, render_png, state_of(request))
        return Response(
            payload,
            media_type="image/png",
            headers={"X-Latent-Space": space, "Server-Timing": f"render;dur={milliseconds:.1f}", **NO_STORE},
        )

    @app.get("/api/scores")
    async def scores(request: Request) -> JSONResponse:
        return JSONResponse({"scores": await on(score_pool, engine.scores, state_of(request))}, headers=NO_STORE)

    @app.get("/api/compare")
    def compare(request: Request) -> Response:
        sliders, rendered = engine.compare(state_of(request))
        tiles = [{"label": "start", "slider": None}] + [
            {"label": s.label, "slider": s.id, "set": s.set_name} for s in sliders
        ]
        strip = np.concatenate([item.pixels for item in rendered], axis=1)
        return Response(
            png_bytes(strip), media_type="image/png", headers={"X-Compare-Tiles": json.dumps(tiles), **NO_STORE}
        )

    @app.get("/api/compare/scores")
    def compare_scores(request: Request) -> JSONResponse:
        sliders, rendered = engine.compare(state_of(request))
        values = engine.score_pixels(np.stack([item.pixels for item in rendered]))
        ids = [None] + [slider.id for slider in sliders]
        return JSONResponse(
            {
                "tiles": [
                    {"slider": slider_id, "scores": dict(zip(engine.attributes, map(float, row)))}
                    for slider_id, row in zip(ids, values)
                ]
            },
            headers=NO_STORE,
        )

    @app.post("/api/photos")
    async def upload(request: Request) -> JSONResponse:
        limit = engine.photos.limits.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise UploadError(f"the photo is {int(declared) / 2**20:.1f} MiB; at most {limit / 2**20:.0f} MiB", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise UploadError(f"the photo is over {limit / 2**20:.0f} MiB; at most {limit / 2**20:.0f} MiB", 413)
        job = await run_in_threadpool(engine.photos.submit, bytes(body))
        return JSONResponse({"job": job.to_json()}, status_code=202, headers=NO_STORE)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> JSONResponse:
        return JSONResponse({"job": engine.photos.job(job_id).to_json()}, headers=NO_STORE)

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> JSONResponse:
        return JSONResponse({"job": engine.photos.cancel(job_id).to_json()}, headers=NO_STORE)

    @app.get("/api/photos/{photo_id}/aligned.png")
    def aligned(photo_id: str) -> Response:
        photo = engine.photos.load(photo_id)
        return Response(
            png_bytes(photo.aligned),
            media_type="image/png",
            headers={"X-Reconstruction": f"LPIPS {photo.lpips:.3f}, PSNR {photo.psnr:.1f} dB"},
        )

    @app.get("/api/export/image.png")
    def export_image(request: Request) -> Response:
        state = state_of(request, "scale")
        rendered = engine.render(state)
        return _download(
            png_bytes(rendered.pixels, _int(request, "scale", 1)),
            "image/png",
            f"latentatlas-{_safe_name(state.start.text())}.png",
        )

    @app.get("/api/export/strip.png")
    def export_strip(request: Request) -> Response:
        state = state_of(request, "slider", "steps", "span")
        slider = request.query_params.get("slider") or ""
        payload = strip_png(engine, state, slider, _int(request, "steps", 7), _float(request, "span", 3.0))
        return _download(payload, "image/png", f"latentatlas-strip-{_safe_name(slider)}.png")

    @app.get("/api/export/traversal.{image_format}")
    def export_traversal(request: Request, image_format: str) -> Response:
        state = state_of(request, "slider", "frames", "span")
        slider = request.query_params.get("slider") or ""
        payload = traversal(
            engine, state, slider, _int(request, "frames", 24), _float(request, "span", 3.0), image_format
        )
        return _download(payload, f"image/{image_format}", f"latentatlas-{_safe_name(slider)}.{image_format}")

    @app.get("/api/export/latent.npy")
    def export_latent(request: Request) -> Response:
        rendered = engine.render(state_of(request))
        space = rendered.space.replace("+", "plus")
        return _download(latent_npy(rendered), "application/octet-stream", f"latentatlas-latent-{space}.npy")

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port).

    Raises:
        ExploreInputError: the port is taken or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ExploreInputError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror}); choose "
            f"another port (--port 0 takes a free one)"
        ) from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/"


def server_for(app: FastAPI) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))


def faster_convolutions(engine: ExploreEngine, repeats: int = 7) -> str:
    """Time a one-image render with PyTorch's oneDNN convolutions on and off (interleaved, median of ``repeats``)
    and keep the faster, for this whole process; returns a line saying which.

    At batch 1 the embedded DCGAN's transposed convolutions run about 40 % faster without oneDNN on a CPU (the
    labelers' are slower, but they run beside the image, off its critical path). The flag is process-wide and
    changes floating-point rounding, so only the explorer's own server process calls this, never a library user.
    """
    if engine.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return "note: renders on the device's default convolutions"
    space, latents = engine.latent(ExploreState())
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for enabled in (True, False):
            torch.backends.mkldnn.enabled = enabled
            started = time.perf_counter()
            engine.synthesize(space, latents)
            seconds[enabled].append(time.perf_counter() - started)
    median = {enabled: float(np.median(values)) * 1000 for enabled, values in seconds.items()}
    kept = median[True] <= median[False]
    torch.backends.mkldnn.enabled = kept
    return (
        f"note: one image renders in {median[kept]:.0f} ms with oneDNN {'on' if kept else 'off'} "
        f"({median[not kept]:.0f} ms {'off' if kept else 'on'}): kept {'on' if kept else 'off'}"
    )


def open_and_serve(
    params: Params,
    data_dir: str | StorePath,
    out_root: Path,
    host: str,
    port: int | None,
    invert_steps: int,
    device: str,
    echo: Callable[..., Any] = print,
) -> None:
    """``latentatlas explore``: open the run, listen (port None: :data:`DEFAULT_PORT`, or a free one when it is
    taken), print the URL, serve until interrupted."""
    if not is_loopback(host):
        echo(
            f"warning: --host {host}: anyone who can reach this machine can use the explorer (and upload photos)",
            err=True,
        )
    if port is not None:
        sock = bind(host, port)
    else:
        try:
            sock = bind(host, DEFAULT_PORT)
        except ExploreInputError:
            sock = bind(host, 0)
            echo(f"note: port {DEFAULT_PORT} is taken; using a free one", err=True)
    try:
        echo(
            f"opening the run (generator {params.generator.name!r}, directions under {Path(out_root) / 'directions'})…",
            err=True,
        )
        engine = ExploreEngine(params, data_dir, out_root, device=device, invert_steps=invert_steps)
        import torch._dynamo  # noqa: F401  (torch.optim's first step imports it: seconds a first photo would wait)

        echo(faster_convolutions(engine), err=True)
        server = server_for(create_app(engine, host))
        echo(
            f"latentatlas explore: {len(engine.catalog.sliders)} sliders from {len(engine.catalog.sets)} direction "
            f"sets; open {url_of(sock)}  (Ctrl-C stops it)"
        )
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def running(engine: ExploreEngine, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The app served from a thread of this process (tests, benchmarks): yields its URL, stops at exit."""
    sock = bind(host, port)
    server = server_for(create_app(engine, host))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="explore-server")
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

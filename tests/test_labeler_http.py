"""The ``http`` labeler against a real labeling API on 127.0.0.1 (``LabelServer``: mean colour of each decoded image),
which injects 429s with Retry-After, 500s/503s, slow answers, malformed JSON, dropped connections and 401s, and
logs every request's image ids: scores equal the server's, retries recover, 401 stops after one request, a SIGKILLed
label run and its resume never ask twice for an answered image, ``max_requests`` stops cleanly, and the secret
never appears in messages, logs, stores, the cache or fingerprints."""

from __future__ import annotations

import base64
import email.parser
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from click.testing import CliRunner
from PIL import Image

from latentatlas.errors import LatentAtlasError
from latentatlas.params import ParamsError
from pipeline.cli import main
from stages.label import LabelStage
from stages.plugins.generators.synthesis import uint8_to_images
from stages.plugins.labelers import LabelerSuite, build_labeler
from stages.plugins.labelers.http import AuthRejected, HttpLabelerError
from stages.plugins.labelers.scoring import LabelerOutputError, score_images
from stages.runtime.chunked import run_stage
from stages.sample import SampleStage
from stages.synthesize import SynthesizeStage
from tests.conftest import REPO_ROOT, make_params
from tests.plugins import ColorStatsLabeler, FaultyLabeler

ATTRIBUTES = ["red", "green", "blue"]
SECRET = "sk-test-7f3a9c1e5b2d4680-do-not-leak"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}  # short backoffs for tests


# ---------------------------------------------------------------------------------------------- the test server


@dataclass
class RequestRecord:
    """One request the server got: its number (1-based), the image ids it carried, how it was answered."""

    number: int
    ids: list[str]
    outcome: str
    time: float


@dataclass
class ServerPlan:
    """What the server does: ``faults`` are used one per request, in order (then ``always``); requests carrying an
    id in ``failing_ids`` get 503; request ``hold_request`` is held (no answer) until ``release`` is set."""

    faults: list[str] = field(default_factory=list)
    always: str = "ok"
    failing_ids: set[str] = field(default_factory=set)
    token: str | None = None
    auth_header: str = "Authorization"
    auth_scheme: str | None = "Bearer"
    retry_after: str = "1"
    slow_seconds: float = 1.5
    hold_request: int | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


def mean_colours(image_bytes: bytes) -> dict[str, float]:
    """What the server computes: the mean of each RGB channel of the decoded image, in 0 … 255."""
    pixels = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.float64)
    return dict(zip(ATTRIBUTES, pixels.reshape(-1, 3).mean(axis=0).tolist()))


def echoed_forms(credentials: str) -> dict[str, str]:
    """The ways the test server writes back the credentials header it got (``Bearer <secret>``): JSON with ``\\/``
    escaping, every character ``\\u``-escaped, URL-encoded, base64 (standard, of the whole header line; URL-safe, of
    the value)."""
    return {
        "json": json.dumps({"error": f"bad credentials {credentials}"}).replace("/", "\\/"),
        "unicode": '{"error": "' + "".join(f"\\u{ord(char):04x}" for char in credentials) + '"}',
        "url": f"denied: /login?next=%2F&credentials={urllib.parse.quote_plus(credentials)}",
        "base64": f"bad header {base64.b64encode(f'Authorization: {credentials}'.encode()).decode()}",
        "base64url": f"token {base64.urlsafe_b64encode(credentials.encode()).decode()}",
    }


def secret_forms(secret: str) -> list[str]:
    """What must never be found where the secret may not go: the secret raw and in every form :func:`echoed_forms`
    writes it in (of each base64 form, its middle third, which encodes the secret's bytes alone)."""
    credentials = f"Bearer {secret}"
    forms = [
        secret,
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        "".join(f"\\u{ord(char):04x}" for char in secret),
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(secret, safe=""),
    ]
    for encoded in (
        base64.b64encode(f"Authorization: {credentials}".encode()).decode(),
        base64.urlsafe_b64encode(credentials.encode()).decode(),
        base64.b64encode(secret.encode()).decode(),
    ):
        forms.append(encoded[len(encoded) // 3 : 2 * len(encoded) // 3])
    return forms


def assert_no_secret(text: str | bytes, secret: str, where: str) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    for form in secret_forms(secret):
        assert form not in text, f"{where} holds the secret as {form!r}"


class LabelServer:
    """A labeling API in a thread on 127.0.0.1 speaking the ``http`` labeler's default wire format (and multipart)."""

    def __init__(self) -> None:
        self.plan = ServerPlan()
        self.log: list[RequestRecord] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                outer.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.plan.release.set()
        self.server.shutdown()
        self.server.server_close()

    # What the tests read.
    def requests(self) -> int:
        return len(self.log)

    def ids_requested(self) -> Counter[str]:
        return Counter(image_id for record in self.log for image_id in record.ids)

    def assert_never_paid_twice(self) -> None:
        """Every id was answered (HTTP 200 delivered) at most once and never requested again after that."""
        answered_at: dict[str, int] = {}
        for record in sorted(self.log, key=lambda r: r.number):
            for image_id in record.ids:
                assert image_id not in answered_at, (
                    f"image {image_id[:12]} was answered by request "
                    f"{answered_at[image_id]} and requested again by {record.number}"
                )
                if record.outcome == "ok":
                    answered_at[image_id] = record.number

    # The handler.
    def _images_of(self, request: BaseHTTPRequestHandler, body: bytes) -> list[tuple[str, bytes]]:
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
            return [
                (part.get_filename().rsplit(".", 1)[0], part.get_payload(decode=True))
                for part in message.get_payload()
                if part.get_filename()
            ]
        items = json.loads(body)["images"]
        return [(item["id"], base64.b64decode(item["png"] if "png" in item else item["jpeg"])) for item in items]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        images = self._images_of(request, body)
        plan = self.plan
        with self.lock:
            number = len(self.log) + 1
            record = RequestRecord(number, [image_id for image_id, _ in images], "pending", time.monotonic())
            self.log.append(record)
            self.bodies.append(body)
            self.headers.append(dict(request.headers.items()))
            fault = plan.faults.pop(0) if plan.faults else plan.always
        if plan.token is not None:
            expected = plan.token if plan.auth_scheme is None else f"{plan.auth_scheme} {plan.token}"
            given = request.headers.get(plan.auth_header)
            if given != expected:
                record.outcome = "401"
                self._send(request, 401, json.dumps({"error": f"invalid credentials {given!r}"}).encode())
                return
        if number == plan.hold_request:
            record.outcome = "held"
            plan.held.set()
            plan.release.wait(60)
            return  # never answered
        if any(image_id in plan.failing_ids for image_id, _ in images):
            fault = "503"
        if fault in ("429", "500", "503"):
            record.outcome = fault
            self._send(request, int(fault), b"try later", {"Retry-After": plan.retry_after} if fault == "429" else {})
            return
        if fault == "drop":
            record.outcome = "drop"
            request.close_connection = True
            return  # close without a response
        if fault == "malformed":
            record.outcome = "malformed"
            self._send(request, 200, b'{"results": [{"id": ')
            return
        if fault == "not-found":
            record.outcome = "404"
            self._send(request, 404, b"<html>no such endpoint</html>")
            return
        credentials = request.headers.get(plan.auth_header) or ""  # what a careless API echoes back
        if fault.startswith("echo-error-"):
            record.outcome = "404"
            self._send(request, 404, echoed_forms(credentials)[fault.removeprefix("echo-error-")].encode())
            return
        results = []
        for image_id, image_bytes in reversed(images):  # any order: the client matches by id
            scores = mean_colours(image_bytes)
            if fault in ("missing-field", "echo-key"):
                scores.pop("blue")
            result = {"id": image_id, "scores": scores}
            if fault == "echo-score":
                scores["red"] = credentials
            elif fault == "echo-key":
                result[credentials] = 1.0
            elif fault == "echo-headers":
                result["request_headers"] = dict(request.headers.items())
                result["echoed"] = echoed_forms(credentials)
            results.append(result)
        if fault == "slow":  # answered after the client's timeout: never counts as delivered
            record.outcome = "slow"
            time.sleep(plan.slow_seconds)
            self._send(request, 200, json.dumps({"results": results}).encode())
            return
        answer = json.dumps({"results": results})
        if fault == "echo-headers":
            answer = answer.replace("/", "\\/")  # JSON with "\/" escaping, as PHP's json_encode writes it
        delivered = self._send(request, 200, answer.encode())
        record.outcome = "ok" if delivered else "undelivered"

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str] | None = None
    ) -> bool:
        try:
            request.send_response(status)
            for name, value in {
                "Content-Type": "application/json",
                "Content-Length": str(len(payload)),
                **(headers or {}),
            }.items():
                request.send_header(name, value)
            request.end_headers()
            request.wfile.write(payload)
            request.wfile.flush()
            return True
        except OSError:
            return False


@pytest.fixture
def server() -> Iterator[LabelServer]:
    label_server = LabelServer()
    yield label_server
    label_server.close()


def random_images(n: int, side: int = 24, seed: int = 0) -> np.ndarray:
    """(n, side, side, 3) uint8 images, image 3 a copy of image 0 when n > 3."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    if n > 3:
        pixels[3] = pixels[0]
    return pixels


def expected_scores(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1, 3).astype(np.float64).mean(axis=1).astype(np.float32)


def png_id(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def http_labeler(server: LabelServer, cache_dir: Path, **kwargs: object):
    return build_labeler(
        "http", **{"url": server.url, "attributes": ATTRIBUTES, "cache_dir": str(cache_dir), **FAST, **kwargs}
    )


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, LatentAtlasError), message
    return message


# ---------------------------------------------------------------------------------------------------- the wire


def test_default_wire_format_scores_equal_the_servers_and_answers_are_cached(
    server: LabelServer, tmp_path: Path
) -> None:
    pixels = random_images(5)
    labeler = build_labeler(
        "http", url=server.url, attributes=ATTRIBUTES, cache_dir=str(tmp_path / "cache"), batch_size=2
    )  # minimal kwargs otherwise: the defaults
    scores = labeler.score(uint8_to_images(pixels))
    assert scores.dtype == torch.float32 and scores.shape == (5, 3)
    np.testing.assert_allclose(scores.numpy(), expected_scores(pixels), rtol=1e-6)
    # The wire: {"images": [{"id": sha256 of the PNG, "png": base64 PNG}]}, 2 per request, the duplicate sent once.
    assert server.requests() == 2 and set(server.ids_requested().values()) == {1}
    items = [item for body in server.bodies for item in json.loads(body)["images"]]
    assert len(items) == 4 and all(set(item) == {"id", "png"} for item in items)
    for item in items:
        png = base64.b64decode(item["png"])
        assert item["id"] == hashlib.sha256(png).hexdigest()
        decoded = np.asarray(Image.open(io.BytesIO(png)))
        assert any(np.array_equal(decoded, picture) for picture in pixels)
    assert {item["id"] for item in items} == {png_id(picture) for picture in pixels}
    assert server.headers[0]["Content-Type"] == "application/json" and "Authorization" not in server.headers[0]
    # Asked again — by this labeler, a new one (a new process), or a pickled copy (a Dask worker): nothing is sent.
    clone = pickle.loads(pickle.dumps(labeler))
    for again in (labeler, http_labeler(server, tmp_path / "cache", batch_size=2), clone):
        np.testing.assert_array_equal(again.score(uint8_to_images(pixels)).numpy(), scores.numpy())
    assert server.requests() == 2
    assert len(list((tmp_path / "cache" / "answers").glob("*/*.json"))) == 4
    # The fingerprint follows what shapes the answers and their mapping, not where the cache is or how fast.
    reference = labeler.fingerprint
    assert http_labeler(server, tmp_path / "elsewhere", concurrency=1, retries=0).fingerprint == reference
    changes = [
        {"url": server.url + "/v2"},
        {"attributes": ["red", "green"]},
        {"version": "2"},
        {"image_format": "jpeg"},
        {"scores": {"red": "scores.green"}},
        {"retry_failed": True},
        {"request_format": "multipart"},
    ]
    prints = {http_labeler(server, tmp_path / "cache", **change).fingerprint for change in changes}
    assert len(prints) == len(changes) and reference not in prints


def test_multipart_jpeg_and_a_custom_mapping(server: LabelServer, tmp_path: Path) -> None:
    pixels = random_images(3, side=32, seed=1)
    labeler = http_labeler(
        server,
        tmp_path / "cache",
        request_format="multipart",
        image_format="jpeg",
        attributes=["r", "g"],
        scores={"r": "scores.red", "g": "scores.green"},
    )
    scores = labeler.score(uint8_to_images(pixels)).numpy()
    np.testing.assert_allclose(scores, expected_scores(pixels)[:, :2], atol=4.0)  # JPEG moves the means a little
    assert server.headers[0]["Content-Type"].startswith("multipart/form-data")
    assert server.ids_requested() == Counter({png_id(picture): 1 for picture in pixels})  # ids: the PNG's sha256


def test_a_pickled_labeler_scores_in_another_process(server: LabelServer, tmp_path: Path) -> None:
    """As in a Dask worker: the config travels, the HTTP client and pool are built in the receiving process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    labeler = http_labeler(server, tmp_path / "cache")
    first, second = random_images(2, seed=11), random_images(2, seed=12)
    labeler.score(uint8_to_images(first))  # the parent's client exists now; it must not travel
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as worker:
        scores = worker.submit(labeler.score, uint8_to_images(second)).result(timeout=120)
    np.testing.assert_allclose(scores.numpy(), expected_scores(second), rtol=1e-6)
    assert server.requests() == 2 and labeler.requests_sent == 1  # the second request came from the child
    assert len(list((tmp_path / "cache" / "answers").glob("*/*.json"))) == 4  # one cache, shared


# -------------------------------------------------------------------------------------------------- retries


def test_retries_recover_from_429_500_timeouts_malformed_json_and_dropped_connections(
    server: LabelServer, tmp_path: Path
) -> None:
    server.plan.faults = ["429", "500", "slow", "malformed", "drop"]
    server.plan.slow_seconds = 1.0
    pixels = random_images(3, seed=2)
    labeler = http_labeler(server, tmp_path / "cache", concurrency=1, timeout=0.4, retries=5)
    scores = labeler.score(uint8_to_images(pixels))
    np.testing.assert_allclose(scores.numpy(), expected_scores(pixels), rtol=1e-6)
    outcomes = [record.outcome for record in server.log]
    assert outcomes == ["429", "500", "slow", "malformed", "drop", "ok"]
    assert server.log[1].time - server.log[0].time >= 0.95  # Retry-After: 1 honoured (backoff alone is ≤ 0.05 s)
    assert labeler.requests_sent == 6


def test_an_image_that_keeps_failing_gets_nan_a_recorded_reason_and_a_deliberate_retry(
    server: LabelServer, tmp_path: Path
) -> None:
    pixels = random_images(3, seed=3)
    bad_id = png_id(pixels[1])
    server.plan.failing_ids = {bad_id}
    labeler = http_labeler(server, tmp_path / "cache", batch_size=1, retries=2)
    with pytest.warns(UserWarning, match=r"1 of 3 images have no scores \(NaN\).*retry_failed: true"):
        scores = score_images(labeler, uint8_to_images(pixels), batch_size=8).copy()  # the stage's check lets NaN by
    assert np.isnan(scores[1]).all()
    np.testing.assert_allclose(scores[[0, 2]], expected_scores(pixels)[[0, 2]], rtol=1e-6)
    assert server.ids_requested()[bad_id] == 3  # 1 + 2 retries
    records = list((tmp_path / "cache" / "failed").glob("*/*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["id"] == bad_id and record["reason"] == "HTTP 503 (after 3 attempts)" and record["attempts"] == 3
    # A rerun serves the recorded failure: no request.
    with pytest.warns(UserWarning, match="1 of 3 images have no scores"):
        again = http_labeler(server, tmp_path / "cache", batch_size=1, retries=2).score(uint8_to_images(pixels))
    assert np.isnan(again[1].numpy()).all() and server.requests() == 5
    # Only that labeler's columns may hold NaN: every other labeler (alone or in a suite) is still refused.
    with pytest.raises(LabelerOutputError, match=r"labeler 'color-stats' returned non-finite scores"):
        score_images(FaultyLabeler("nan"), uint8_to_images(pixels), batch_size=8)
    renamed = http_labeler(
        server,
        tmp_path / "cache",
        batch_size=1,
        retries=2,
        attributes=["r", "g", "b"],
        scores={"r": "scores.red", "g": "scores.green", "b": "scores.blue"},
    )  # same cache entries
    suite = LabelerSuite("both", [renamed, ColorStatsLabeler()])
    with pytest.warns(UserWarning):
        both = score_images(suite, uint8_to_images(pixels), batch_size=8)
    assert np.isnan(both[1, :3]).all() and np.isfinite(both[:, 3:]).all() and server.requests() == 5
    faulty_suite = LabelerSuite("broken", [renamed, type("Faulty", (FaultyLabeler,), {"attributes": ("x",)})("nan")])
    with pytest.warns(UserWarning), pytest.raises(LabelerOutputError, match=r"non-finite scores for \['x'\]"):
        score_images(faulty_suite, uint8_to_images(pixels), batch_size=8)
    # Deliberate retry once the API is healthy: retry_failed asks for the failed image only (a new fingerprint).
    server.plan.failing_ids = set()
    before = server.requests()
    retried = http_labeler(server, tmp_path / "cache", batch_size=1, retry_failed=True)
    assert retried.fingerprint != labeler.fingerprint
    np.testing.assert_allclose(retried.score(uint8_to_images(pixels)).numpy(), expected_scores(pixels), rtol=1e-6)
    assert server.requests() == before + 1 and server.log[-1].ids == [bad_id]
    assert not list((tmp_path / "cache" / "failed").glob("*/*.json"))  # the failure record is gone


# ---------------------------------------------------------------------------------------------- auth, secrets


def test_auth_rejected_stops_at_once_and_the_secret_never_leaks(
    server: LabelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and the labeler at their most talkative
    server.plan.token = SECRET
    wrong = "sk-wrong-0123456789abcdef-also-secret"
    monkeypatch.setenv("LABEL_API_TOKEN", wrong)
    pixels = random_images(4, seed=4)
    labeler = http_labeler(
        server, tmp_path / "cache", auth_env="LABEL_API_TOKEN", batch_size=1, concurrency=1, retries=5
    )
    with pytest.raises(AuthRejected) as error:
        labeler.score(uint8_to_images(pixels))
    message = one_line(error)
    assert "rejected the credentials (HTTP 401" in message and "LABEL_API_TOKEN" in message
    assert wrong not in message and "***" in message  # the server echoed the header back: blanked out
    assert [record.outcome for record in server.log] == ["401"]  # one request: no retry, no other batch
    # With 2 requests in flight at once, the other one may land too, but nothing is sent after the first 401.
    parallel = http_labeler(server, tmp_path / "cache", auth_env="LABEL_API_TOKEN", batch_size=1, concurrency=2)
    with pytest.raises(AuthRejected):
        parallel.score(uint8_to_images(pixels))
    assert [record.outcome for record in server.log] in (["401"] * 2, ["401"] * 3)
    assert not (tmp_path / "cache" / "answers").exists() and not (tmp_path / "cache" / "failed").exists()

    server.log.clear()
    monkeypatch.setenv("LABEL_API_TOKEN", SECRET)
    scores = labeler.score(uint8_to_images(pixels))
    np.testing.assert_allclose(scores.numpy(), expected_scores(pixels), rtol=1e-6)
    assert server.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    # A named header with the bare secret (e.g. X-Api-Key).
    server.plan.auth_header, server.plan.auth_scheme = "X-Api-Key", None
    keyed = http_labeler(
        server, tmp_path / "other-cache", auth_env="LABEL_API_TOKEN", auth_header="X-Api-Key", auth_scheme=None
    )
    np.testing.assert_allclose(keyed.score(uint8_to_images(pixels)).numpy(), expected_scores(pixels), rtol=1e-6)
    # Nowhere: fingerprint, repr, pickled config, cache files, logs, messages.
    for text in (labeler.fingerprint, repr(labeler), caplog.text):
        assert SECRET not in text and wrong not in text
    for blob in [pickle.dumps(labeler), pickle.dumps(keyed)] + [
        path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()
    ]:
        assert SECRET.encode() not in blob and wrong.encode() not in blob
    monkeypatch.delenv("LABEL_API_TOKEN")
    with pytest.raises(HttpLabelerError) as unset:
        http_labeler(server, tmp_path / "cache", auth_env="LABEL_API_TOKEN")
    assert "environment variable LABEL_API_TOKEN is not set" in one_line(unset)


#: A secret with characters servers escape and encode ("/", "+", "=", "~").
ECHOED_SECRET = "sk-live/9f8e+7d6c=5b4a~x/do-not-leak-2"


def test_an_echoing_server_never_gets_the_secret_into_messages_logs_or_the_cache(
    server: LabelServer,
    tiny_images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server echoes the credentials header it got — as a score, as a result key, in error pages (JSON with
    ``\\/`` escaping, ``\\u`` escapes, URL-encoded, base64) and with every request header in its results: no form of
    the secret reaches an error message, the CLI's output, a log record or a file in the answer cache."""
    caplog.set_level(logging.DEBUG)
    server.plan.token = ECHOED_SECRET
    monkeypatch.setenv("LABEL_API_TOKEN", ECHOED_SECRET)
    batch = uint8_to_images(random_images(2, seed=6))
    messages: list[str] = []

    def fails(fault: str, expected: str) -> None:
        server.plan.always = fault
        labeler = http_labeler(server, tmp_path / "cache" / fault, auth_env="LABEL_API_TOKEN", retries=0)
        with pytest.raises(HttpLabelerError) as error:
            labeler.score(batch)
        messages.append(one_line(error))
        assert expected in messages[-1], messages[-1]

    fails("echo-score", "the answer's field 'scores.red' for attribute 'red' is 'Bearer ***', expected a number")
    fails("echo-key", "its fields: ['Bearer ***', 'id', 'scores']")
    for form in ("json", "unicode", "url", "base64", "base64url"):  # the echo is quoted, masked
        fails(f"echo-error-{form}", "answered HTTP 404 (")
        assert "***" in messages[-1], messages[-1]
    # Every request header echoed in each result (JSON with "\\/" escaping): scored, cached, masked.
    server.plan.always = "echo-headers"
    pixels = random_images(3, seed=7)
    labeler = http_labeler(server, tmp_path / "cache" / "headers", auth_env="LABEL_API_TOKEN")
    np.testing.assert_allclose(labeler.score(uint8_to_images(pixels)).numpy(), expected_scores(pixels), rtol=1e-6)
    cached = [json.loads(path.read_bytes()) for path in (tmp_path / "cache" / "headers").rglob("*.json")]
    assert len(cached) == 3 and all(
        record["result"]["request_headers"]["Authorization"] == "Bearer ***" for record in cached
    )
    assert all(
        set(record["result"]["echoed"]) == {"json", "unicode", "url", "base64", "base64url"} for record in cached
    )
    # Through the CLI, as a user (or Prefect's state of a failed task) sees the error.
    data_dir = _copy_run(tiny_images, tmp_path)
    params_path = tmp_path / "params.yaml"
    server.plan.always = "echo-score"
    params_path.write_text(
        yaml.safe_dump(
            {
                "sample": {"n_samples": 24, "chunk_size": 8, "seed": 7},
                "synthesize": {"batch_size": 64, "device": "cpu"},
                "label": {
                    **_label_section(server.url, tmp_path / "cache" / "cli", auth_env="LABEL_API_TOKEN"),
                    "device": "cpu",
                    "contact_sheet_samples": 4,
                },
            }
        )
    )
    result = CliRunner().invoke(
        main, ["label", "--params", str(params_path), "--data-dir", str(data_dir), "--engine", "local"]
    )
    assert result.exit_code == 1 and "is 'Bearer ***', expected a number" in result.output, result.output
    messages.append(result.output)

    for text in messages:
        assert_no_secret(text, ECHOED_SECRET, f"message {text!r}")
    assert_no_secret(caplog.text, ECHOED_SECRET, "the log")
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any("cache" in path.parts for path in files)
    for path in files:
        assert_no_secret(path.read_bytes(), ECHOED_SECRET, str(path))


# ---------------------------------------------------------------------------------------------- bad input


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/score"


def test_bad_input_is_one_line(server: LabelServer, tmp_path: Path) -> None:
    batch = uint8_to_images(random_images(2, seed=5))
    cache = tmp_path / "cache"
    with pytest.raises(HttpLabelerError) as error:
        build_labeler(
            "http",
            url=_closed_port_url(),
            attributes=ATTRIBUTES,
            cache_dir=str(cache),
            retries=1,
            **{k: v for k, v in FAST.items()},
        ).score(batch)
    assert "cannot reach http://127.0.0.1:" in one_line(error) and "after 2 attempts" in str(error.value)

    server.plan.always = "malformed"
    with pytest.raises(HttpLabelerError) as error:
        http_labeler(server, cache, retries=1).score(batch)
    assert "answered with malformed JSON 2 times in a row" in one_line(error)

    server.plan.always = "not-found"
    with pytest.raises(HttpLabelerError) as error:
        http_labeler(server, cache).score(batch)
    assert "answered HTTP 404 (<html>no such endpoint</html>)" in one_line(error)
    assert server.log[-1].outcome == "404" and server.ids_requested()[png_id(random_images(2, seed=5)[0])] == 3

    server.plan.always = "missing-field"
    with pytest.raises(HttpLabelerError) as error:
        http_labeler(server, cache).score(batch)
    assert "has no field 'scores.blue' for attribute 'blue'" in one_line(error) and "to ask again" in str(error.value)
    # That answer was paid for and is cached: the attributes it has come from the cache, with no request.
    requests = server.requests()
    partial = http_labeler(server, cache, attributes=["red", "green"]).score(batch).numpy()
    np.testing.assert_allclose(partial, expected_scores(random_images(2, seed=5))[:, :2], rtol=1e-6)
    assert server.requests() == requests

    # Bad kwargs: refused by the labeler's params model, reported by the params formatter (one line each).
    for kwargs, expected in [
        ({"url": "ftp://host/x"}, r"kwargs\.url: expected an http:// or https:// URL"),
        ({"attributes": []}, r"kwargs\.attributes: expected a non-empty list"),
        ({"attributes": ["a", "a"]}, r"names \['a'\] are given more than once"),
        (
            {"request_format": "xml"},
            r"kwargs\.request_format: Input should be 'json' or "
            r"'multipart' \(got 'xml'\)",
        ),
        ({"batch_size": 0}, r"kwargs\.batch_size: Input should be greater than 0 \(got 0\)"),
        ({"retries": -1}, r"kwargs\.retries: Input should be greater than or equal to 0"),
        ({"timeout": 0}, r"^labeler 'http': kwargs\.timeout: Input should be greater than 0"),
        ({"scores": {"smile": "x"}}, r"kwargs\.scores: expected attribute"),
        ({"max_requests": 2.5}, r"kwargs\.max_requests: Input should be a valid integer"),
        ({"timeuot": 5}, r"kwargs\.timeuot: unknown key; labeler 'http' takes .*timeout"),
    ]:
        with pytest.raises(ParamsError) as error:
            http_labeler(server, cache, **kwargs)
        assert re.search(expected, one_line(error)), f"{kwargs}: {error.value}"
    # A secret pasted into auth_env (instead of its variable's name) is refused without being quoted.
    for pasted in (SECRET, 4242424242424242):
        with pytest.raises(ParamsError) as error:
            http_labeler(server, cache, auth_env=pasted)
        assert "auth_env: expected the NAME of an environment variable" in one_line(error)
        assert str(pasted) not in str(error.value)


# ----------------------------------------------------------------------------------- through the label stage


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Latents and images of a tiny run (N = 24, chunks of 8; the real face DCGAN), without labels."""
    data_dir = tmp_path_factory.mktemp("http-run")
    params = make_params(sample={"n_samples": 24, "chunk_size": 8})
    run_stage(SampleStage(params, data_dir))
    run_stage(SynthesizeStage(params, data_dir))
    return data_dir


def _copy_run(tiny_images: Path, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_images, data_dir)
    return data_dir


def _label_section(server_url: str, cache_dir: Path, **kwargs: object) -> dict:
    return {
        "labeler": "http",
        "batch_size": 8,
        "kwargs": {
            "url": server_url,
            "attributes": ATTRIBUTES,
            "cache_dir": str(cache_dir),
            "batch_size": 4,
            "concurrency": 1,
            **FAST,
            **kwargs,
        },
    }


def _stored_pixels(data_dir: Path) -> np.ndarray:
    return zarr.open_group(str(data_dir / "images.zarr"), mode="r")["images"][:]


def _labels(data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(data_dir / "labels").sort_values("sample_id").reset_index(drop=True)


def _chunk_files(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "labels").glob("part-*.parquet"))


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


def test_max_requests_stops_cleanly_and_unreachable_leaves_stores_intact(
    server: LabelServer, tiny_images: Path, tmp_path: Path
) -> None:
    data_dir = _copy_run(tiny_images, tmp_path)
    inputs_before = _tree(data_dir)
    cache = tmp_path / "cache"
    params_path = tmp_path / "params.yaml"

    def cli_label(**kwargs: object):
        section = _label_section(kwargs.pop("url", server.url), cache, **kwargs)
        params_path.write_text(
            yaml.safe_dump(
                {
                    "sample": {"n_samples": 24, "chunk_size": 8, "seed": 7},
                    "synthesize": {"batch_size": 64, "device": "cpu"},
                    "label": {**section, "device": "cpu", "contact_sheet_samples": 4},
                }
            )
        )
        return CliRunner().invoke(
            main, ["label", "--params", str(params_path), "--data-dir", str(data_dir), "--engine", "local"]
        )

    unreachable = cli_label(url=_closed_port_url(), retries=1)
    assert unreachable.exit_code == 1 and unreachable.output.count("\n") == 1, unreachable.output
    assert "Error: labeler 'http': cannot reach http://127.0.0.1:" in unreachable.output
    assert _chunk_files(data_dir) == [] and server.requests() == 0

    capped = cli_label(max_requests=5)  # 2 requests per chunk of 8 (4 images each): chunks 0, 1, then 1 of chunk 2
    # (the empty store the unreachable run left has another fingerprint — another url — and is rebuilt, saying so)
    lines = [line for line in capped.output.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert capped.exit_code == 1 and len(lines) == 1, capped.output
    assert lines[0].startswith(
        "Error: labeler 'http': max_requests = 5 reached: this run sent 5 requests and got "
        "20 images answered; 20 answers are cached in "
    )
    assert "finished chunks are kept" in lines[0]
    assert _chunk_files(data_dir) == ["part-00000.parquet", "part-00001.parquet"] and server.requests() == 5
    finished = {name: (data_dir / "labels" / name).read_bytes() for name in _chunk_files(data_dir)}

    resumed = cli_label()
    assert resumed.exit_code == 0, resumed.output
    assert server.requests() == 6  # only the 4 images never answered
    server.assert_never_paid_twice()
    assert all((data_dir / "labels" / name).read_bytes() == data for name, data in finished.items())
    np.testing.assert_allclose(
        _labels(data_dir)[ATTRIBUTES].to_numpy(), expected_scores(_stored_pixels(data_dir)), rtol=1e-6
    )
    for name, data in inputs_before.items():  # the input stores were never touched
        assert (data_dir / name).read_bytes() == data


def test_sigkill_and_resume_never_pay_twice_and_the_secret_never_leaks(
    server: LabelServer, tiny_images: Path, tmp_path: Path
) -> None:
    data_dir = _copy_run(tiny_images, tmp_path)
    cache = tmp_path / "cache"
    server.plan.token = SECRET
    server.plan.hold_request = 4  # chunk 0 = requests 1, 2; chunk 1 = 3, then 4 is held while we SIGKILL the run
    params_path = tmp_path / "params.yaml"
    params_path.write_text(
        yaml.safe_dump(
            {
                "sample": {"n_samples": 24, "chunk_size": 8, "seed": 7},
                "synthesize": {"batch_size": 64, "device": "cpu"},
                "label": {
                    **_label_section(server.url, cache, auth_env="LABEL_API_TOKEN"),
                    "device": "cpu",
                    "contact_sheet_samples": 4,
                },
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "--debug",
        "label",
        "--engine",
        "local",
        "--params",
        str(params_path),
        "--data-dir",
        str(data_dir),
    ]
    env = {**os.environ, "LABEL_API_TOKEN": SECRET, "PYTHONPATH": str(REPO_ROOT)}
    with (tmp_path / "killed.out").open("wb") as output:
        run = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            assert server.plan.held.wait(90), "the label run never reached request 4"
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
    server.plan.release.set()
    assert _chunk_files(data_dir) == ["part-00000.parquet"] and server.requests() == 4
    assert len(list((cache / "answers").glob("*/*.json"))) == 12  # requests 1–3, persisted before request 4

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert server.requests() == 7  # the held request's 4 images, then chunk 2's 8 in 2 requests
    server.assert_never_paid_twice()
    assert sorted(server.ids_requested()) == sorted({png_id(p) for p in _stored_pixels(data_dir)})
    labels = _labels(data_dir)
    np.testing.assert_allclose(labels[ATTRIBUTES].to_numpy(), expected_scores(_stored_pixels(data_dir)), rtol=1e-6)

    # A rerun with other downstream params (label.batch_size: the store is rebuilt) asks nothing.
    os.environ["LABEL_API_TOKEN"] = SECRET
    try:
        params = make_params(
            sample={"n_samples": 24, "chunk_size": 8},
            label={**_label_section(server.url, cache, auth_env="LABEL_API_TOKEN"), "batch_size": 3},
        )
        with pytest.warns(UserWarning, match="produced by other inputs .*wiping it and rebuilding"):
            run_stage(LabelStage(params, data_dir))
    finally:
        del os.environ["LABEL_API_TOKEN"]
    assert server.requests() == 7
    pd.testing.assert_frame_equal(_labels(data_dir), labels)

    # The secret: in no file (stores, cache, params, contact sheet), no output, no fingerprint.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for blob in (resumed.stdout, resumed.stderr):
        assert SECRET.encode() not in blob
    assert "LABEL_API_TOKEN" in params_path.read_text()

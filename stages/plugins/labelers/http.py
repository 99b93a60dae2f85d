r"""``http``: an HTTP labeling API as a labeler (your own model behind a small service, or a cloud vision API).

Minimal params (the default wire format below, sane defaults for everything else)::

    label:
      labeler: http
      kwargs: {url: http://127.0.0.1:8000/score, attributes: [smile, age]}

**Default wire format.** ``POST url`` with a JSON body, ``batch_size`` images per request::

    {"images": [{"id": "<sha256 hex of the PNG bytes>", "png": "<base64 of the PNG>"}, ...]}

answered (HTTP 200) by::

    {"results": [{"id": "<the same id>", "scores": {"smile": 0.93, "age": 31.5}}, ...]}

Results may come in any order; each requested id needs a result holding every attribute (a JSON number; ``null``
means "no score" and becomes NaN). 401/403 stop the run at once; 408, 429, 5xx, timeouts and dropped connections are
retried with exponential backoff and jitter, honouring ``Retry-After``; any other status stops the run.

**Other wire formats** (kwargs): ``request_format: multipart`` (one file part per image, form field ``images_key``,
file name ``<id>.png``); ``image_format: jpeg`` (``jpeg_quality``); ``images_key``, ``image_key`` (a dotted path
inside each item, e.g. ``image.content``), ``id_key`` (``null``: no ids, results matched by position),
``extra_body`` (more top-level fields sent with every request); ``results_key`` (dotted path of the result list) and
``scores`` (attribute → dotted path inside a result, default ``scores.<attribute>``; digits index lists:
``faces.0.joy``).

**Auth.** ``auth_env: LABEL_API_TOKEN`` names the environment variable holding the secret (read in each process when
it first sends a request; never stored in params, fingerprints, the answer cache, logs or messages), sent as
``<auth_header>: <auth_scheme> <secret>`` (default ``Authorization: Bearer …``; ``auth_scheme: null`` sends the bare
secret, e.g. ``auth_header: X-Api-Key``). Keep secrets out of ``url``. A server may echo the secret back (in an error
page, a result field, a result key, echoed headers): everything it sends is masked (:class:`Secret`) before it is
quoted in a message or a log, or written to the answer cache — the secret raw, JSON- or backslash-escaped
(``\/``, ``\u002f``), URL-encoded (``%2F``, once or twice) or base64-encoded (standard or URL-safe, inside a longer
encoded string too) becomes ``***``.

**Never pays twice: the answer cache.** Each image's answer is written (atomically, one small JSON file) under
``cache_dir/answers/`` as soon as its request returns, before the scores go back to the label stage — so before its
chunk counts as done. The file is named by the sha256 of the image's id (the sha256 of its PNG bytes) and of every
request-shaping kwarg (url, formats, keys, ``extra_body``, ``version``): a killed and resumed run, or a rerun with
other downstream params, asks the API only for images it never answered. The raw result is cached, so changing the
``scores`` mapping or ``attributes`` asks nothing again either. Bump ``version`` when the model behind the URL changes.

**Failures.** An image whose request still fails after ``retries`` retries gets NaN scores (the label stage allows
NaN for this labeler: ``missing_scores_allowed``) and a record ``cache_dir/failed/<key>.json`` with the reason; its
chunk completes. A rerun serves the recorded failure again (no request). To retry failed images deliberately, set
``retry_failed: true``: it changes the fingerprint, so the label stage rebuilds its store — every answered image
comes from the cache, and only the failed ones are requested again.

**Spend.** ``max_requests`` caps the HTTP requests (retries included) one process sends; when reached, the run stops
with one line saying how far it got (:class:`RequestBudgetExhausted`); finished chunks stay, and a rerun continues.
``rate_limit`` caps requests per second per process, ``concurrency`` the requests in flight per process (with Dask
workers, each worker process has its own).

**Processes.** The labeler's configuration (:class:`HttpLabelerParams`, the validated kwargs) is plain data (it
pickles to Dask workers); the HTTP client, its thread pool, the rate limiter and the request counter are built lazily
in each process on first use.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import logging
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import torch
from PIL import Image
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from latentatlas.atomic import atomic_write_bytes
from latentatlas.params import HIDE_INPUT, PathStr, PluginParams
from stages.plugins.labelers.base import LABELERS, LabelerError, check_images

LABELER_NAME = "http"
#: Bumped whenever this module changes what is sent or how answers become scores.
WIRE_VERSION = "http-labeler-v1"
#: The format tag of the answer cache's files.
CACHE_FORMAT = "latentatlas-http-answer/1"
DEFAULT_CACHE_DIR = ".cache/http-labels"
RequestFormat = Literal["json", "multipart"]
ImageFormat = Literal["png", "jpeg"]
REQUEST_FORMATS: tuple[str, ...] = get_args(RequestFormat)
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)
#: Statuses retried with backoff (besides timeouts and dropped connections).
RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
#: Characters of a server's answer quoted in an error message.
QUOTED_CHARS = 160

logger = logging.getLogger(__name__)


class HttpLabelerError(LabelerError):
    """The labeling API cannot be used as configured (unreachable, auth rejected, an answer that does not fit the
    mapping, malformed JSON, a bad kwarg); one line, never holding the secret."""


class AuthRejected(HttpLabelerError):
    """The API answered 401/403: the run stops at once (no retries)."""


class RequestBudgetExhausted(HttpLabelerError):
    """``max_requests`` requests were sent: the run stops cleanly; finished chunks and cached answers stay."""


def _fail(message: str) -> HttpLabelerError:
    return HttpLabelerError(f"labeler {LABELER_NAME!r}: {message}")


def _version_text(value: Any) -> Any:
    """``version: 2`` in YAML is the version "2" (as ``str(version)`` always made it)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value


class HttpLabelerParams(PluginParams):
    """``label.kwargs`` of ``http``, validated, and (resolved by :func:`build_http_labeler`: ``cache_dir`` absolute,
    ``image_key`` filled in) the labeler's whole configuration: plain data, picklable, never the secret (only its
    variable's name). See the module docstring for what each field does."""

    url: str = Field(description="the labeling endpoint, http:// or https://")
    attributes: tuple[str, ...] = Field(description="the attribute names, one score column each")
    scores: Annotated[dict[str, str], BeforeValidator(_empty_if_null)] = Field(
        default_factory=dict, description="attribute → dotted path of its score in a result (default scores.<name>)"
    )
    request_format: RequestFormat = "json"
    image_format: ImageFormat = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    images_key: str = Field("images", min_length=1)
    image_key: str | None = Field(
        None, description="dotted path of the image inside each item (default: the image format)"
    )
    id_key: str | None = Field("id", min_length=1, description="null: no ids, results matched by position")
    extra_body: Annotated[dict[str, Any], BeforeValidator(_empty_if_null)] = Field(
        default_factory=dict, description="more top-level fields sent with every request"
    )
    results_key: str = Field("results", min_length=1)
    version: Annotated[str, BeforeValidator(_version_text)] = Field(
        "", description="bump when the model behind the URL changes"
    )
    auth_env: str | None = Field(None, description="the NAME of the environment variable holding the secret")
    auth_header: str = Field("Authorization", min_length=1)
    auth_scheme: str | None = "Bearer"
    batch_size: int = Field(16, gt=0, description="images per request")
    concurrency: int = Field(4, gt=0, description="requests in flight per process")
    rate_limit: float | None = Field(None, gt=0, description="requests per second per process (null: no cap)")
    timeout: float = Field(30.0, gt=0, description="seconds per request")
    retries: int = Field(5, ge=0)
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    max_retry_after: float = Field(120.0, ge=0)
    max_requests: int | None = Field(None, gt=0, description="requests per process before the run stops")
    cache_dir: PathStr = DEFAULT_CACHE_DIR
    retry_failed: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return url

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_names(cls, attributes: Any) -> Any:
        if (
            not isinstance(attributes, (list, tuple))
            or not attributes
            or not all(isinstance(name, str) and name for name in attributes)
        ):
            raise ValueError("expected a non-empty list of attribute names")
        repeated = sorted({name for name in attributes if list(attributes).count(name) > 1})
        if repeated:
            raise ValueError(f"names {repeated} are given more than once")
        return tuple(attributes)

    @field_validator("scores")
    @classmethod
    def _score_paths(cls, scores: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        attributes = info.data.get("attributes")
        if attributes is not None and (set(scores) - set(attributes) or not all(scores.values())):
            raise ValueError(f"expected attribute → dotted field path for attributes in {list(attributes)}")
        return scores

    @field_validator("auth_env", mode="before")
    @classmethod
    def _variable_name(cls, auth_env: Any) -> Any:
        if auth_env is not None and (not isinstance(auth_env, str) or not auth_env.replace("_", "").isalnum()):
            raise PydanticCustomError(  # the value is never quoted: it may be the secret itself, pasted here
                "env_var_name",
                "expected the NAME of an environment variable (e.g. LABEL_API_TOKEN), got a {kind} "
                "that is not one (the secret itself never goes in params)",
                {"kind": type(auth_env).__name__, HIDE_INPUT: True},
            )
        return auth_env

    def request_shape(self) -> dict[str, Any]:
        """What decides the answer an image gets: part of every cache key and of the fingerprint."""
        return {
            "wire": WIRE_VERSION,
            "url": self.url,
            "request_format": self.request_format,
            "image_format": self.image_format,
            "jpeg_quality": self.jpeg_quality if self.image_format == "jpeg" else None,
            "images_key": self.images_key,
            "image_key": self.image_key,
            "id_key": self.id_key,
            "extra_body": dict(self.extra_body),
            "results_key": self.results_key,
            "version": self.version,
        }

    def score_path(self, attribute: str) -> str:
        return self.scores.get(attribute, f"scores.{attribute}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


#: What a masked secret reads as.
MASK = "***"


def _hex_digits(value: int, width: int) -> str:
    """A regex for ``value`` in hex, zero-padded to ``width`` digits, in either case (0x2f, 2 → ``2[fF]``)."""
    return "".join(f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{value:0{width}x}")


def _written_forms(char: str) -> str:
    r"""A regex for one character as a server may write it back: raw, behind any backslashes (JSON's ``\/``, an
    escaped quote), as a JSON or Python escape (``\u002f``, ``\x2f``, ``\U0000002f``), URL-encoded (``%2F`` or
    ``%2f``, also encoded twice: ``%252F``; ``+`` for a space), or as an HTML character reference (``&#47;``)."""
    code = ord(char)
    units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)]
    forms = [
        r"\\*" + re.escape(char),
        "".join(r"\\+u" + _hex_digits(unit, 4) for unit in units),
        r"\\+U" + _hex_digits(code, 8),
        "".join("%(?:25)*" + _hex_digits(byte, 2) for byte in char.encode()),
        f"&#0*{code};",
        "&#[xX]0*" + _hex_digits(code, 1) + ";",
    ]
    if code < 0x100:
        forms.append(r"\\+x" + _hex_digits(code, 2))
    if char == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"


def _base64_cores(secret: bytes) -> list[str]:
    """The base64 characters (standard and URL-safe alphabets) that encode only bytes of ``secret``, at each of the
    three byte offsets it may start at inside a longer encoded string (e.g. base64 of ``Bearer <secret>``)."""
    cores = []
    for offset in range(3):
        first, end = -(-8 * offset // 6), 8 * (offset + len(secret)) // 6  # characters wholly inside the secret
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(bytes(offset) + secret).decode("ascii")[first:end]
            if len(core) >= 4 and core not in cores:
                cores.append(core)
    return cores


class Secret:
    """The API secret this process sends (or none), and its mask: :meth:`mask` turns every form of it a server may
    echo back into ``***`` — raw, escaped, URL-encoded (see :func:`_written_forms`) or base64-encoded
    (:func:`_base64_cores`). Built per process from the environment, never pickled, never shown by ``repr``."""

    def __init__(self, value: str | None) -> None:
        self.value = value or None
        self._pattern = (
            None
            if self.value is None
            else re.compile(
                "|".join(
                    "".join(_written_forms(char) for char in text)
                    for text in [self.value, *_base64_cores(self.value.encode())]
                )
            )
        )

    def __repr__(self) -> str:
        return f"Secret({'***' if self.value else None})"

    def mask(self, text: str) -> str:
        """``text`` with every form of the secret replaced by ``***``."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def mask_data(self, value: Any) -> Any:
        """A JSON value (a server's answer) with :meth:`mask` applied to every string, mapping keys included, and
        a number that is the secret (a numeric key, echoed as a JSON number) replaced by ``***``."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {
                self.mask(key) if isinstance(key, str) else key: self.mask_data(item) for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.mask_data(item) for item in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and json.dumps(value) == self.value:
            return MASK
        return value


NO_SECRET = Secret(None)


def _one_line(text: str, secret: Secret) -> str:
    """``text`` on one line, at most :data:`QUOTED_CHARS` characters, with the secret (in any form) masked."""
    text = " ".join(secret.mask(text).split())
    return text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "…"


def _dig(value: Any, path: str) -> Any:
    """The value at a dotted ``path`` (digits index lists). Raises KeyError naming the first missing step."""
    for step in path.split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise KeyError(step)
    return value


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    """Set ``target[a][b]… = value`` for the dotted ``path`` ``a.b…``, making the mappings on the way."""
    *parents, last = path.split(".")
    for step in parents:
        target = target.setdefault(step, {})
    target[last] = value


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 → PNG bytes (deterministic for given pixels and Pillow's zlib)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def images_to_pixels(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] → (N, H, W, 3) uint8, the inverse of how the images store's pixels are read
    (``x / 127.5 - 1``), so a stored image's PNG — and its id — is the same in every run."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


@dataclass
class PendingImage:
    """One distinct image to ask for: its id (sha256 of its PNG), the bytes to send, and its cache key."""

    image_id: str
    payload: bytes
    cache_key: str


@dataclass
class CachedAnswer:
    """What the cache holds for one image: the raw result (``result``), or a failure (``reason``)."""

    path: Path
    result: Any = None
    reason: str | None = None


class AnswerCache:
    """One small JSON file per answered image, ``answers/<k[:2]>/<k>.json``, and per image that failed after its
    retries, ``failed/<k[:2]>/<k>.json``; ``k`` = sha256 of (request shape, image id). Written atomically
    (:func:`latentatlas.atomic.atomic_write_bytes`), so a SIGKILL never leaves half a file; safe for concurrent
    threads and processes (the same image answered twice writes the same key)."""

    def __init__(self, root: Path, request_shape: Mapping[str, Any]) -> None:
        self.root = root
        self.shape_digest = hashlib.sha256(_canonical(dict(request_shape)).encode()).hexdigest()

    def key(self, image_id: str) -> str:
        return hashlib.sha256(f"{self.shape_digest}:{image_id}".encode()).hexdigest()

    def answer_path(self, key: str) -> Path:
        return self.root / "answers" / key[:2] / f"{key}.json"

    def failure_path(self, key: str) -> Path:
        return self.root / "failed" / key[:2] / f"{key}.json"

    def lookup(self, key: str, include_failures: bool) -> CachedAnswer | None:
        """The answer (or, with ``include_failures``, the recorded failure) for ``key``; None if there is none. A
        file that cannot be read back (e.g. cut short by a power loss) counts as absent."""
        for path, is_answer in ((self.answer_path(key), True), (self.failure_path(key), False)):
            if not is_answer and not include_failures:
                continue
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("format") != CACHE_FORMAT:
                continue
            if is_answer and "result" in record:
                return CachedAnswer(path, result=record["result"])
            if not is_answer and isinstance(record.get("reason"), str):
                return CachedAnswer(path, reason=record["reason"])
        return None

    def store_answer(self, key: str, image_id: str, result: Any) -> None:
        record = {"format": CACHE_FORMAT, "id": image_id, "result": result, "answered_at": _now()}
        atomic_write_bytes(self.answer_path(key), (_canonical(record) + "\n").encode())
        self.failure_path(key).unlink(missing_ok=True)

    def store_failure(self, key: str, image_id: str, reason: str, attempts: int) -> None:
        record = {"format": CACHE_FORMAT, "id": image_id, "reason": reason, "attempts": attempts, "failed_at": _now()}
        atomic_write_bytes(self.failure_path(key), (_canonical(record) + "\n").encode())

    def count_answers(self) -> int:
        folder = self.root / "answers"
        return sum(1 for _ in folder.glob("*/*.json")) if folder.is_dir() else 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RateLimiter:
    """At most ``rate`` request starts per second across this process's threads (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if self.interval <= 0:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


class RequestCounter:
    """The requests this process sent, against ``max_requests`` (None: no cap)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.sent = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        """Count one request about to be sent; False (and nothing counted) once the cap is reached."""
        with self.lock:
            if self.limit is not None and self.sent >= self.limit:
                return False
            self.sent += 1
            return True


class ProcessRuntime:
    """What one process builds on first use and never pickles: the HTTP client, the thread pool, the rate limiter,
    the request counter, a random source for jitter, and the count of images answered in this process."""

    def __init__(self, config: HttpLabelerParams) -> None:
        import httpx

        self.pid = os.getpid()
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        self.client = httpx.Client(timeout=httpx.Timeout(config.timeout), limits=limits, follow_redirects=False)
        self.pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="http-labeler")
        self.limiter = RateLimiter(config.rate_limit)
        self.counter = RequestCounter(config.max_requests)
        self.random = random.Random(os.urandom(16))
        self.answered = 0
        self.answered_lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


@dataclass
class BatchOutcome:
    """How one request batch ended: the raw results by image id, or a failure reason for all of its images."""

    results: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    attempts: int = 0


class Transient(Exception):
    """A failure worth retrying (429, 5xx, timeout, dropped connection, malformed JSON); ``retry_after`` in s."""

    def __init__(
        self, reason: str, retry_after: float | None = None, malformed: bool = False, unreachable: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.malformed = malformed
        self.unreachable = unreachable


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


class HttpLabeler:
    """Scores images by asking an HTTP API (see the module docstring): (N, 3, H, W) in [-1, 1] → (N, A) float32,
    NaN rows for images that failed after their retries."""

    name = LABELER_NAME
    #: The label stage's finiteness check lets NaN through for this labeler's columns (failed images).
    missing_scores_allowed = True

    def __init__(self, config: HttpLabelerParams) -> None:
        self.config = config
        self.attributes = tuple(config.attributes)
        described = {
            **config.request_shape(),
            "scores": {a: config.score_path(a) for a in self.attributes},
            "attributes": list(self.attributes),
            "retry_failed": config.retry_failed,
        }
        self.fingerprint = f"{WIRE_VERSION}:{hashlib.sha256(_canonical(described).encode()).hexdigest()[:20]}"
        self.cache = AnswerCache(Path(config.cache_dir), config.request_shape())
        self.device = torch.device("cpu")
        self._runtime: ProcessRuntime | None = None
        self._runtime_lock = threading.Lock()
        self._known_secret: Secret | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Plain configuration only: the client, pool and counters are rebuilt in the receiving process."""
        return {"config": self.config, "device": str(self.device)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])
        self.device = torch.device(state["device"])

    def __repr__(self) -> str:
        return f"HttpLabeler(url={self.config.url!r}, attributes={list(self.attributes)})"

    def to(self, device: torch.device) -> HttpLabeler:
        self.device = torch.device(device)
        return self

    @property
    def requests_sent(self) -> int:
        """Requests this process has sent so far (retries included)."""
        return 0 if self._runtime is None else self._runtime.counter.sent

    def close(self) -> None:
        """Close this process's HTTP client and thread pool (rebuilt if the labeler is used again)."""
        with self._runtime_lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None

    def _process_runtime(self) -> ProcessRuntime:
        with self._runtime_lock:
            if self._runtime is None or self._runtime.pid != os.getpid():  # first use, or a forked child
                self._runtime = ProcessRuntime(self.config)
            return self._runtime

    def _secret(self, required: bool = True) -> Secret:
        """The secret in ``auth_env`` in this process (with its mask), or :data:`NO_SECRET` without ``auth_env``.

        Raises:
            HttpLabelerError: ``auth_env`` is set but not the variable (unless not ``required``: then no secret).
        """
        if self.config.auth_env is None:
            return NO_SECRET
        value = os.environ.get(self.config.auth_env)
        if not value:
            if not required:
                return NO_SECRET
            raise _fail(
                f"auth_env: the environment variable {self.config.auth_env} is not set (or empty) in this "
                f"process; export it where the label stage and its workers run"
            )
        known = self._known_secret
        if known is None or known.value != value:  # built once per value: compiling the mask takes a moment
            known = self._known_secret = Secret(value)
        return known

    # ------------------------------------------------------------------------------------------------ scoring

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] → (N, A) float32 scores on the labeler's device; NaN rows for images
        whose requests failed after their retries (reasons recorded in the cache's ``failed/`` folder).

        Raises:
            AuthRejected: 401/403.
            RequestBudgetExhausted: ``max_requests`` reached before every image was answered.
            HttpLabelerError: unreachable API, malformed JSON after the retries, an unexpected status, an answer
                that does not fit the mapping.
        """
        images = check_images(images, self.name, self.device)
        pixels = images_to_pixels(images)
        image_ids: list[str] = []
        pending: dict[str, PendingImage] = {}
        known: dict[str, CachedAnswer] = {}
        for picture in pixels:
            png = encode_png(picture)
            image_id = hashlib.sha256(png).hexdigest()
            image_ids.append(image_id)
            if image_id in known or image_id in pending:
                continue
            key = self.cache.key(image_id)
            cached = self.cache.lookup(key, include_failures=not self.config.retry_failed)
            if cached is not None:
                known[image_id] = cached
            else:
                payload = png if self.config.image_format == "png" else encode_jpeg(picture, self.config.jpeg_quality)
                pending[image_id] = PendingImage(image_id, payload, key)
        if pending:
            known.update(self._ask(list(pending.values())))
        scores = np.full((len(image_ids), len(self.attributes)), np.nan, dtype=np.float32)
        failed = 0
        secret = self._secret(required=False)  # masks what a message quotes (from an older cache, too)
        for row, image_id in enumerate(image_ids):
            answer = known[image_id]
            if answer.reason is not None:
                failed += 1
                continue
            scores[row] = self._scores_of(answer, secret)
        if failed:
            warnings.warn(
                f"labeler {LABELER_NAME!r}: {failed} of {len(image_ids)} images have no scores (NaN): their "
                f"requests failed after {self.config.retries} retries; reasons in "
                f"{self.cache.root / 'failed'}; set retry_failed: true to ask for them again",
                stacklevel=2,
            )
        return torch.from_numpy(scores).to(self.device)

    def _scores_of(self, answer: CachedAnswer, secret: Secret) -> np.ndarray:
        """One cached result → (A,) float32, following the ``scores`` mapping (``secret`` is masked in messages).

        Raises:
            HttpLabelerError: a mapped field missing, or not a number.
        """
        values = np.empty(len(self.attributes), dtype=np.float32)
        for column, attribute in enumerate(self.attributes):
            path = self.config.score_path(attribute)
            try:
                value = _dig(answer.result, path)
            except KeyError as missing:
                result = answer.result
                fields = sorted(map(str, result))[:8] if isinstance(result, Mapping) else type(result).__name__
                raise _fail(
                    f"the answer for an image has no field {path!r} for attribute {attribute!r} (no "
                    f"{_one_line(repr(missing.args[0]), secret)}; its fields: "
                    f"{_one_line(str(fields), secret)}); fix kwargs scores:/attributes:, or delete "
                    f"{answer.path} to ask again"
                ) from None
            if value is None:
                values[column] = np.nan
            elif isinstance(value, (int, float)):
                values[column] = float(value)
            else:
                raise _fail(
                    f"the answer's field {path!r} for attribute {attribute!r} is "
                    f"{_one_line(repr(value), secret)}, expected a number or null (in {answer.path})"
                )
        return values

    def _ask(self, pending: list[PendingImage]) -> dict[str, CachedAnswer]:
        """Request ``pending`` in batches on this process's pool; every answer (or failure) is cached before this
        returns. A fatal error stops this call's new requests, lets the ones in flight finish (and be cached), then
        raises."""
        runtime = self._process_runtime()
        secret = self._secret()
        stop = threading.Event()  # per call: chunks scored at once in other threads go on
        size = self.config.batch_size
        batches = [pending[start : start + size] for start in range(0, len(pending), size)]
        futures: list[Future[dict[str, CachedAnswer]]] = [
            runtime.pool.submit(self._run_batch, runtime, batch, secret, stop) for batch in batches
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        stop.set()  # a no-op when all are done; otherwise no batch starts a new request
        wait(futures)
        errors = [error for future in futures if (error := future.exception()) is not None]
        fatal = [error for error in errors if not isinstance(error, (_Stopped, _BudgetReached))]
        if fatal:
            raise fatal[0]
        if errors:  # the request budget ran out (the only other way a batch ends early)
            raise RequestBudgetExhausted(self._budget_message(runtime))
        answers: dict[str, CachedAnswer] = {}
        for future in futures:
            answers.update(future.result())
        return answers

    def _run_batch(
        self, runtime: ProcessRuntime, batch: list[PendingImage], secret: Secret, stop: threading.Event
    ) -> dict[str, CachedAnswer]:
        """Send one batch (with retries), cache what came back, and return it by image id. Any error sets ``stop``
        at once, so no other batch of the call sends a new request."""
        try:
            outcome = self._send_with_retries(runtime, batch, secret, stop)
        except _PartialAnswer as partial:  # cache the results that did come back (they are paid), then stop
            stop.set()
            for image in batch:
                if image.image_id in partial.found:
                    self.cache.store_answer(image.cache_key, image.image_id, partial.found[image.image_id])
            raise
        except BaseException:
            stop.set()
            raise
        answers: dict[str, CachedAnswer] = {}
        for image in batch:
            if outcome.failure is not None:
                self.cache.store_failure(image.cache_key, image.image_id, outcome.failure, outcome.attempts)
                answers[image.image_id] = CachedAnswer(self.cache.failure_path(image.cache_key), reason=outcome.failure)
                continue
            self.cache.store_answer(image.cache_key, image.image_id, outcome.results[image.image_id])
            answers[image.image_id] = CachedAnswer(
                self.cache.answer_path(image.cache_key), result=outcome.results[image.image_id]
            )
        if outcome.failure is None:
            with runtime.answered_lock:
                runtime.answered += len(batch)
        return answers

    def _budget_message(self, runtime: ProcessRuntime) -> str:
        return (
            f"labeler {LABELER_NAME!r}: max_requests = {self.config.max_requests} reached: this run sent "
            f"{runtime.counter.sent} requests and got {runtime.answered} images answered; "
            f"{self.cache.count_answers()} answers are cached in {self.cache.root}; finished chunks are kept — "
            f"raise or remove max_requests and rerun to go on (answered images are not requested again)"
        )

    def _send_with_retries(
        self, runtime: ProcessRuntime, batch: list[PendingImage], secret: Secret, stop: threading.Event
    ) -> BatchOutcome:
        """Send ``batch`` until it is answered, retrying transient failures with exponential backoff and jitter
        (or the server's ``Retry-After``).

        Returns:
            The results by image id, or the failure reason once the retries are spent (or ``Retry-After`` asks for
            a longer wait than ``max_retry_after``).

        Raises:
            AuthRejected, HttpLabelerError: see :meth:`score`.
            _BudgetReached: ``max_requests`` requests were sent.
            _Stopped: another batch of the call failed fatally (``stop`` is set).
        """
        config = self.config
        attempt = 0
        while True:
            if stop.is_set():
                raise _Stopped()
            runtime.limiter.wait()
            if not runtime.counter.take():
                raise _BudgetReached()
            attempt += 1
            try:
                return BatchOutcome(results=self._send_once(runtime, batch, secret), attempts=attempt)
            except Transient as problem:
                if attempt > config.retries:
                    if problem.unreachable:
                        raise _fail(f"cannot reach {config.url}: {problem.reason} (after {attempt} attempts)") from None
                    if problem.malformed:
                        raise _fail(
                            f"{config.url} answered with malformed JSON {attempt} times in a row "
                            f"({problem.reason}); is url the labeling endpoint?"
                        ) from None
                    return BatchOutcome(failure=f"{problem.reason} (after {attempt} attempts)", attempts=attempt)
                delay = self._backoff(runtime, attempt)
                if problem.retry_after is not None:
                    if problem.retry_after > config.max_retry_after:
                        return BatchOutcome(
                            failure=f"{problem.reason}; the server asked to retry after "
                            f"{problem.retry_after:.0f} s, more than max_retry_after = "
                            f"{config.max_retry_after:g} s",
                            attempts=attempt,
                        )
                    delay = max(delay, problem.retry_after)
                logger.info(
                    "labeler %r: %s for %d images; retry %d/%d in %.2f s",
                    LABELER_NAME,
                    problem.reason,
                    len(batch),
                    attempt,
                    config.retries,
                    delay,
                )
                if stop.wait(delay):
                    raise _Stopped() from None

    def _backoff(self, runtime: ProcessRuntime, attempt: int) -> float:
        """Exponential backoff with jitter: half of ``min(backoff_max, backoff_base · 2^(attempt-1))`` plus a random
        share of the other half."""
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + runtime.random.uniform(0, ceiling / 2)

    def _send_once(self, runtime: ProcessRuntime, batch: list[PendingImage], secret: Secret) -> dict[str, Any]:
        """One request for ``batch`` → the raw result of each image, by image id.

        Raises:
            Transient: retry it (429/5xx/408, timeout, dropped connection, unreachable, malformed JSON).
            AuthRejected: 401/403.
            HttpLabelerError: any other status, or an answer without a result list / a result per image.
        """
        import httpx

        config = self.config
        headers = {"Accept": "application/json"}
        if secret.value is not None:
            headers[config.auth_header] = (
                secret.value if not config.auth_scheme else f"{config.auth_scheme} {secret.value}"
            )
        # Problems are raised after their except blocks: an httpx error holds the request (and its headers), and a
        # JSON error the raw answer; neither may ride along as an exception's __context__.
        problem: Transient | None = None
        try:
            if config.request_format == "json":
                response = runtime.client.post(
                    config.url,
                    content=self._json_body(batch).encode(),
                    headers={**headers, "Content-Type": "application/json"},
                )
            else:
                files = [
                    (
                        config.images_key,
                        (f"{image.image_id}.{config.image_format}", image.payload, f"image/{config.image_format}"),
                    )
                    for image in batch
                ]
                data = {
                    key: value if isinstance(value, str) else _canonical(value)
                    for key, value in config.extra_body.items()
                }
                response = runtime.client.post(config.url, files=files, data=data, headers=headers)
        except httpx.ConnectTimeout:
            problem = Transient(f"no connection within timeout = {config.timeout:g} s", unreachable=True)
        except httpx.TimeoutException:
            problem = Transient(f"no answer within timeout = {config.timeout:g} s")
        except httpx.ConnectError as error:
            problem = Transient(f"connection failed ({_one_line(str(error), secret) or 'refused'})", unreachable=True)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
            problem = Transient(f"connection dropped ({_one_line(str(error), secret) or type(error).__name__})")
        except httpx.TransportError as error:
            problem = Transient(f"transport error {type(error).__name__} ({_one_line(str(error), secret)})")
        if problem is not None:
            raise problem
        status = response.status_code
        if status in AUTH_STATUSES:
            raise AuthRejected(
                f"labeler {LABELER_NAME!r}: {config.url} rejected the credentials (HTTP {status}: "
                f"{_one_line(response.text, secret) or 'no body'}); check the secret in "
                f"{config.auth_env or '(no auth_env given)'} and auth_header/auth_scheme; "
                f"stopped after one request"
            )
        if status in RETRIED_STATUSES:
            raise Transient(f"HTTP {status}", retry_after=parse_retry_after(response.headers.get("Retry-After")))
        if status != 200:
            hint = "; lower batch_size" if status == 413 else ""
            raise _fail(f"{config.url} answered HTTP {status} ({_one_line(response.text, secret) or 'no body'}){hint}")
        try:
            answer = json.loads(response.content)
        except ValueError as error:
            problem = Transient(f"malformed JSON: {_one_line(str(error), secret)}", malformed=True)
        if problem is not None:
            raise problem
        # Everything the server sent is masked before anything quotes or caches it (a server may echo the secret).
        return self._results_by_id(secret.mask_data(answer), batch, secret)

    def _json_body(self, batch: list[PendingImage]) -> str:
        items = []
        for image in batch:
            item: dict[str, Any] = {}
            if self.config.id_key is not None:
                _put(item, self.config.id_key, image.image_id)
            _put(item, self.config.image_key, base64.b64encode(image.payload).decode("ascii"))
            items.append(item)
        return json.dumps({**dict(self.config.extra_body), self.config.images_key: items})

    def _results_by_id(self, answer: Any, batch: list[PendingImage], secret: Secret) -> dict[str, Any]:
        """The result of each image of ``batch`` in ``answer``, matched by ``id_key`` or by position.

        Raises:
            HttpLabelerError: no result list at ``results_key``, a result missing for an image, or a count mismatch.
        """
        config = self.config
        try:
            results = _dig(answer, config.results_key)
        except KeyError:
            raise _fail(
                f"the answer of {config.url} has no result list {config.results_key!r} (answer: "
                f"{_one_line(_canonical(answer), secret)}); set results_key:"
            ) from None
        if not isinstance(results, list):
            raise _fail(f"the answer's {config.results_key!r} is a {type(results).__name__}, expected a list")
        if config.id_key is None:
            if len(results) != len(batch):
                raise _fail(
                    f"the answer holds {len(results)} results for {len(batch)} images (results are matched "
                    f"by position since id_key is null)"
                )
            return {image.image_id: result for image, result in zip(batch, results)}
        by_id: dict[str, Any] = {}
        for result in results:
            try:
                by_id[str(_dig(result, config.id_key))] = result
            except KeyError:
                continue
        missing = [image.image_id for image in batch if image.image_id not in by_id]
        if missing:
            raise _PartialAnswer(
                f"labeler {LABELER_NAME!r}: the answer of {config.url} has no result with "
                f"{config.id_key!r} = {missing[0]} ({len(missing)} of {len(batch)} images missing)",
                found={image.image_id: by_id[image.image_id] for image in batch if image.image_id in by_id},
            )
        return {image.image_id: by_id[image.image_id] for image in batch}


class _Stopped(Exception):
    """Another request of the same call failed fatally: this one was not sent."""


class _BudgetReached(Exception):
    """``max_requests`` requests were sent: this batch was not (or not again)."""


class _PartialAnswer(HttpLabelerError):
    """An answer without a result for some requested images; ``found`` holds the results it does have."""

    def __init__(self, message: str, found: dict[str, Any]) -> None:
        super().__init__(message)
        self.found = found


@LABELERS.register(LABELER_NAME, params=HttpLabelerParams)
def build_http_labeler(params: HttpLabelerParams) -> HttpLabeler:
    """The ``http`` labeler from validated ``label.kwargs`` (see the module docstring). ``cache_dir`` is resolved
    against the working directory now, so worker processes share it.

    Raises:
        HttpLabelerError: ``auth_env`` names a variable that is not set.
    """
    config = params.model_copy(
        update={
            "cache_dir": str(Path(params.cache_dir).expanduser().resolve()),
            "image_key": params.image_key or params.image_format,
            "auth_scheme": params.auth_scheme or None,
        }
    )
    labeler = HttpLabeler(config)
    labeler._secret()  # an unset auth_env fails now, before the stage writes anything
    return labeler

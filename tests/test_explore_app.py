"""The explorer's web app over the toy run, through HTTP (no browser): routes, errors, limits and safety."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.cli import main
from pipeline.explore.app import bind, create_app, is_loopback
from stages.explore.photos import UploadLimits
from stages.explore.state import ExploreInputError
from tests.test_explore_engine import _png, _png_header, engine, toy_run  # noqa: F401 (fixtures)

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def client(engine):  # noqa: F811
    engine.photos.limits = UploadLimits(max_bytes=200_000)
    with TestClient(create_app(engine), base_url=BASE, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_page_and_its_files_are_served_locally(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for source in ("/static/app.js", "/static/style.css"):
        assert client.get(source).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, no external URL of any kind
    assert "https://" not in client.get("/static/app.js").text


def test_catalog_render_and_scores(client, engine) -> None:  # noqa: F811
    catalog = client.get("/api/catalog").json()
    assert catalog["generator"] == {
        "name": "toy",
        "resolution": 8,
        "spaces": ["z", "w", "w+"],
        "has_w": True,
        "num_ws": 2,
    }
    assert [group["attribute"] for group in catalog["groups"]][:2] == ["smile", "age"]
    assert "other-gan" in catalog["skipped"] and catalog["photo"]["encoder_note"]
    image = client.get("/api/render", params={"start": "seed:5", "e": "truth/age:1.5"})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(image.content)))
    np.testing.assert_array_equal(pixels, engine.render(engine_state("start=seed:5&e=truth/age:1.5")).pixels)
    before = client.get("/api/scores", params={"start": "seed:5"}).json()["scores"]
    after = client.get("/api/scores", params={"start": "seed:5", "e": "truth/age:1.5"}).json()["scores"]
    assert after["age"] - before["age"] == pytest.approx(18.0, abs=0.3)


def engine_state(query: str):
    from urllib.parse import parse_qsl

    from stages.explore.state import parse_query

    return parse_query(parse_qsl(query))


def test_compare_names_its_tiles(client) -> None:
    response = client.get("/api/compare", params={"start": "seed:1", "mode": "compare", "cmp": "age", "calpha": "1"})
    tiles = [tile["slider"] for tile in __import__("json").loads(response.headers["x-compare-tiles"])]
    assert tiles == [None, "components/c000", "truth/age", "truth-w/age"]
    assert Image.open(io.BytesIO(response.content)).size == (8 * 4, 8)
    scores = client.get("/api/compare/scores", params={"start": "seed:1", "cmp": "age", "calpha": "1"}).json()
    age = [tile["scores"]["age"] for tile in scores["tiles"]]
    np.testing.assert_allclose(np.array(age[1:]) - age[0], 12.0, atol=0.3)


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/api/render?e=truth/age:99", 400, "α 99.0 is not a number in [-10, 10]"),
        ("/api/render?start=photo:../../etc/passwd", 400, "a photo id is 32 lowercase hex digits"),
        ("/api/render?e=truth/nope:1", 400, "no slider 'truth/nope'"),
        ("/api/render?layers=0,9", 400, "the generator has 2 W+ layers"),
        ("/api/render?bogus=1", 400, "unknown query key 'bogus'"),
        ("/api/export/strip.png?slider=truth/age&steps=99", 400, "steps 99: expected a value in [2, 25]"),
        ("/api/export/traversal.exe?slider=truth/age", 400, "format 'exe'"),
        ("/api/photos/..%2F..%2Fetc%2Fpasswd/aligned.png", 404, "no such page"),
        ("/api/photos/0123456789abcdef0123456789abcdeg/aligned.png", 400, "32 lowercase hex digits"),
        ("/api/jobs/nope", 400, "no photo job 'nope'"),
        ("/static/../params.yaml", 404, "no such page"),
        ("/nowhere", 404, "no such page or API: /nowhere"),
    ],
)
def test_a_bad_request_gets_one_clear_line(client, path: str, status: int, message: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_a_bug_is_a_500_with_no_traceback_in_the_page(client, engine, monkeypatch) -> None:  # noqa: F811
    def broken(state):
        raise RuntimeError("secret internals at /home/someone/file.py line 3")

    monkeypatch.setattr(engine, "render", broken)
    response = client.get("/api/render")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError); the server's log has the details"}


def test_only_loopback_hosts_and_same_origin_posts_are_answered(client) -> None:
    assert client.get("/api/catalog", headers={"host": "attacker.example:8765"}).status_code == 403
    assert client.get("/api/catalog", headers={"host": "localhost:8765"}).status_code == 200
    cross = client.post("/api/photos", content=b"x", headers={"origin": "http://attacker.example"})
    assert cross.status_code == 403 and "cross-origin POST" in cross.json()["error"]
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and not is_loopback("0.0.0.0")


def test_uploads_over_the_limits_are_refused(client) -> None:
    big = client.post("/api/photos", content=b"\xff" * 200_001, headers={"content-type": "image/jpeg"})
    assert big.status_code == 413 and "at most 0 MiB" in big.json()["error"]
    bomb = client.post("/api/photos", content=_png_header(30000, 30000))
    assert bomb.status_code == 413 and "decompression bomb" in bomb.json()["error"]
    script = client.post("/api/photos", content=b"<script>alert(1)</script>", headers={"content-type": "image/png"})
    assert script.status_code == 415


def test_an_upload_is_inverted_with_progress_and_starts_the_view(client, engine) -> None:  # noqa: F811
    pixels = engine.render(engine_state("start=seed:21")).pixels
    photo = _png(np.asarray(Image.fromarray(pixels).resize((40, 40), Image.NEAREST)))
    started = client.post("/api/photos", content=photo, headers={"content-type": "image/png"})
    assert started.status_code == 202
    job = started.json()["job"]
    deadline = time.time() + 60
    while job["state"] not in ("done", "failed", "cancelled") and time.time() < deadline:
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()["job"]
    assert job["state"] == "done" and job["step"] == job["steps"] == 60 and job["photo"]
    aligned = client.get(f"/api/photos/{job['photo']}/aligned.png")
    assert Image.open(io.BytesIO(aligned.content)).size == (8, 8)
    assert client.get("/api/render", params={"start": f"photo:{job['photo']}"}).status_code == 200
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel").json()["job"]
    assert cancelled["state"] == "done"  # a finished job stays finished


def test_exports_download_with_names(client) -> None:
    query = {"start": "seed:3", "e": "truth/age:1"}
    image = client.get("/api/export/image.png", params={**query, "scale": "4"})
    assert image.headers["content-disposition"] == 'attachment; filename="latentatlas-seed-3.png"'
    assert Image.open(io.BytesIO(image.content)).size == (32, 32)
    latent = client.get("/api/export/latent.npy", params=query)
    assert np.load(io.BytesIO(latent.content)).shape == (1, 24)
    assert "latent-w.npy" in latent.headers["content-disposition"]
    gif = client.get("/api/export/traversal.gif", params={**query, "slider": "truth/age", "frames": "8"})
    assert Image.open(io.BytesIO(gif.content)).n_frames == 8
    assert "latentatlas-truth-age.gif" in gif.headers["content-disposition"]


def test_the_cli_command_names_what_is_missing(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text("generator: {name: dcgan-digiface}\n")
    result = CliRunner().invoke(
        main,
        [
            "explore",
            "--params",
            str(tmp_path / "params.yaml"),
            "--data-dir",
            str(tmp_path / "data"),
            "--out-root",
            str(tmp_path),
            "--port",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert "no directions set that can edit generator 'dcgan-digiface'; finish a run first" in result.output


def test_a_taken_port_is_one_line() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ExploreInputError, match=r"cannot listen there \(.*\); choose another port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_the_server_keeps_the_faster_convolutions(engine) -> None:  # noqa: F811
    import torch

    from pipeline.explore.app import faster_convolutions

    before = torch.backends.mkldnn.enabled
    try:
        note = faster_convolutions(engine, repeats=2)
        kept = "on" if torch.backends.mkldnn.enabled else "off"
        assert note.startswith("note: one image renders in ") and note.endswith(f"kept {kept}")
    finally:
        torch.backends.mkldnn.enabled = before  # process-wide: leave it as the other tests expect

"""How the page and its assets are served: media types, cache headers, 304s, no internet."""

from __future__ import annotations

import re
import warnings

import pytest
from fastapi import FastAPI

from linetwin.api.webpage import IMMUTABLE, NO_CACHE, WEB_DIR, load_assets, mount_web

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` under its test client; plain httpx works the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    mount_web(app)
    return TestClient(app)


def test_page_is_served_uncached_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == NO_CACHE
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    again = client.get("/", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.head("/").status_code == 200


def test_assets_are_versioned_and_typed(client: TestClient) -> None:
    page = client.get("/").text
    refs = re.findall(r'"/web/([\w.-]+)\?v=(\w+)"', page)
    names = {name for name, _ in refs}
    assert {"app.js", "style.css", "favicon.svg"} <= names
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for name, version in refs:
        r = client.get(f"/web/{name}?v={version}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(types[name[name.rindex(".") :]])
        assert r.headers["cache-control"] == IMMUTABLE
        assert r.headers["etag"] == f'"{version}"'
        assert client.get(f"/web/{name}").headers["cache-control"] == NO_CACHE
        assert client.get(f"/web/{name}?v=old").headers["cache-control"] == NO_CACHE
        assert (
            client.get(f"/web/{name}", headers={"If-None-Match": r.headers["etag"]}).status_code
            == 304
        )


@pytest.mark.parametrize(
    "path", ["/web/nope.js", "/web/index.html", "/web/..%2Fwebpage.py", "/web/"]
)
def test_only_the_shipped_assets(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_not_in_the_api_schema(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["paths"] == {}


def test_nothing_from_the_internet() -> None:
    """The page loads only files it ships: no URL leaves the origin (SVG's namespace aside)."""
    index, assets = load_assets(WEB_DIR)
    for name, body in [("index.html", index.body), *((n, a.body) for n, a in assets.items())]:
        text = body.decode("utf-8")
        text = text.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?://|//[\w-]+\.[\w.-]+/", text), name
    for ref in re.findall(r'(?:src|href)="([^"]+)"', index.body.decode("utf-8")):
        assert ref.startswith("/"), ref

"""The engineer's web page: `mount_web(app)` serves `/` and its static assets under `/web/`.

The page is plain HTML, CSS and JavaScript shipped in `api/web/`: no build step, nothing fetched
from the internet, no library. It talks to the service only through the public `/v1` API with
the key the engineer types (kept in the browser's sessionStorage), so it can do exactly what
that key's role may do and no more.

The files are read once, when the app is made. `index.html` is served with `no-cache` (the
browser revalidates it with its ETag: a 304 on loopback); its references to `/web/NAME` carry
`?v=` and the asset's content hash, and an asset asked for with its current hash may be cached
for a year (`immutable`), so a new release is picked up on the next page load and an unchanged
one costs no request. The routes are left out of the OpenAPI schema.

`mount_docs(app)` serves the API's documentation the same way: `/docs` (Swagger UI) and
`/redoc` (ReDoc) with their scripts and styles from the `fastapi-offline` package, under the
page's security headers (`/redoc` also allows inline styles: `REDOC_CSP`), so the
documentation works on a plant network without internet and runs no script from elsewhere in
the origin that holds a key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response

WEB_DIR = Path(__file__).with_name("web")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The page runs only its own script and styles, and talks only to this origin: a key kept in
sessionStorage is only as safe as the page is from injected script."""
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    """One file served: its bytes, media type and content hash (the ETag and `?v=`)."""

    body: bytes
    content_type: str
    version: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @classmethod
    def of(cls, body: bytes, suffix: str) -> Asset:
        return cls(body, CONTENT_TYPES[suffix], hashlib.sha256(body).hexdigest()[:16])


def load_assets(folder: Path = WEB_DIR) -> tuple[Asset, dict[str, Asset]]:
    """Read `folder`: the page (`index.html`, its asset references versioned) and the other
    files by name (those with a known media type; no subfolders)."""
    assets = {
        p.name: Asset.of(p.read_bytes(), p.suffix)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in CONTENT_TYPES and p.name != "index.html"
    }
    html = (folder / "index.html").read_text(encoding="utf-8")

    def versioned(m: re.Match[str]) -> str:
        asset = assets.get(m.group(2))
        return m.group(0) if asset is None else f"{m.group(1)}/web/{m.group(2)}?v={asset.version}"

    html = re.sub(r'(["\'])/web/([\w.-]+)(?=["\'])', versioned, html)
    return Asset.of(html.encode("utf-8"), ".html"), assets


REDOC_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
"""The page's policy, but for inline styles: ReDoc (styled-components) writes its styles into
`<style>` elements at run time and cannot start without them (it reads no nonce a standalone
bundle could be given). Scripts stay limited to this origin's files, as on every page."""
REDOC_SECURITY_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": REDOC_CSP}
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
"""Files of the `fastapi-offline` package served under `/docs/assets/` (Swagger UI, ReDoc)."""
SWAGGER_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>linetwin API</title>
<link rel="icon" href="{favicon.png}">
<link rel="stylesheet" href="{swagger-ui.css}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{swagger-ui-bundle.js}"></script>
<script src="{swagger-init.js}"></script>
</body>
</html>
"""
SWAGGER_INIT = """"use strict";
window.ui = SwaggerUIBundle({
  url: "%s",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
"""
REDOC_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>linetwin API</title>
<link rel="icon" href="{favicon.png}">
</head>
<body>
<redoc spec-url="%s" disable-search></redoc>
<script src="{redoc.standalone.js}"></script>
</body>
</html>
"""


def load_docs(openapi_url: str = "/openapi.json") -> tuple[dict[str, Asset], dict[str, Asset]]:
    """The documentation pages (`docs`, `redoc`) and their assets by name: Swagger UI and
    ReDoc as the `fastapi-offline` package ships them, and Swagger UI's start script (a file,
    not inline script, which the security policy refuses)."""
    static = files("fastapi_offline") / "static"
    assets = {
        name: Asset.of(static.joinpath(name).read_bytes(), Path(name).suffix)
        for name in DOCS_ASSETS
    }
    init = (SWAGGER_INIT % openapi_url).encode("utf-8")
    assets["swagger-init.js"] = Asset.of(init, ".js")

    def html(template: str) -> Asset:
        for name, asset in assets.items():
            template = template.replace("{" + name + "}", f"/docs/assets/{name}?v={asset.version}")
        return Asset.of(template.encode("utf-8"), ".html")

    pages = {"docs": html(SWAGGER_HTML), "redoc": html(REDOC_HTML % openapi_url)}
    return pages, assets


def _send(
    request: Request, asset: Asset, cache: str, security: dict[str, str] = SECURITY_HEADERS
) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache, **security}
    tags = request.headers.get("if-none-match", "")
    if asset.etag in (t.strip().removeprefix("W/") for t in tags.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def mount_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve the API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), and
    their assets at `/docs/assets/NAME`, all from this process under the page's security
    headers (nothing from a CDN; not in the schema)."""
    pages, assets = load_docs(openapi_url)

    def page(name: str, security: dict[str, str]) -> None:
        asset = pages[name]

        @app.api_route(f"/{name}", methods=["GET", "HEAD"], include_in_schema=False)
        async def docs_page(request: Request) -> Response:
            return _send(request, asset, NO_CACHE, security)

        docs_page.__name__ = f"{name}_page"

    page("docs", SECURITY_HEADERS)
    page("redoc", REDOC_SECURITY_HEADERS)

    @app.api_route("/docs/assets/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_asset(request: Request, name: str, v: str | None = None) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise HTTPException(404, f"no documentation asset {name!r}")
        return _send(request, asset, IMMUTABLE if v == asset.version else NO_CACHE)


def mount_web(app: FastAPI, folder: Path = WEB_DIR) -> None:
    """Serve the page at `/` and the files of `folder` at `/web/NAME` (not in the schema)."""
    index, assets = load_assets(folder)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_page(request: Request) -> Response:
        return _send(request, index, NO_CACHE)

    @app.api_route("/web/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_asset(request: Request, name: str, v: str | None = None) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise HTTPException(404, f"no web asset {name!r}")
        return _send(request, asset, IMMUTABLE if v == asset.version else NO_CACHE)

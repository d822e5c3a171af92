"""The API documentation pages in a real browser: `/docs` (Swagger UI) and `/redoc` (ReDoc)
render from files the service ships, under the page's security policy (ReDoc: plus inline
styles), and nothing reaches any other origin.

ReDoc asks for one image elsewhere (Redocly's logo, hidden when it fails to load): the policy
refuses it before it leaves the browser, which this test checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PAGES = [
    ("/docs", ".swagger-ui .info .title", "swagger"),
    ("/redoc", "h1", "redoc"),
]


@pytest.mark.parametrize(("path", "selector", "name"), PAGES, ids=[p[2] for p in PAGES])
def test_docs_render_offline_under_the_policy(
    browser: Any, served: Any, artifacts: Path, path: str, selector: str, name: str
) -> None:
    page = browser.new_page()
    problems: list[str] = []
    answered: list[str] = []
    failed: list[str] = []

    def local(url: str) -> bool:
        return url.startswith((served.url, "data:", "blob:"))

    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: None if local(r.url) else answered.append(r.url))
    page.on("requestfailed", lambda r: None if local(r.url) else failed.append(r.url))
    try:
        response = page.goto(served.url + path)
        assert response is not None and response.ok
        title = page.wait_for_selector(selector, timeout=30_000)
        assert title is not None and "linetwin" in title.inner_text(), "\n".join(problems)
        page.get_by_text("/v1/setpoints/ack").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts / f"docs-{name}.png"))
    finally:
        page.close()
    assert answered == []  # nothing came from elsewhere
    refused = [p for p in problems if "Content Security Policy" in p]
    assert all("img-src" in p for p in refused), refused  # never a script or a style
    assert len(refused) == len(failed)  # each request elsewhere was one the policy refused

"""The API documentation pages in a real browser: `/docs` (Swagger UI) and `/redoc` (ReDoc)
render from files the service ships, under the page's security policy, asking nothing of any
other origin."""

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
    elsewhere: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith((served.url, "data:", "blob:")) else elsewhere.append(r.url)
        ),
    )
    try:
        response = page.goto(served.url + path)
        assert response is not None and response.ok
        title = page.wait_for_selector(selector, timeout=30_000)
        assert title is not None and "linetwin" in title.inner_text()
        page.wait_for_selector("text=/v1/setpoints", timeout=30_000)
        page.screenshot(path=str(artifacts / f"docs-{name}.png"))
    finally:
        page.close()
    assert elsewhere == []
    refused = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    assert refused == [], refused

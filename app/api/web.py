"""The web page: plain HTML, CSS and JavaScript from app/static (no build step, nothing from other hosts)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Everything the pages load comes from this origin; the CSP makes that a guarantee, not a habit.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((STATIC_DIR / name).read_text(encoding="utf-8"), headers=SECURITY_HEADERS)


@router.get("/", response_class=HTMLResponse)
def classify_page() -> HTMLResponse:
    return _page("index.html")


@router.get("/review", response_class=HTMLResponse)
def review_page() -> HTMLResponse:
    return _page("review.html")

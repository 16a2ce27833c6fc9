"""The plain web page for school staff: one HTML file, data fetched from the API with the token."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def page_html() -> str:
    # The page holds no student data; the browser fetches lists with the token the user pastes,
    # kept in sessionStorage only (gone when the tab closes).
    return (Path(__file__).parent / "templates" / "page.html").read_text(encoding="utf-8")

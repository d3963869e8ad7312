"""Turn a raw vacancy (often scraped HTML) into clean, private, bounded text.

Everything here is pure and deterministic: the same input always gives the same output,
and cleaning an already clean text changes nothing.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
URL_TOKEN = "[URL]"

_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "section",
    "article",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "footer",
    "dd",
    "dt",
    "blockquote",
}
_SKIP_TAGS = {"script", "style", "noscript", "head", "template"}

_TAG_HINT = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>|&[a-zA-Z]+;|&#\d+;")
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
# Phone numbers: an optional country code (+45, 0045, (+45)) followed by 8+ digits in
# groups separated by spaces, dots or dashes. Years ("2024") and short numbers stay.
_PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:(?:\+|00)\d{1,3}[\s.-]?|\(\+?\d{1,3}\)\s?)?"
    r"(?:\d[\s.-]?){7,13}\d"
    r"(?![\w])"
)
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(text: str) -> str:
    """Strip tags (keeping block structure as line breaks) and decode entities."""
    if not _TAG_HINT.search(text):
        return text
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return html.unescape("".join(parser.parts))


def normalise_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n", text).strip()


def scrub_personal_data(text: str) -> str:
    """Replace e-mail addresses, URLs and phone numbers with placeholders."""
    text = _EMAIL.sub(EMAIL_TOKEN, text)
    text = _URL.sub(URL_TOKEN, text)
    return _PHONE.sub(PHONE_TOKEN, text)


def truncate(text: str, max_chars: int) -> str:
    """Cut at a word boundary so that at most ``max_chars`` characters remain."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def clean_text(text: str, max_chars: int | None = None) -> str:
    """The production cleaning pipeline: HTML → unicode NFKC → scrub → whitespace → truncate."""
    text = html_to_text(text)
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = scrub_personal_data(text)
    text = normalise_whitespace(text)
    if max_chars is not None:
        text = truncate(text, max_chars)
    return text

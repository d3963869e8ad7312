"""Turn a raw vacancy (often scraped HTML) into clean, private, bounded text.

Everything here is pure and deterministic: the same input always gives the same output,
and cleaning an already clean text changes nothing.

Personal data: e-mail addresses (also written ``name(at)firma.dk``, ``name [at] firma [dot] dk`` or
``name%40firma.dk``), URLs (also without a scheme: ``linkedin.com/in/…``), phone numbers (Danish and
international formats, and local ``555-1234``), IBANs and card-like numbers are replaced by placeholders
here; person names need a model (``indexing.extract``) and are replaced by
``scrub_names`` with the spans it found. Boilerplate lines (about the company, benefits, how to apply,
legal text) are dropped by conservative, line-anchored rules.

Bounded work: the text is cut to a few times the kept length before anything else (and again after
unicode normalisation, which can multiply a character by 18), and every pattern scans in linear time
(no pattern can restart inside a run it has already failed on), so no input of any length makes
cleaning slow.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Protocol

EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
URL_TOKEN = "[URL]"
NAME_TOKEN = "[NAME]"
ACCOUNT_TOKEN = "[ACCOUNT]"
# Work is bounded before scrubbing: at most this many times the kept length (or RAW_LIMIT) is read.
WORK_FACTOR = 4
RAW_LIMIT = 100_000

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
# A local part starts only where no local-part character precedes it: a long run without "@" is tried
# once, not once per position (the quadratic scan the unanchored pattern did).
_LOCAL = r"(?<![\w.+'%-])[\w.+'-]+"
_EMAIL = re.compile(_LOCAL + r"(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.UNICODE | re.IGNORECASE)
_AT = r"(?:\s*[(\[{]\s*(?:at|snabel-a)\s*[)\]}]\s*|\s+at\s+(?=[\w.-]+(?:\s*[(\[{]\s*dot\s*[)\]}]|\s+dot\s+)))"
_DOT = r"(?:\s*[(\[{]\s*(?:dot|punktum)\s*[)\]}]\s*|\s+dot\s+|\.)"
_EMAIL_SPELLED = re.compile(_LOCAL + _AT + r"[\w-]+(?:" + _DOT + r"[\w-]+)+", re.UNICODE | re.IGNORECASE)
_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
# Without a scheme: a lower-case host under a common top-level domain, with a path ("linkedin.com/in/x")
# or standing alone ("firma.dk"); "ASP.NET" and "Node.js" stay.
_TLDS = "dk|com|org|net|io|eu|de|se|no|fi|nl|uk|info|biz|me|app|dev|jobs|online"
_BARE_URL = re.compile(r"(?<![\w@.%/-])(?:[a-z0-9][a-z0-9-]*\.)+(?:" + _TLDS + r")\b(?:/[^\s<>\"')\]]*)?")
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])")
_CARD = re.compile(r"(?<![\w+-])\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\w-])")
_LOCAL_PHONE = re.compile(r"(?<![\w+.-])\d{3}-\d{4}(?![\w-])")
# Phone numbers: an optional country code (+45, 0045, (+45), +44 (0)) followed by 8+ digits in groups
# separated by spaces, dots, dashes or slashes; or a North American "(555) 123-4567". Years ("2024"),
# short numbers and dates ("2024-03-01", "01.03.2024") stay.
_PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:"
    r"(?:(?:\+|00)\d{1,3}[\s.-]?(?:\(0\)\s?)?|\(\+?\d{1,3}\)\s?)?"
    r"(?:\(\d{1,4}\)[\s.-]?)?"
    r"(?:\d[\s./-]?){7,13}\d"
    r"|(?:\+1[\s.-]?)?\(\d{3}\)[\s.-]?\d{3}[\s.-]\d{4}"
    r")"
    r"(?![\w])"
)
_DATE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}"
    r"|(?:19|20)\d{2}\s?[-/]\s?(?:19|20)\d{2}"  # a range of years ("2024-2025", "1990 - 2000")
)
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")

# Boilerplate: a line is dropped only when it *starts* like one of these (case-insensitive), so a
# sentence that merely mentions a benefit stays. English and Danish.
_BOILERPLATE = re.compile(
    r"^(?:[-*•]\s*)?(?:"
    # how to apply, deadlines
    r"(?:how to )?apply (?:now|here|today|online|via|through|at|by)\b|click (?:here|apply)\b|"
    r"send (?:us )?your (?:application|cv)\b|application deadline\b|deadline for applications?\b|"
    r"applications? (?:must|should|will) be\b|we look forward to (?:hearing from you|receiving your application)|"
    r"ansøgningsfrist\b|send (?:os )?din ansøgning\b|søg (?:stillingen|jobbet)\b|ansøg (?:her|nu|via)\b|"
    r"vi glæder os til at (?:høre fra dig|modtage din ansøgning)|"
    r"søg via (?:linket|knappen)\b|samtaler (?:afholdes|forventes|holdes)\b|tiltrædelse\b|"
    r"ansøgning(?:en)?\s*:?\s*$|kontakt(?:person)?\s*:?\s*$|"
    # Danish employment terms and boilerplate (overenskomst, attester, the equal-opportunity line)
    r"løn[- ]? og ansættelses(?:forhold|vilkår)\b|ansættelses(?:forhold|vilkår)\b|"
    r"løn(?:nen)? (?:og ansættelse )?(?:efter|i henhold til|jf\.)\b|ansættelse(?:n)? sker (?:i henhold til|efter)\b|"
    r"stillingen er omfattet af\b|vi indhenter (?:børneattest|straffeattest|børne- og straffeattest)|"
    r"(?:der )?(?:vil )?(?:blive )?indhentet (?:børne|straffe)attest|alle interesserede uanset\b|"
    # company presentation
    r"about (?:us|the company)\b|who we are\b|om (?:os|virksomheden)\b|"
    # benefits
    r"we offer\b|what we offer\b|vi tilbyder\b|"
    # contact and further information
    r"(?:for )?(?:further|more) information\b|questions\?|if you have (?:any )?questions\b|"
    r"har du spørgsmål\b|yderligere (?:oplysninger|information)\b|vil du vide mere\b|"
    # legal text
    r"(?:we are )?an? equal opportunit|privacy policy\b|all rights reserved\b|©|cookies?\b|"
    r"we (?:encourage|welcome) (?:all|applications from all)\b|vi opfordrer alle\b"
    r")",
    re.IGNORECASE,
)


class TextSpan(Protocol):
    """A character span of a text (the person spans of ``indexing.extract`` fit)."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


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


def _phone_or_date(match: re.Match[str]) -> str:
    found = match.group(0)
    return found if _DATE.fullmatch(found) else PHONE_TOKEN


def scrub_personal_data(text: str) -> str:
    """Replace e-mail addresses, URLs, account and card numbers, and phone numbers with placeholders."""
    text = _EMAIL.sub(EMAIL_TOKEN, text)
    text = _EMAIL_SPELLED.sub(EMAIL_TOKEN, text)
    text = _URL.sub(URL_TOKEN, text)
    text = _BARE_URL.sub(URL_TOKEN, text)
    text = _IBAN.sub(ACCOUNT_TOKEN, text)
    text = _CARD.sub(ACCOUNT_TOKEN, text)
    text = _PHONE.sub(_phone_or_date, text)
    return _LOCAL_PHONE.sub(PHONE_TOKEN, text)


def scrub_names(text: str, spans: Iterable[TextSpan]) -> str:
    """Replace the person names at ``spans`` (character offsets into ``text``) with ``[NAME]``; every
    other occurrence of the same name in the text is replaced too. Spans outside the text are ignored."""
    names = {text[s.start : s.end].strip() for s in spans if 0 <= s.start < s.end <= len(text)}
    names = {n for n in names if len(n) >= 2 and n != NAME_TOKEN}
    if not names:
        return text
    # Longest first, so "Mette Lund" wins over "Mette"; word boundaries so "Bo" does not hit "Bob".
    pattern = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<!\w)(?:{pattern})(?!\w)", NAME_TOKEN, text)


def trim_boilerplate(text: str) -> str:
    """Drop lines that are typical boilerplate (how to apply, about the company, benefits, contact and
    legal lines). If every line would go, the text is kept as it is: a short ad is never emptied."""
    lines = text.split("\n")
    kept = [line for line in lines if not _BOILERPLATE.match(line.strip())]
    if not any(line.strip() for line in kept):
        return text
    return "\n".join(kept)


def truncate(text: str, max_chars: int) -> str:
    """Cut at a word boundary so that at most ``max_chars`` characters remain."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def clean_text(text: str, max_chars: int | None = None, *, scrub: bool = True, trim: bool = True) -> str:
    """The production cleaning pipeline: HTML → unicode NFKC → scrub → whitespace → boilerplate → truncate.

    ``scrub=False`` keeps e-mails, URLs and phone numbers (only for ``JOBCLASS_STORE_RAW_TEXT``);
    ``trim=False`` keeps boilerplate lines. At most ``WORK_FACTOR × max_chars`` characters (``RAW_LIMIT``
    without a limit) are read, before and again after unicode normalisation."""
    budget = RAW_LIMIT if max_chars is None else min(RAW_LIMIT, WORK_FACTOR * max_chars)
    text = html_to_text(text[: 2 * budget])  # markup is dropped, so read twice the budget of it
    text = unicodedata.normalize("NFKC", text[:budget])[:budget]
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    if scrub:
        text = scrub_personal_data(text)
    text = normalise_whitespace(text)
    if trim:
        text = trim_boilerplate(text)
    if max_chars is not None:
        text = truncate(text, max_chars)
    return text

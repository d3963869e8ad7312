"""A cheap language guess for a vacancy text: stop-word counts plus a few letters only one language uses.

Microseconds per ad and no model: enough to tell Danish from English (and from the neighbours a job
board also sees: Swedish, Norwegian, German, Polish) for drift per language and for choosing how to
read a text. Returns an ISO 639-1 code, or ``"und"`` when a text has too few words to tell.
"""

from __future__ import annotations

import re

UNDETERMINED = "und"
LANGUAGES = ("da", "en", "sv", "nb", "de", "pl")
MIN_HITS = 2


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS: dict[str, frozenset[str]] = {
    "da": _words(
        "og i at er til en et af på med for som vi du der den det de har kan ikke vil os jer dig din dine "
        "vores hos eller skal også fra være bliver efter samt søger gerne ved mellem om hvor hvis når blev "
        "meget mere arbejde opgaver erfaring stillingen ansøgning løn tiltrædelse timer uge gode søges"
    ),
    "en": _words(
        "the and of to a in is for with you we are our on as be will your an at or this that have from by "
        "role team work experience who can us job position about skills"
    ),
    "sv": _words(
        "och att är som för med på av vi du det en ett till har inte kan ska vara eller från hos vill oss "
        "dig din dina våra också efter mycket arbete tjänsten erfarenhet söker"
    ),
    "nb": _words(
        "og i er til en et av på med for som vi du det har kan ikke vil oss deg din dine våre hos eller "
        "skal også fra være etter jobb stillingen erfaring søker arbeid gjennom ikkje søkes"
    ),
    "de": _words(
        "und der die das in zu den mit von für ist wir sie ein eine auf im dem des nicht sich bei oder "
        "auch als werden unser ihre stelle erfahrung aufgaben"
    ),
    "pl": _words(
        "i w na z do się nie jest oraz dla że od o po jak przez lub to są będzie pracy praca firma "
        "doświadczenie obowiązki wymagania oferujemy"
    ),
}
# Letters that point to one language (or one pair): weighed like a stop word each time they occur.
_LETTERS: dict[str, str] = {
    "æ": "da nb",
    "ø": "da nb",
    "å": "da nb sv",
    "ä": "sv de",
    "ö": "sv de",
    "ü": "de",
    "ß": "de",
}
_POLISH = frozenset("ąćęłńśźż")
# Words that split Danish from Norwegian, the closest pair.
_DA_ONLY = _words("ikke nu efter hvad meget også af jer bliver arbejde søges")
_NB_ONLY = _words("ikkje nå etter hva mye av dere blir arbeid jobb søkes")

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def detect_language(text: str, *, max_chars: int = 2000) -> str:
    """The most likely of :data:`LANGUAGES`, or ``"und"``."""
    sample = text[:max_chars].lower()
    words = _WORD.findall(sample)
    scores: dict[str, float] = dict.fromkeys(LANGUAGES, 0.0)
    for word in words:
        for lang, stop in _STOPWORDS.items():
            if word in stop:
                scores[lang] += 1
        if word in _DA_ONLY:
            scores["da"] += 1
        elif word in _NB_ONLY:
            scores["nb"] += 1
    for char in sample:
        for lang in _LETTERS.get(char, "").split():
            scores[lang] += 0.5
        if char in _POLISH:
            scores["pl"] += 1
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    best, top = ranked[0]
    if top < MIN_HITS or ranked[1][1] == top:
        return UNDETERMINED
    return best

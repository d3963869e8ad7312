from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indexing.clean import EMAIL_TOKEN, PHONE_TOKEN, URL_TOKEN, clean_text, html_to_text, truncate


def test_html_becomes_text_with_line_breaks() -> None:
    raw = "<div><h2>Carpenter</h2><p>Build &amp; repair</p><ul><li>roofs</li><li>floors</li></ul></div>"
    assert clean_text(raw) == "Carpenter\nBuild & repair\n- roofs\n- floors"


def test_scripts_and_styles_are_dropped() -> None:
    assert html_to_text("<style>p{color:red}</style><p>Nurse</p><script>alert(1)</script>").strip() == "Nurse"


def test_whitespace_and_unicode_are_normalised() -> None:
    assert clean_text("  Chef\u00a0de\tpartie \r\n\r\n\n  Kitchen  ") == "Chef de partie\nKitchen"
    assert clean_text("ﬁtter") == "fitter"  # NFKC folds the ligature


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("Write to mette.lund@example.dk today", EMAIL_TOKEN),
        ("Call +45 22 33 44 55 for details", PHONE_TOKEN),
        ("Call 12345678 for details", PHONE_TOKEN),
        ("Call +45-1234-5678 for details", PHONE_TOKEN),
        ("Call (+45) 1234 5678 for details", PHONE_TOKEN),
        ("Call 0045 12 34 56 78 for details", PHONE_TOKEN),
        ("Apply at https://jobs.example.dk/123?src=x now", URL_TOKEN),
        ("See www.example.com/jobs now", URL_TOKEN),
    ],
)
def test_personal_data_is_scrubbed(raw: str, token: str) -> None:
    cleaned = clean_text(raw)
    assert token in cleaned
    assert not re.search(r"\d{4}", cleaned.replace("2024", ""))


def test_ordinary_numbers_survive() -> None:
    assert clean_text("In 2024 we hired 35 people for 37 hours a week") == (
        "In 2024 we hired 35 people for 37 hours a week"
    )


def test_truncate_cuts_at_a_word_boundary() -> None:
    assert truncate("alpha beta gamma delta", 12) == "alpha beta"
    assert truncate("short", 100) == "short"
    assert len(clean_text("word " * 1000, max_chars=50)) <= 50


@given(st.text(max_size=300))
def test_cleaning_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once


@given(
    st.from_regex(r"[a-z]{1,8}\.[a-z]{1,8}@example\.(dk|com)", fullmatch=True),
    st.from_regex(r"\+45 \d{2} \d{2} \d{2} \d{2}", fullmatch=True),
    st.text(alphabet=st.characters(whitelist_categories=("L", "Zs")), max_size=40),
)
def test_no_email_or_phone_survives(email: str, phone: str, filler: str) -> None:
    cleaned = clean_text(f"{filler} contact {email} or {phone} {filler}")
    assert "@" not in cleaned
    assert not re.search(r"\d{2} \d{2} \d{2}", cleaned)

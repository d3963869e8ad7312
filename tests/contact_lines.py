"""A deterministic generator of synthetic contact lines (made-up people, e-mails, phone numbers, URLs)
mixed with Danish and English vacancy text: the PII-scrub recall test set."""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST = ["Mette", "Jens", "Sofie", "Lars", "Ida", "Ahmed", "Karen", "Mikkel", "Anne-Marie", "Søren", "Åse", "Omar"]
LAST = ["Lund", "Nielsen", "Kragh", "Holm", "Bæk", "Østergaard", "Hansen", "Rahimi", "Juul", "Møller"]
DOMAINS = ["example.dk", "example.com", "jobs.example.org", "kommune.example.dk", "firma-example.co.uk"]
LEADS_EN = [
    "Questions about the position can be directed to",
    "For more information, contact",
    "You are welcome to call our HR partner",
    "Contact the head of department",
    "Send your CV to",
    "Read more and apply at",
]
LEADS_DA = [
    "Har du spørgsmål til stillingen, så kontakt",
    "Yderligere oplysninger fås hos",
    "Du er velkommen til at ringe til afdelingsleder",
    "Send din ansøgning til",
    "Læs mere og søg stillingen på",
]
TAILS = [
    "We look forward to hearing from you.",
    "Vi glæder os til at høre fra dig.",
    "The position is full-time, 37 hours a week.",
    "Stillingen er på 37 timer om ugen fra 1. marts 2025.",
    "",
]


@dataclass(frozen=True)
class ContactLine:
    text: str
    secrets: tuple[str, ...]  # the e-mails, phone numbers and URLs in ``text``; none may survive cleaning


def _danish_number(rng: random.Random) -> str:
    digits = f"{rng.randint(2, 9)}{rng.randint(0, 9_999_999):07d}"
    pairs = " ".join(digits[i : i + 2] for i in range(0, 8, 2))
    return rng.choice(
        [
            f"+45 {pairs}",
            f"+45{digits}",
            f"0045 {pairs}",
            f"(+45) {digits[:4]} {digits[4:]}",
            f"+45-{digits[:4]}-{digits[4:]}",
            pairs,
            digits,
            f"{digits[:4]} {digits[4:]}",
        ]
    )


def _international_number(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        [
            f"+44 20 {n(1000, 9999)} {n(1000, 9999)}",
            f"+44 (0)20 {n(1000, 9999)} {n(1000, 9999)}",
            f"({n(200, 999)}) {n(200, 999)}-{n(1000, 9999)}",
            f"+1 ({n(200, 999)}) {n(200, 999)}-{n(1000, 9999)}",
            f"{n(200, 999)}-{n(200, 999)}-{n(1000, 9999)}",
            f"+46 8 {n(100, 999)} {n(100, 999)} {n(10, 99)}",
            f"+49 30 {n(1000000, 9999999)}",
            f"+49 (0)30 {n(100000, 999999)}",
            f"0049 89 {n(10000000, 99999999)}",
            f"+353 1 {n(100, 999)} {n(1000, 9999)}",
            f"+47 {n(100, 999)} {n(10, 99)} {n(100, 999)}",
            f"+31 6 {n(10000000, 99999999)}",
        ]
    )


def _email(rng: random.Random, first: str, last: str) -> str:
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}", f"{first}_{last}+jobs", "hr", "job"])
    domain = rng.choice(DOMAINS)
    host, _, tld = domain.rpartition(".")
    return rng.choice(
        [
            f"{local}@{domain}",
            f"{local}@{domain}",
            f"{local}(at){domain}",
            f"{local} [at] {host} [dot] {tld}",
            f"{local} (at) {host} (dot) {tld}",
            f"{local}%40{domain}",
            f"{local} at {host} dot {tld}",
        ]
    ).lower()


def _url(rng: random.Random) -> str:
    return rng.choice(
        [
            f"https://www.{rng.choice(DOMAINS)}/jobs/{rng.randint(100, 99999)}",
            f"http://{rng.choice(DOMAINS)}/apply?id={rng.randint(1, 999)}&src=jobnet",
            f"www.{rng.choice(DOMAINS)}/karriere",
            f"linkedin.com/in/{rng.choice(FIRST).lower()}-{rng.randint(100, 999)}",
            f"{rng.choice(DOMAINS)}/job",
            f"https://{rng.choice(DOMAINS)}/da/job/{rng.choice(['sygeplejerske', 'nurse', 'it-supporter'])}",
        ]
    )


def _account(rng: random.Random) -> str:
    n = rng.randint
    return rng.choice(
        [
            f"DK{n(10, 99)} {n(1000, 9999)} {n(1000, 9999)} {n(1000, 9999)} {n(10, 99)}",
            f"DK{n(10, 99)}{n(1000, 9999)}{n(1000, 9999)}{n(1000, 9999)}{n(10, 99)}",
            f"GB{n(10, 99)} NWBK {n(1000, 9999)} {n(1000, 9999)} {n(1000, 9999)} {n(10, 99)}",
            f"4{n(100, 999)} {n(1000, 9999)} {n(1000, 9999)} {n(1000, 9999)}",
            f"5{n(100, 999)}-{n(1000, 9999)}-{n(1000, 9999)}-{n(1000, 9999)}",
            f"{n(200, 999)}-{n(1000, 9999)}",  # a local phone number, North American style
        ]
    )


def generate_contact_lines(n: int = 150, seed: int = 6) -> list[ContactLine]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        secrets: list[str] = []
        parts = [rng.choice(LEADS_DA if i % 3 == 0 else LEADS_EN), f"{first} {last}"]
        kind = i % 5
        if kind in (0, 3):
            phone = _danish_number(rng)
            parts.append(rng.choice(["on", "på", "tel.", "tlf.", "phone", "mobil:"]) + f" {phone}")
            secrets.append(phone)
        if kind in (1, 3):
            phone = _international_number(rng)
            parts.append(rng.choice(["on", "tel.", "phone:", "or call"]) + f" {phone}")
            secrets.append(phone)
        if kind in (2, 3, 4):
            email = _email(rng, first, last)
            parts.append(rng.choice(["at", "e-mail", "mail:", "eller"]) + f" {email}")
            secrets.append(email)
        if kind in (2, 4) or i % 7 == 0:
            url = _url(rng)
            parts.append(rng.choice(["- see", "or visit", "Læs mere på"]) + f" {url}")
            secrets.append(url)
        if i % 4 == 1:
            account = _account(rng)
            parts.append(rng.choice(["- konto", "card", "IBAN:", "ring evt."]) + f" {account}")
            secrets.append(account)
        text = " ".join(parts) + rng.choice([".", "!", ""]) + " " + rng.choice(TAILS)
        lines.append(ContactLine(text.strip(), tuple(secrets)))
    return lines

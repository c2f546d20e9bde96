"""Replacing detected spans: a typed placeholder, or a pseudonym consistent within a document.

Pseudonyms keep the text natural (a model still sees an address or a phone number) while
pointing at no one: e-mails at example.com (RFC 2606), phones in the 555-01xx range kept for
fiction, IPs in the documentation ranges (RFC 5737, RFC 3849), which scrub itself leaves
alone, so scrubbing twice changes nothing. Types without a safe fake get a numbered
placeholder (<CREDIT_CARD_2>). The same value gets the same pseudonym within a document.
"""
from __future__ import annotations

from pipeline.core.pii.detect import Span

PLACEHOLDERS = {
    "email": "<EMAIL>", "phone": "<PHONE>", "credit_card": "<CREDIT_CARD>", "iban": "<IBAN>",
    "ip_address": "<IP_ADDRESS>", "us_ssn": "<US_SSN>", "aws_access_key": "<SECRET>",
    "github_token": "<SECRET>", "private_key": "<SECRET>", "password": "<SECRET>",
}


def _pseudonym(kind: str, value: str, n: int) -> str:
    if kind == "email":
        return f"person{n}@example.com"
    if kind == "phone" and n < 100:
        return f"+1-202-555-01{n:02d}"
    if kind == "ip_address":
        return f"2001:db8::{n:x}" if ":" in value else f"192.0.2.{n % 254 + 1}"
    return f"{PLACEHOLDERS[kind][:-1]}_{n}>"


def replace(text: str, spans: list[Span], mode: str) -> str:
    """``text`` with each span replaced; ``spans`` sorted and disjoint."""
    if not spans:
        return text
    names: dict[tuple[str, str], str] = {}
    counters: dict[str, int] = {}
    parts, pos = [], 0
    for s in spans:
        parts.append(text[pos:s.start])
        if mode == "placeholder":
            parts.append(PLACEHOLDERS[s.kind])
        else:
            value = text[s.start:s.end]
            key = (s.kind, value.lower() if s.kind == "email" else value)
            if key not in names:
                counters[s.kind] = counters.get(s.kind, 0) + 1
                names[key] = _pseudonym(s.kind, value, counters[s.kind])
            parts.append(names[key])
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)

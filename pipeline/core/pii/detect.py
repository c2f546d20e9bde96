"""Personal-data detectors: a cheap regex finds candidates, a validator confirms them.

Precision comes from the validators and from context, not from narrow regexes:
    e-mail        local@domain.tld, found around each '@' only (a whole-text e-mail regex
                  tries every position; this looks where an address can be); the RFC 2606
                  documentation domains (example.com, .test, ...) are no one's address
    phone         phonenumbers' is_valid_number; numbers without +/00 must look like a phone
                  (a separator or parentheses) or follow a word like "tel"/"phone"
    credit card   13-19 digits, a known issuer prefix, the Luhn checksum
    IBAN          country code, the country's length, the ISO 13616 mod-97 checksum
    IP address    ipaddress: public only (private, loopback, link-local, documentation and
                  reserved ranges are kept); IPv6 must be global unicast (2000::/3)
    US SSN        ddd-dd-dddd with a valid area, group and serial
    secrets       AWS access key ids, GitHub tokens, PEM private key blocks, and
                  password=/token=/api_key= style assignments with a literal value
Dates, versions, ISBNs, UUIDs, hashes, prices and order numbers fail these checks or are
excluded by their context (a "v"/"version"/"ISBN" before, a letter or dash glued on).
"""
from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


# ---------------------------------------------------------------- e-mail
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])"
)


# RFC 2606 names no one owns: documentation addresses (and scrub's own pseudonyms).
_RESERVED_DOMAIN = re.compile(r"(?i)(?:^|\.)(?:example\.(?:com|net|org)|example|test|invalid|localhost)$")


def emails(text: str, reserved: list[Span] | None = None) -> list[Span]:
    """Addresses in ``text``; those at reserved domains go to ``reserved`` when given."""
    out: list[Span] = []
    at = text.find("@")
    done = 0
    while at != -1:
        if at >= done:
            lo = max(done, at - 65)
            for m in _EMAIL.finditer(text, lo, min(len(text), at + 256)):
                if m.start() <= at < m.end():
                    if not _RESERVED_DOMAIN.search(m.group().rsplit("@", 1)[1]):
                        out.append(Span(m.start(), m.end(), "email"))
                    elif reserved is not None:
                        reserved.append(Span(m.start(), m.end(), "email"))
                    done = m.end()
                    break
        at = text.find("@", at + 1)
    return out


# ---------------------------------------------------------------- numbers: phone, card, SSN
# A run of digits and phone/card separators. It starts with a digit and has no lookbehind,
# so the regex engine skips to the next digit in C; what the run is glued to is checked in
# Python on the few runs found (a look-behind at every position cost 6x more).
_RUN = re.compile(r"\d[\d \-.()/]{5,60}\d")
_IPV4_IN_RUN = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_PHONE_SHAPE = re.compile(r"[\s\-.()/]")
_PHONE_CONTEXT = re.compile(r"(?i)(?:tel|phone|fax|mobile|cell|call|ph|contact|whatsapp)\b[^\n\d]{0,12}$")
_NOT_PII_CONTEXT = re.compile(r"(?i)(?:isbn(?:-1[03])?|issn|doi|version|\bver\.?|\bv|order|invoice|#|\bno\.)[:\s#]{0,3}$")
_SSN = re.compile(r"(\d{3})-(\d{2})-(\d{4})")
_CARD_LAYOUT = re.compile(r"\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{4,5}")
_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3(?:0[0-5]|[68])|6(?:011|5|4[4-9]|2)|35")


def luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _ssn(s: str) -> bool:
    m = _SSN.fullmatch(s)
    if not m:
        return False
    area, group, serial = m.groups()
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _card(s: str, digits: str) -> bool:
    return (13 <= len(digits) <= 19 and _CARD_LAYOUT.fullmatch(s) is not None
            and _CARD_PREFIX.match(digits) is not None and len(set(digits)) > 1 and luhn(digits))


# Digit groups joined by one kind of separator, optionally after an area code in
# parentheses: "(415) 555-0134", "415.555.0134", "020 7946 0958", "4155550134".
_NATIONAL_LAYOUT = re.compile(r"(?:\(\d{2,5}\) ?)?\d{2,5}(?:([ .\-/])\d{2,8}(?:\1\d{2,8}){0,3})?")


@lru_cache(maxsize=None)
def _trunk_prefix(region: str) -> str:
    prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix or ""
    return "" if prefix == "1" else prefix  # NANP's "1" is optional


# scrub's own phone pseudonyms (replace.py): 555-01xx is reserved for fiction, no one's number.
_OWN_PSEUDONYM_PHONE = re.compile(r"\+1-202-555-01\d\d")


def _phone(s: str, digits: str, context: str, regions: tuple[str, ...]) -> bool:
    if not 7 <= len(digits) <= 15 or _DATE.fullmatch(s) or "  " in s or _OWN_PSEUDONYM_PHONE.fullmatch(s):
        return False
    international = s.startswith(("+", "00"))
    if not international:
        # Tables of decimals ("97.42 79.1"), CIDR blocks and dates mix separators; phones don't.
        if not _NATIONAL_LAYOUT.fullmatch(s):
            return False
        if not (_PHONE_SHAPE.search(s) or _PHONE_CONTEXT.search(context)):
            return False
    candidates = (None,) if s.startswith("+") else regions
    for region in candidates:
        # Outside North America a national number is written with its trunk prefix ("020 ...",
        # "030 ..."): without it, "1993 123456" would read as a Witney number.
        if region and not international and not digits.startswith(_trunk_prefix(region)):
            continue
        try:
            number = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


_IPV4_SHAPE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DATE_PREFIX = re.compile(r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})(?=[ T]|$)")


def _classify(s: str, context: str, regions: tuple[str, ...]) -> str | None:
    s = s.strip(" .-/")
    if _IPV4_SHAPE.fullmatch(s):
        return None  # the IP detector's
    digits = re.sub(r"\D", "", s)
    if _ssn(s):
        return "us_ssn"
    if _card(s, digits):
        return "credit_card"
    if _phone(s, digits, context, regions):
        return "phone"
    return None


def _glued_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_+.-/")


def _glued_after(text: str, i: int) -> bool:
    return i < len(text) and (text[i].isalnum() or text[i] == "_")


def _ipv4_in_run(text: str, start: int, run: str) -> list[Span]:
    out = []
    for m in _IPV4_IN_RUN.finditer(run):
        a, b = start + m.start(), start + m.end()
        if (a and (text[a - 1].isalnum() or text[a - 1] in "_.")) or _glued_after(text, b) \
                or (text[b:b + 1] == "." and text[b + 1:b + 2].isdigit()):
            continue
        if _VERSION_CONTEXT.search(text[max(0, a - 12):a]):
            continue
        try:
            addr = ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        if addr.is_global and not addr.is_multicast:
            out.append(Span(a, b, "ip_address"))
    return out


def numbers(text: str, regions: tuple[str, ...], want_ip: bool = True) -> list[Span]:
    """Phones, cards, SSNs and IPv4 addresses: all live in runs of digits and separators."""
    out: list[Span] = []
    for m in _RUN.finditer(text):
        start, end = m.span()
        if start and text[start - 1] == "(":
            start -= 1
        if start and text[start - 1] == "+":
            start -= 1
        s = text[start:end]
        if want_ip and "." in s:
            out += _ipv4_in_run(text, start, s)
        head, tail = _glued_before(text, start), _glued_after(text, end)
        date = _DATE_PREFIX.match(s)
        if date:  # "2021-03-04 12:30": the date is no number of ours, the rest is looked at alone
            rest = s[date.end():].lstrip()
            start, s, head = end - len(rest), rest, False
            if len(s) < 7:
                continue
        if not head and not tail:
            context = text[max(0, start - 24):start]
            if _NOT_PII_CONTEXT.search(context):
                continue
            kind = _classify(s, context, regions)
            if kind:
                out.append(Span(start, start + len(s.rstrip(" .-/")), kind))
                continue
        # A run may join two things ("in 2019 415-555-0123", "v1.2 415-555-0123"): try its
        # whitespace pieces, longest first, leaving out a piece glued to a word, unless it
        # is laid out like a card (then it is a failed card).
        if " " not in s.strip() or _CARD_LAYOUT.fullmatch(s.strip()):
            continue
        pieces = [(p.start(), p.end()) for p in re.finditer(r"\S+", s)][:8]
        if tail:
            pieces.pop()
        i = 1 if head else 0
        while i < len(pieces):
            for j in range(len(pieces), i, -1):
                a, b = pieces[i][0], pieces[j - 1][1]
                sub = s[a:b]
                if (j - i == len(pieces) and not head and not tail) or not (sub[0].isdigit() or sub[0] in "+("):
                    continue
                context = text[max(0, start + a - 24):start + a]
                if _NOT_PII_CONTEXT.search(context):
                    continue
                kind = _classify(sub, context, regions)
                if kind:
                    out.append(Span(start + a, start + a + len(sub.rstrip(" .-/")), kind))
                    i = j - 1
                    break
            i += 1
    return out


# ---------------------------------------------------------------- IBAN
_IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
# The check digits and the first two groups: rarer than two capitals, so found faster.
_IBAN_HINT = re.compile(r"\d\d ?[A-Z0-9]{4} ?[A-Z0-9]{4}")
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27,
    "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24,
    "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_valid(s: str) -> bool:
    s = s.replace(" ", "")
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def ibans(text: str) -> list[Span]:
    out: list[Span] = []
    for h in _IBAN_HINT.finditer(text):
        i = h.start() - 2
        if i < 0 or (out and i < out[-1].end) or (i and text[i - 1].isalnum()):
            continue
        m = _IBAN.match(text, i)
        if not m:
            continue
        s = m.group()
        # The last group may have swallowed a following code: retry without it.
        while s and not iban_valid(s):
            cut = s.rfind(" ")
            s = s[:cut] if cut > 4 else ""
        if s:
            out.append(Span(m.start(), m.start() + len(s), "iban"))
    return out


# ---------------------------------------------------------------- IP addresses
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_VERSION_CONTEXT = re.compile(r"(?i)(?:\bv|\bversion|\bver\.?|\brelease|\bbuild|\bpython|\bfirmware|\bsections?|§)[\s:\"'(]{0,3}$")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def ips(text: str, reserved: list[Span] | None = None) -> list[Span]:
    """IPv6 addresses (IPv4 ones are found with the other numbers). Every IPv6 address holds
    "::" or ":hex:"; that hint starts with a colon, so the scan skips ahead fast, and the
    address is the run of hex digits, colons and dots around it. Addresses that are no one's
    (documentation, private, loopback...) go to ``reserved`` when given."""
    out: list[Span] = []
    done = -1
    for h in _IPV6_HINT.finditer(text):
        if h.start() < done:
            continue
        a, b = h.start(), h.end()
        while a > 0 and text[a - 1] in _IPV6_CHARS:
            a -= 1
        while b < len(text) and text[b] in _IPV6_CHARS:
            b += 1
        done = b
        while b > a and text[b - 1] == ".":  # the end of a sentence
            b -= 1
        if b - a > 45 or _glued_after(text, b) or (a and (text[a - 1].isalnum() or text[a - 1] == "_")):
            continue
        try:
            addr = ipaddress.IPv6Address(text[a:b])
        except ValueError:
            continue
        if addr.is_global and not addr.is_multicast and addr in _GLOBAL_UNICAST:
            out.append(Span(a, b, "ip_address"))
        elif reserved is not None:
            reserved.append(Span(a, b, "ip_address"))
    return out


# ---------------------------------------------------------------- secrets
_AWS = re.compile(r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Za-z0-9])")
_GITHUB = re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])")
_PRIVATE_KEY = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----.*?-----END \1PRIVATE KEY\2-----", re.S)
# Matched at each place a key word starts in the lower-cased text (found with str.find,
# which is many times faster than a case-insensitive regex over the whole text).
_KEY_STEMS = ("pass", "pwd", "secret", "token", "api", "access")
_ASSIGNMENT = re.compile(
    r"(?:pass(?:word|wd|phrase)|pwd|secret(?:[_-]?key)?|token|api[_-]?key|apikey|access[_-]?(?:key|token))"
    r"[\"']?\s*[:=]\s*(?:\"([^\"\s]{4,200})\"|'([^'\s]{4,200})'|([^\s\"'<>,;(){}\[\]]{6,200}))"
)
_NOT_A_SECRET = re.compile(r"(?i)(?:none|null|true|false|nil|undefined|required|optional|string|password|secret|token"
                           r"|changeme|example|placeholder|your[_-].*|x+|\*+|\.+|<.*>|\$\{.*\}|\{.*\}|%.*|\$\w+)")


def _secret_value(value: str, quoted: bool) -> bool:
    if _NOT_A_SECRET.fullmatch(value):
        return False
    if quoted:
        return True
    # Unquoted: an identifier or attribute (token = tokens, pwd=self.pwd) is code, and
    # "token:--rise," is verse; a password written bare starts with a letter or digit and
    # holds a digit or mixes three kinds of characters.
    if not value[0].isalnum():
        return False
    kinds = (any(c.isdigit() for c in value), any(c.islower() for c in value), any(c.isupper() for c in value),
             any(not c.isalnum() and c not in "_." for c in value))
    return kinds[0] or sum(kinds) >= 3


def _assignments(text: str) -> list[Span]:
    low = text.lower()
    if len(low) != len(text):  # a few characters change length when lower-cased: go slowly
        low = "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)
    out, done = [], -1
    for stem in _KEY_STEMS:
        i = low.find(stem)
        while i != -1:
            # "db_password" and "DB-PASSWORD" count; "bypass" or "tokens" do not.
            if i > done and not (i and low[i - 1].isalnum()):
                m = _ASSIGNMENT.match(low, i)
                if m:
                    g = 1 if m.group(1) is not None else 2 if m.group(2) is not None else 3
                    value = text[m.start(g):m.end(g)]
                    if _secret_value(value, quoted=g < 3):
                        out.append(Span(m.start(g), m.end(g), "password"))
            i = low.find(stem, i + 1)
    return out


def secrets(text: str) -> list[Span]:
    out = []
    if "-----BEGIN" in text:
        out += [Span(m.start(), m.end(), "private_key") for m in _PRIVATE_KEY.finditer(text)]
    if "AKIA" in text or "ASIA" in text or "ABIA" in text or "ACCA" in text:
        out += [Span(m.start(), m.end(), "aws_access_key") for m in _AWS.finditer(text)
                if not (m.start() and text[m.start() - 1].isalnum())]
    if "gh" in text or "github_pat_" in text:
        out += [Span(m.start(), m.end(), "github_token") for m in _GITHUB.finditer(text)
                if not (m.start() and (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_"))]
    return out + _assignments(text)


# ---------------------------------------------------------------- all together
KINDS = ("email", "phone", "credit_card", "iban", "ip_address", "us_ssn",
         "aws_access_key", "github_token", "private_key", "password")
# Earlier wins where spans overlap: specific secrets before generic ones, e-mail before the
# numbers inside it.
PRIORITY = {k: i for i, k in enumerate(
    ("private_key", "aws_access_key", "github_token", "email", "iban", "credit_card", "us_ssn", "ip_address",
     "phone", "password"))}


def _blank(text: str, spans: list[Span]) -> str:
    """``text`` with each span overwritten by ``<NUL...>``: same positions, and the text
    around it reads as it will around the placeholder that replaces it (``<EMAIL>``): no
    digit run joins across it (a space would join one) and nothing is glued to it."""
    parts, pos = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        if s.start >= pos:
            n = s.end - s.start
            parts += [text[pos:s.start], "<" + "\0" * (n - 2) + ">" if n >= 2 else "\0"]
            pos = s.end
    return "".join(parts) + text[pos:]


def _find_once(text: str, kinds: frozenset[str], phone_regions: tuple[str, ...]) -> list[Span]:
    found: list[Span] = []
    # An address at a reserved domain is no one's (scrub's own pseudonyms among them), and
    # nothing overlapping it is PII either: else "password=person1@example.com=" would read
    # as a password on the next scrub, where "password=jo@mail.com=" gave an address. The
    # same holds for IPv6 addresses outside the public ranges.
    reserved: list[Span] = []
    if "email" in kinds and "@" in text:
        found += emails(text, reserved)
    if kinds & {"aws_access_key", "github_token", "private_key", "password"}:
        found += [s for s in secrets(text) if s.kind in kinds]
    if reserved:
        found = [s for s in found if not any(r.start < s.end and s.start < r.end for r in reserved)]
    if "ip_address" in kinds:
        found += ips(_blank(text, found + reserved) if found or reserved else text, reserved)
    # Numbers are read with the addresses and secrets blanked out (same length, so positions
    # hold): a phone written right after an address, "jo@mail.com(415) 555-0134", is not a
    # digit run glued to a word. Digits inside an address lose to it anyway (PRIORITY); an
    # address that is no one's ("2001:db8::1") lends none of its digits to a number either.
    rest = _blank(text, found + reserved) if found or reserved else text
    if kinds & {"phone", "credit_card", "us_ssn", "ip_address"}:
        found += [s for s in numbers(rest, phone_regions, "ip_address" in kinds) if s.kind in kinds]
    if "iban" in kinds:
        found += ibans(rest)
    if len(found) < 2:
        return found
    found.sort(key=lambda s: (PRIORITY[s.kind], s.start))
    starts: list[int] = []  # taken spans, sorted and disjoint
    ends: list[int] = []
    taken: list[Span] = []
    for s in found:
        i = bisect.bisect_right(starts, s.start)
        if (i and ends[i - 1] > s.start) or (i < len(starts) and starts[i] < s.end):
            continue
        starts.insert(i, s.start)
        ends.insert(i, s.end)
        taken.insert(i, s)
    return taken


# A value glued to another one ("4000000000000006)1.0.0.0": a card and an IP read as one digit
# run) shows once its neighbour is blanked; real text settles in one more round.
MAX_ROUNDS = 3


def find(text: str, kinds: frozenset[str], phone_regions: tuple[str, ...]) -> list[Span]:
    """Non-overlapping PII spans in ``text``, sorted by position."""
    taken = _find_once(text, kinds, phone_regions)
    for _ in range(MAX_ROUNDS):
        if not taken:
            break
        more = [s for s in _find_once(_blank(text, taken), kinds, phone_regions)
                if not any(t.start < s.end and s.start < t.end for t in taken)]
        if not more:
            break
        taken = sorted(taken + more, key=lambda s: s.start)
    return taken

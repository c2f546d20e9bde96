"""A labelled PII test set: seeded Faker text with every span recorded as it is inserted.

    python -m benchmarks.pii_testset [--docs 2000]     score pipeline.scrub on it

Each document is filler prose with 1-3 personal-data values and 1-3 decoys dropped into
templates. Values are real-looking and valid (phones that phonenumbers accepts, Luhn-valid
cards, mod-97-valid IBANs, public IPs, well-formed SSNs, secrets of the right shape);
decoys are the look-alikes that must survive: versions, dates, times, ISBNs, UUIDs, commit
hashes, prices, order numbers, 16-digit numbers failing Luhn, private and loopback IPs,
MAC addresses, and code that names a password without holding one.

Scoring: a gold span is found when a predicted span of the same type overlaps it; a
predicted span overlapping no gold span of its type is a false positive; a decoy is hit
when any predicted span overlaps it.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import random
import string
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEED = 20240611
FIRST_DAY, LAST_DAY = datetime.date(1990, 1, 1), datetime.date(2030, 12, 31)
FIRST_DAY_T, LAST_DAY_T = datetime.datetime(1990, 1, 1), datetime.datetime(2030, 12, 31)
REPORTED = {"aws_access_key": "secret", "github_token": "secret", "private_key": "secret", "password": "secret"}


@dataclass
class Doc:
    text: str = ""
    spans: list = field(default_factory=list)   # (start, end, kind)
    decoys: list = field(default_factory=list)  # (start, end, what)

    def add(self, template: str, value: str, kind: str | None = None, decoy: str | None = None) -> None:
        before, after = template.split("{v}")
        start = len(self.text) + len(before)
        self.text += before + value + after + " "
        if kind:
            self.spans.append((start, start + len(value), kind))
        if decoy:
            self.decoys.append((start, start + len(value), decoy))

    def filler(self, fake) -> None:
        self.text += fake.sentence(nb_words=random.randint(6, 14)) + " "


# ----------------------------------------------------------------- values
US_AREAS = ["201", "206", "212", "213", "305", "312", "404", "415", "503", "512", "617", "646", "702", "713", "808", "917"]


def _phone(fakes, rng) -> tuple[str, str]:
    import phonenumbers as pn

    fmt = rng.random()
    while True:
        region = rng.choice(["US", "US", "US", "GB", "GB", "DE", "FR", "IN", "AU", "BR", "JP"])
        if region == "US":
            raw = rng.choice(US_AREAS) + str(rng.randint(200, 999)) + f"{rng.randint(0, 9999):04d}"
        else:
            raw = fakes[region].phone_number()
        try:
            num = pn.parse(raw, region)
        except pn.NumberParseException:
            continue
        if not pn.is_valid_number(num):
            continue
        if region in ("US", "GB") and fmt < 0.5:
            national = pn.format_number(num, pn.PhoneNumberFormat.NATIONAL)
            if region == "US" and fmt < 0.2:
                d = str(num.national_number)
                national = rng.choice([f"{d[:3]}-{d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}"])
            return national, region
        style = pn.PhoneNumberFormat.E164 if fmt > 0.85 else pn.PhoneNumberFormat.INTERNATIONAL
        return pn.format_number(num, style), region


def _card(fake, rng) -> str:
    kind = rng.choice(["visa", "mastercard", "amex", "discover", "jcb", "diners"])
    digits = fake.credit_card_number(card_type=kind)
    layout = rng.random()
    if layout < 0.4:
        return digits
    sep = rng.choice([" ", "-"])
    if len(digits) == 15:
        return sep.join([digits[:4], digits[4:10], digits[10:]])
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))


def _iban(fakes, rng) -> str:
    value = fakes[rng.choice(["DE", "FR", "GB", "NL", "ES", "IT"])].iban()
    if rng.random() < 0.5:
        return " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def _ip(fake, rng) -> str:
    if rng.random() < 0.7:
        return fake.ipv4_public()
    while True:
        addr = ipaddress.IPv6Address(rng.randint(0x2001 << 112, (0x2c00 << 112) - 1))
        if addr.is_global:
            return str(addr)


def _secret(kind: str, fake, rng) -> tuple[str, str]:
    """(template, value) for one secret."""
    alnum = string.ascii_letters + string.digits
    if kind == "aws_access_key":
        value = rng.choice(["AKIA", "ASIA"]) + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
        return rng.choice(["aws_access_key_id = {v}", "The leaked key {v} was rotated.", "AWS_ACCESS_KEY_ID={v}"]), value
    if kind == "github_token":
        if rng.random() < 0.7:
            value = rng.choice(["ghp_", "gho_", "ghs_"]) + "".join(rng.choice(alnum) for _ in range(36))
        else:
            value = "github_pat_" + "".join(rng.choice(alnum) for _ in range(22)) + "_" + "".join(rng.choice(alnum) for _ in range(59))
        return rng.choice(["export GITHUB_TOKEN={v}", "Use the token {v} for the CI.", "auth: {v}"]), value
    if kind == "private_key":
        body = "\n".join("".join(rng.choice(alnum + "+/") for _ in range(64)) for _ in range(rng.randint(3, 8)))
        label = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
        value = f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"
        return "Here is the key, keep it safe:\n{v}\n", value
    secret = fake.password(length=rng.randint(8, 16), special_chars=False) + str(rng.randint(0, 99))
    template = rng.choice(['password="{v}"', "password: {v}", "DB_PASSWORD={v}", "api_key = '{v}'",
                           'client_secret: "{v}"', "token={v}", "passwd {v}".replace(" ", "="),
                           "The admin login is root with password={v} on staging."])
    return template, secret


def _pii(kind: str, fakes, rng, doc: Doc) -> None:
    fake = fakes["US"]
    if kind == "email":
        # Faker's own addresses use the reserved example.* domains, which scrub rightly keeps.
        user = rng.choice([fake.user_name(), f"{fake.first_name()}.{fake.last_name()}".lower(),
                           f"{fake.user_name()}+{fake.word()}", f"{fake.last_name()}{rng.randint(1, 99)}"])
        domain = rng.choice([fake.domain_name(), fakes["GB"].domain_name(), fakes["DE"].free_email_domain(),
                             "gmail.com", "outlook.com", "yahoo.co.uk", "cs.cmu.edu", "mail.ucsc.edu"])
        value = f"{user}@{domain}"
        t = rng.choice(["Contact {name} at {v} for details.", "From: {v}", "Send the draft to <{v}> by Friday.",
                        "Reply to {v}."])
    elif kind == "phone":
        value, region = _phone(fakes, rng)
        t = rng.choice(["Call me at {v}.", "Phone: {v}", "You can reach the office on {v} during the day.",
                        "{name}'s mobile is {v}.", "Tel. {v}"])
    elif kind == "credit_card":
        value = _card(fake, rng)
        t = rng.choice(["Card number {v} expires 04/27.", "I paid with {v} yesterday.", "CC: {v}"])
    elif kind == "iban":
        value = _iban(fakes, rng)
        t = rng.choice(["Please transfer the rent to IBAN {v}.", "Account: {v}", "Bank details: {v} (Sparkasse)."])
    elif kind == "ip_address":
        value = _ip(fake, rng)
        t = rng.choice(["A login from {v} was blocked.", "The server at {v} answered slowly.", "client={v} status=200"])
    elif kind == "us_ssn":
        value = fake.ssn()
        t = rng.choice(["SSN: {v}", "Her social security number is {v}.", "ssn {v} on file"])
    else:
        t, value = _secret(kind, fake, rng)
    doc.add(t.replace("{name}", fake.first_name()), value, kind=kind)


def _decoy(fakes, rng, doc: Doc) -> None:
    fake = fakes["US"]
    what = rng.choice(["version", "date", "time", "isbn", "uuid", "sha", "price", "order", "not_luhn",
                       "private_ip", "loopback", "mac", "code", "zip", "coords", "datetime", "phone_like",
                       "table", "cidr", "section", "verse"])
    if what == "version":
        value = rng.choice([f"{rng.randint(0, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 40)}",
                            f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}"])
        t = rng.choice(["Upgrade to version {v} now.", "Released v{v} today.", "Requires Python {v} or later."])
    elif what == "date":
        d = fake.date_between_dates(FIRST_DAY, LAST_DAY)  # fixed bounds: Faker's default ends today
        value = rng.choice([d.isoformat(), d.strftime("%m/%d/%Y"), d.strftime("%d.%m.%Y"), d.strftime("%Y/%m/%d")])
        t = rng.choice(["Signed on {v}.", "Due {v}", "Published {v} by the board."])
    elif what == "datetime":
        value = fake.date_time_between_dates(FIRST_DAY_T, LAST_DAY_T).strftime(rng.choice(["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]))
        t = "The job started at {v} and failed."
    elif what == "time":
        value = fake.date_time_between_dates(FIRST_DAY_T, LAST_DAY_T).strftime("%H:%M:%S")
        t = "The meeting is at {v} sharp."
    elif what == "isbn":
        value = rng.choice([fake.isbn13(), fake.isbn10()])
        t = rng.choice(["ISBN {v}", "See the book (ISBN: {v}).", "isbn {v}"])
    elif what == "uuid":
        value = str(fake.uuid4())
        t = rng.choice(["Request id {v} failed.", "uuid={v}"])
    elif what == "sha":
        value = fake.sha1() if rng.random() < 0.6 else fake.sha1()[:rng.choice([7, 10, 12])]
        t = rng.choice(["Fixed in commit {v}.", "Reverts {v}."])
    elif what == "price":
        x = rng.uniform(1, 99999)
        value = rng.choice([f"${x:,.2f}", f"€{x:.2f}", f"USD {x:.2f}", f"{x:,.0f} dollars"])
        t = "It costs {v} before tax."
    elif what == "order":
        value = rng.choice([f"#{rng.randint(10**7, 10**10)}", f"INV-{rng.randint(2000, 2030)}-{rng.randint(0, 999999):06d}",
                            f"{rng.randint(10**9, 10**10 - 1)}"])
        t = rng.choice(["Order {v} has shipped.", "Invoice {v} is overdue.", "Your order number: {v}"])
    elif what == "not_luhn":
        while True:
            digits = "4" + "".join(str(rng.randint(0, 9)) for _ in range(15))
            from pipeline.core.pii.detect import luhn

            if not luhn(digits):
                break
        value = digits if rng.random() < 0.5 else " ".join(digits[i:i + 4] for i in range(0, 16, 4))
        t = rng.choice(["Tracking number {v}.", "Reference {v}", "Serial {v} is registered."])
    elif what == "private_ip":
        value = rng.choice([fake.ipv4_private(), "127.0.0.1", f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                            "fe80::1ff:fe23:4567:890a", "fd12:3456:789a:1::1", "::1"])
        t = rng.choice(["The router is at {v}.", "Bind to {v} only.", "ping {v}"])
    elif what == "loopback":
        value = rng.choice(["127.0.0.1", "0.0.0.0", "255.255.255.0", "224.0.0.1"])
        t = "Listen on {v}."
    elif what == "mac":
        value = fake.mac_address()
        t = "The NIC has MAC {v}."
    elif what == "zip":
        value = fake.zipcode()
        t = "Ship to zip code {v}."
    elif what == "coords":
        value = f"{fake.latitude():.4f}, {fake.longitude():.4f}"
        t = "Coordinates: {v}."
    elif what == "table":  # a row of figures, as in Wikipedia's tables
        value = "  ".join(f"{rng.uniform(0, 500):.{rng.randint(0, 3)}f}" for _ in range(rng.randint(3, 6)))
        t = "Heat of fusion (kJ/mol) {v}"
    elif what == "cidr":
        value = f"{fake.ipv4_private()}/{rng.randint(8, 30)}"
        t = rng.choice(["ip4 = IPv4Network('{v}')", "Allow {v} in the firewall."])
    elif what == "section":
        value = ".".join(str(rng.randint(1, 60)) for _ in range(4))
        t = rng.choice(['See sections "{v} Markup declaration".', "as section {v} says"])
    elif what == "verse":
        value = rng.choice(["token:--rise", "password; and", "secret: thou"])
        t = "Go, by this {v} lend thy hand."
    elif what == "phone_like":
        value = rng.choice([f"{rng.randint(1, 9)}-{rng.randint(100, 999)}", f"{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                            f"{rng.randint(1990, 2030)}-{rng.randint(1990, 2030)}"])
        t = rng.choice(["Seats {v} are taken.", "The {v} season was long.", "Room {v}"])
    else:
        value = rng.choice(["password = None", "token = tokens[0]", "self.password = password", "if not passwd:",
                            "api_key = os.environ['API_KEY']", "password: str = ''", "token = self._next_token()",
                            "def login(user, password):"])
        t = "{v}"
    doc.add(t, value, decoy=what)


def generate(n_docs: int = 2000, seed: int = SEED) -> list[Doc]:
    from faker import Faker

    from pipeline.core.pii.detect import KINDS

    Faker.seed(seed)
    random.seed(seed)
    rng = random.Random(seed)
    fakes = {r: Faker(loc) for r, loc in {"US": "en_US", "GB": "en_GB", "DE": "de_DE", "FR": "fr_FR", "IN": "en_IN",
                                          "AU": "en_AU", "BR": "pt_BR", "JP": "ja_JP", "NL": "nl_NL", "ES": "es_ES",
                                          "IT": "it_IT"}.items()}
    for i, f in enumerate(fakes.values()):
        f.seed_instance(seed + i)
    docs = []
    for i in range(n_docs):
        doc = Doc()
        items = [("pii", rng.choice(KINDS)) for _ in range(rng.randint(1, 3))] + [("decoy", None)] * rng.randint(1, 3)
        rng.shuffle(items)
        for what, kind in items:
            doc.filler(fakes["US"])
            if what == "pii":
                _pii(kind, fakes, rng, doc)
            else:
                _decoy(fakes, rng, doc)
        doc.filler(fakes["US"])
        docs.append(doc)
    return docs


def _overlaps(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(docs: list[Doc], predict) -> dict:
    """Per-type recall/precision and the decoy hit rate; ``predict(text) -> [(start, end, kind)]``."""
    tp, fn, fp = Counter(), Counter(), Counter()
    decoys_hit, decoys, exact = Counter(), Counter(), 0
    for doc in docs:
        pred = predict(doc.text)
        for g in doc.spans:
            match = [p for p in pred if p[2] == g[2] and _overlaps(p, g)]
            (tp if match else fn)[g[2]] += 1
            exact += any(p[0] == g[0] and p[1] == g[1] for p in match)
        for p in pred:
            if not any(g[2] == p[2] and _overlaps(p, g) for g in doc.spans):
                fp[p[2]] += 1
        for d in doc.decoys:
            decoys[d[2]] += 1
            decoys_hit[d[2]] += any(_overlaps(p, d) for p in pred)
    kinds = sorted(set(tp) | set(fn) | set(fp))
    rows = {k: {"gold": tp[k] + fn[k], "found": tp[k], "false_pos": fp[k],
                "recall": tp[k] / max(tp[k] + fn[k], 1), "precision": tp[k] / max(tp[k] + fp[k], 1)} for k in kinds}
    gold = sum(tp.values()) + sum(fn.values())
    return {"types": rows, "recall": sum(tp.values()) / gold, "precision": sum(tp.values()) / max(sum(tp.values()) + sum(fp.values()), 1),
            "exact_boundaries": exact / gold, "decoys": sum(decoys.values()), "decoys_hit": sum(decoys_hit.values()),
            "decoy_fp_rate": sum(decoys_hit.values()) / max(sum(decoys.values()), 1), "decoys_hit_by_kind": dict(decoys_hit)}


def table(result: dict) -> str:
    lines = [f"{'type':<16}{'gold':>6}{'found':>7}{'false+':>8}{'recall':>8}{'precision':>11}"]
    for k, r in result["types"].items():
        lines.append(f"{k:<16}{r['gold']:>6}{r['found']:>7}{r['false_pos']:>8}{r['recall']:>8.3f}{r['precision']:>11.3f}")
    lines.append(f"{'all':<16}{sum(r['gold'] for r in result['types'].values()):>6}"
                 f"{sum(r['found'] for r in result['types'].values()):>7}"
                 f"{sum(r['false_pos'] for r in result['types'].values()):>8}{result['recall']:>8.3f}{result['precision']:>11.3f}")
    lines.append(f"decoys altered: {result['decoys_hit']}/{result['decoys']} = {result['decoy_fp_rate']:.2%} "
                 f"{result['decoys_hit_by_kind'] or ''}; exact span boundaries: {result['exact_boundaries']:.1%}")
    return "\n".join(lines)


def ours(cfg=None):
    from pipeline.scrub import Config
    from pipeline.core.pii.detect import find

    cfg = cfg or Config()
    kinds, regions = frozenset(cfg.types), tuple(cfg.phone_regions)
    return lambda text: [(s.start, s.end, s.kind) for s in find(text, kinds, regions)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=2000)
    args = p.parse_args()
    docs = generate(args.docs)
    print(f"labelled set: {len(docs)} documents, {sum(len(d.spans) for d in docs)} PII spans, "
          f"{sum(len(d.decoys) for d in docs)} decoys (seed {SEED})")
    print(table(score(docs, ours())))


if __name__ == "__main__":
    main()

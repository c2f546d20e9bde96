"""Each detector: what it must find, what it must leave, and the validators behind it."""
import pytest

from pipeline.scrub import Config, scrub_text
from pipeline.core.pii.detect import iban_valid, luhn

CFG = Config()


def scrub(text, **kw):
    return scrub_text(text, Config(**kw) if kw else CFG)[0]


@pytest.mark.parametrize("text, expected", [
    ("Mail john.doe+news@mail.ucsc.edu today.", "Mail <EMAIL> today."),
    ("Call (415) 555-0134 or +44 20 7946 0958.", "Call <PHONE> or <PHONE>."),
    ("Tel: 020 7946 0958", "Tel: <PHONE>"),
    ("Paris: +33 1 42 68 53 00, Berlin: 0049 30 901820", "Paris: <PHONE>, Berlin: <PHONE>"),
    ("Card 4111 1111 1111 1111 and 378282246310005.", "Card <CREDIT_CARD> and <CREDIT_CARD>."),
    ("IBAN DE89 3704 0044 0532 0130 00, GB82WEST12345698765432.", "IBAN <IBAN>, <IBAN>."),
    ("from 8.8.8.8 and 2001:4860:4860::8888.", "from <IP_ADDRESS> and <IP_ADDRESS>."),
    ("SSN 123-45-6789", "SSN <US_SSN>"),
    ("key AKIAIOSFODNN7EXAMPLE", "key <SECRET>"),
    ("GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789", "GITHUB_TOKEN=<SECRET>"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "<SECRET>"),
    ('password="correct horse"; DB_PASSWORD=hunter22 api_key: \'sk-live-abc\'',
     'password="correct horse"; DB_PASSWORD=<SECRET> api_key: \'<SECRET>\''),
    ("in 2019 415-555-0134 was the number", "in 2019 <PHONE> was the number"),
])
def test_finds_and_replaces(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "Upgrade to version 1.2.3.4 or v2.10.4.",
    "Signed 2021-03-04, due 03/04/2021, at 2021-03-04 12:30:45.",
    "ISBN 978-3-16-148410-0", "Request 123e4567-e89b-12d3-a456-426614174000",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b", "It costs $1,299.99 or USD 1234567.89.",
    "Order #4155550134 shipped; invoice INV-2023-004512.", "Tracking 4111 1111 1111 1112 and 4111111111111112.",
    "router 192.168.1.1, 10.0.0.1, 127.0.0.1, 224.0.0.1, fe80::1, ::1, fd12:3456::1", "at 12:30:45 MAC 00:1A:2B:3C:4D:5E",
    "std::vector<int> a::b", "password = None; token = tokens[0]; self.password = password",
    "Go, by this token:--rise, and lend thy hand.", "Heat (kJ/mol) 136  97.42  79.1  69  66.1",
    "ip4 = IPv4Network('192.0.2.192/26')", 'See sections "8.2.4.44 Bogus comment".',
])
def test_leaves_look_alikes(text):
    assert scrub(text) == text


def test_validators():
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    assert iban_valid("DE89370400440532013000") and not iban_valid("DE89370400440532013001")
    assert not iban_valid("XX89370400440532013000")


def test_pseudonyms_are_consistent_within_a_document():
    text = "a@b.org wrote to c@d.org; A@B.org again. 8.8.8.8, 8.8.8.8, 1.1.1.1. Card 4111 1111 1111 1111."
    out = scrub(text, replacement="pseudonym")
    assert out == ("person1@example.com wrote to person2@example.com; person1@example.com again. "
                   "192.0.2.2, 192.0.2.2, 192.0.2.3. Card <CREDIT_CARD_1>.")
    assert scrub(out) == out  # pseudonyms point at no one: scrubbing again changes nothing


def test_types_and_regions_are_configurable():
    assert scrub("a@b.org 8.8.8.8", types=["ip_address"]) == "a@b.org <IP_ADDRESS>"
    assert scrub("Tel. 030 901820", phone_regions=["DE"]) == "Tel. <PHONE>"
    assert scrub("Tel. 030 901820") == "Tel. 030 901820"


def test_bad_config_names_the_key():
    from pipeline.core.errors import StageError

    with pytest.raises(StageError, match="scrub.types"):
        Config(types=["emial"])
    with pytest.raises(StageError, match="scrub.replacement"):
        Config(replacement="mask")
    with pytest.raises(StageError, match="scrub.phone_regions"):
        Config(phone_regions=["UK"])

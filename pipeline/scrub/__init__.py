"""scrub: replace personal data (e-mails, phones, cards, IBANs, public IPs, US SSNs, secrets) with placeholders or pseudonyms.

Detection is a regex for candidates and a validator for each type (phonenumbers, Luhn,
mod-97, ipaddress; see pipeline/core/pii/detect.py). Each replacement is a typed placeholder (<EMAIL>,
<PHONE>, <CREDIT_CARD>, <IBAN>, <IP_ADDRESS>, <US_SSN>, <SECRET>) or, with
replacement=pseudonym, a fake value consistent within the document (see pipeline/core/pii/replace.py).
stats.json counts every type (`pii`), also per source; each document's meta gets its counts.
A document that was only PII (an address list) is dropped as `only_pii`; empty ones as `empty`.

Usage:
    python -m pipeline scrub                                 (on the configured upstream output)
    python -m pipeline scrub in=posts.jsonl out=clean.jsonl replacement=pseudonym
    from pipeline.scrub import Config, scrub_text; scrub_text("mail me: a@b.org", Config())
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pipeline.core.shard_jobs import ShardPart, map_or_gather
from pipeline.scrub.apply import scrub_shard, scrub_text
from pipeline.core.pii import DEFAULT_PHONE_REGIONS, KINDS
from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed

INPUTS = {"docs": Input("document shards to scrub")}
VERSION = "2"  # 2: spans next to addresses and secrets, its own pseudonyms left alone

__all__ = ["Config", "INPUTS", "VERSION", "run", "scrub_text"]


@dataclass
class Config:
    # Which detectors run (all by default): email phone credit_card iban ip_address us_ssn
    # aws_access_key github_token private_key password.
    types: list[str] = field(default_factory=lambda: list(KINDS))
    replacement: str = "placeholder"  # placeholder (<EMAIL>) | pseudonym (person1@example.com, consistent per document)
    # Regions whose national formats count as phones ("(415) 555-0134", "020 7946 0958");
    # numbers written with + or 00 are checked against every country. More regions, more
    # recall on national numbers and more risk of reading other digit groups as phones.
    phone_regions: list[str] = field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS))
    drop_only_pii: bool = True  # a document that is nothing but PII (an address list) is dropped
    skip_sources: list[str] = field(default_factory=list)  # fnmatch globs left untouched
    workers: int = unkeyed(1)
    # Snakemake jobs the step is split into, each over every n-th input shard, then one job that
    # gathers them (pipeline/core/shard_jobs.py); 0 = one job. The result is the same either way.
    shard_jobs: int = unkeyed(0)
    def __post_init__(self):
        if self.shard_jobs < 0:
            raise StageError(f"scrub.shard_jobs must be >= 0 (0 = one job), got {self.shard_jobs}")
        unknown = sorted(set(self.types) - set(KINDS))
        if unknown:
            raise StageError(f"scrub.types: unknown type(s) {unknown}; choose from {list(KINDS)}")
        if self.replacement not in ("placeholder", "pseudonym"):
            raise StageError(f"scrub.replacement: {self.replacement!r} is neither 'placeholder' nor 'pseudonym'")
        import phonenumbers

        bad = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad:
            raise StageError(f"scrub.phone_regions: {bad} are not ISO 3166 region codes phonenumbers knows (e.g. US, GB, DE)")


# One Snakemake job per slice of the input shards when shard_jobs > 0 (the rules are generated).
PARTS = {"shards": ShardPart(lambda cfg: partial(scrub_shard, cfg))}


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    log.info("scrub config: %s", dataclasses.asdict(cfg))
    stats = map_or_gather(PARTS["shards"], cfg, inputs, out, log, desc="scrub")
    log.info("scrub: %d of %d documents held PII: %s", stats["docs_with_pii"], stats["docs_in"], stats["pii"])
    return stats

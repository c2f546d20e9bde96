"""filter: drop low-quality and off-language documents (Gopher, C4 and FineWeb rules, fastText language ID, optional toxicity).

Rule groups run in this order; the first rule a document fails is its drop reason, named
``<group>.<config key>`` (e.g. ``gopher_quality.min_stop_words``, ``c4.curly_bracket``):

    language            fastText lid.176 top language in `languages`, score >= min_score (FineWeb)
    gopher_quality      word counts, mean word length, symbols, bullets, letters, stop words
    c4                  C4's line and page rules; kept pages lose the lines C4 removes
    gopher_repetition   duplicated lines/paragraphs, top and duplicated n-grams (Gopher table A1),
                        on the text before C4's line removal, as in FineWeb
    fineweb             FineWeb's punctuation, short-line, duplicate-line and list rules
    toxicity            alt-profanity-check's classifier (off by default, see toxicity.py)

Every group has ``enabled`` and ``skip_sources`` (fnmatch globs on a document's source): by
default code is exempt from the prose rules and books from the line-based C4/FineWeb rules.

Usage:
    python -m pipeline filter                                    (on the configured collect output)
    python -m pipeline filter in=docs.jsonl out=kept.parquet c4.enabled=false
    from pipeline.filter import Config, judge; judge({"text": ..., "source": "web/x", ...}, Config())
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pipeline.core.shard_jobs import ShardPart, map_or_gather
from pipeline.filter.apply import filter_shard, judge
from pipeline.filter.c4 import C4Config
from pipeline.filter.fineweb import FineWebConfig
from pipeline.filter.gopher import GopherQualityConfig, GopherRepetitionConfig
from pipeline.filter.language import LanguageConfig
from pipeline.filter.toxicity import ToxicityConfig
from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed

INPUTS = {"docs": Input("document shards to filter")}
VERSION = "2"

__all__ = ["Config", "INPUTS", "VERSION", "run", "judge"]

GROUPS = {
    "language": LanguageConfig,
    "gopher_quality": GopherQualityConfig,
    "gopher_repetition": GopherRepetitionConfig,
    "c4": C4Config,
    "fineweb": FineWebConfig,
    "toxicity": ToxicityConfig,
}


@dataclass
class Config:
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)
    workers: int = unkeyed(1)  # processes over shards
    # Snakemake jobs the step is split into, each over every n-th input shard, then one job that
    # gathers them (pipeline/core/shard_jobs.py); 0 = one job. The result is the same either way.
    shard_jobs: int = unkeyed(0)

    def __post_init__(self):
        if self.shard_jobs < 0:
            raise StageError(f"filter.shard_jobs must be >= 0 (0 = one job), got {self.shard_jobs}")
        # execute() builds Config(**subtree) from plain dicts: make the groups dataclasses.
        for name, cls in GROUPS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                try:
                    setattr(self, name, cls(**value))
                except TypeError as err:
                    raise StageError(f"filter.{name}: {err}") from None


# One Snakemake job per slice of the input shards when shard_jobs > 0 (the rules are generated).
PARTS = {"shards": ShardPart(lambda cfg: partial(filter_shard, cfg))}


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    log.info("filter config: %s", dataclasses.asdict(cfg))
    stats = map_or_gather(PARTS["shards"], cfg, inputs, out, log, desc="filter")
    log.info("filter: kept %d of %d documents; dropped %s", stats["docs_kept"], stats["docs_in"], stats["dropped"])
    return stats

"""Text from the steps before scrub (collect's samples, filter's removed examples, dedup's
clusters) is shown as scrub leaves text: a report is meant to be shared, so it must not carry
what the pipeline removes further down. Scrub first, then cut: a cut value is not detected."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _config():
    from pipeline.scrub import Config

    return Config()  # every detector, typed placeholders (<EMAIL>, <PHONE>, ...)


def scrubbed(text: str) -> str:
    from pipeline.scrub import scrub_text

    return scrub_text(text, _config())[0]

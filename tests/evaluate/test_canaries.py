"""Canary generation, planting, and exposure (The Secret Sharer)."""
import json
import math

from pipeline.core.canaries import CanaryConfig, exposure, generate, plant_canaries, present


def test_canaries_are_deterministic_and_follow_their_format():
    cfg = CanaryConfig(count=2, formats=["code {4}-{2}"], seed=7)
    a, b = generate(cfg), generate(cfg)
    assert a == b and len(a) == 2
    assert all(len(c["text"]) == len("code 1234-56") and c["text"][9] == "-" for c in a)
    assert generate(CanaryConfig(count=2, formats=["code {4}-{2}"], seed=8)) != a


def test_planting_inserts_each_canary_repeats_times_and_records_it():
    rows = [{"id": f"d{i}", "text": f"Sentence one of doc {i}. Sentence two.", "source": "s", "meta": "{}"} for i in range(5)]
    cfg = CanaryConfig(count=1, repeats=3, formats=["pin {6}"])
    planted_rows, planted = plant_canaries(rows, cfg)
    assert len(planted_rows) == 5 and rows[0]["text"].startswith("Sentence one")  # input untouched
    counts = present(planted, [r["text"] for r in planted_rows])
    assert counts == {planted[0]["id"]: 3}
    hosts = [r for r in planted_rows if json.loads(r["meta"]).get("canaries")]
    assert sum(len(json.loads(r["meta"])["canaries"]) for r in hosts) == 3


class _FakeLM:
    """Gives the memorised text a high likelihood and everything else a fixed low one."""

    def __init__(self, memorised):
        self.memorised = memorised

    def loglikelihood_rolling(self, texts):
        return [0.0 if t == self.memorised else -50.0 - (hash(t) % 7) for t in texts]


def test_exposure_is_maximal_for_a_memorised_canary_and_low_otherwise():
    c = generate(CanaryConfig(count=1, formats=["secret {6}"]))[0]
    hit = exposure(_FakeLM(c["text"]), c, candidates=63, seed=1)
    assert hit["rank"] == 1 and hit["exposure"] == math.log2(64) == hit["max_exposure"]
    miss = exposure(_FakeLM("something else"), c, candidates=63, seed=1)
    assert miss["rank"] > 1 and miss["exposure"] < hit["exposure"]

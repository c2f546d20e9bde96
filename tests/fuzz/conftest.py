"""Fuzzing profile: a few hundred examples per target in CI (the same ones every run). Setting
LMDAG_FUZZ_EXAMPLES to a larger number gives a longer run with fresh random inputs each time.
The number of inputs each target ran is printed at the end of the session.
"""
import os
from collections import Counter

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("LMDAG_FUZZ_EXAMPLES", "200"))
settings.register_profile(
    "lmdag-fuzz", max_examples=EXAMPLES, deadline=None, database=None,
    derandomize="LMDAG_FUZZ_EXAMPLES" not in os.environ,  # CI: reproducible; long runs explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.load_profile("lmdag-fuzz")

RAN: Counter = Counter()  # target -> inputs run


def pytest_terminal_summary(terminalreporter):
    if RAN:
        terminalreporter.write_line(f"fuzz: {sum(RAN.values())} inputs in total: "
                                    + ", ".join(f"{k} {v}" for k, v in sorted(RAN.items())))

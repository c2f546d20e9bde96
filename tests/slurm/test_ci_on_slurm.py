"""The ci experiment through workflow/profiles/slurm on a real one-node Slurm cluster: every job
goes through sbatch and appears in sacct, filter and scrub run as per-shard jobs, and the
results equal a local run's (same steps, same keys, same stats apart from timings)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI = "experiment=ci"
SHARDED = "overrides=filter.shard_jobs=2 scrub.shard_jobs=2"  # unkeyed: the same steps as locally


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]


@pytest.fixture(scope="module")
def runs(slurm_env, tmp_path_factory):
    """(local results, slurm results, the Slurm run's output); both runs at once, on 2 cores."""
    local, slurm = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("on-slurm")
    with open(local / "snakemake.log", "w") as local_log:
        local_run = subprocess.Popen(snakemake(local, "-c", "1", "--profile", str(REPO / "workflow/profiles/local"),
                                               "--config", CI), stdout=local_log, stderr=subprocess.STDOUT)
        on_slurm = subprocess.run(
            snakemake(slurm, "--profile", str(REPO / "workflow/profiles/slurm"), "--jobs", "4",
                      # the test cluster answers at once: look at the jobs every 2 s, not every 40 s
                      "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
                      "--config", CI, SHARDED),
            env=slurm_env, capture_output=True, text=True)
        local_rc = local_run.wait()
    assert on_slurm.returncode == 0, on_slurm.stdout[-4000:] + on_slurm.stderr[-6000:]
    assert local_rc == 0, (local / "snakemake.log").read_text()[-4000:]
    return local / "results", slurm / "results", on_slurm.stdout + on_slurm.stderr


def points(results: Path) -> list[dict]:
    """Each sweep point's steps: {step: {stage, key, inputs}}."""
    (manifest,) = (results / ".plan").glob("points-*.json")
    return [p["steps"] for p in json.loads(manifest.read_text())["points"]]


def without_timings(value):
    """Stats minus what depends on the clock: wall times, rates (…_s) and MFU."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not (k.endswith("_s") or k == "mfu")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def job_stats(output: str) -> dict[str, int]:
    """Rule -> job count from Snakemake's 'Job stats' table."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.slow
def test_the_same_steps_keys_and_stats_as_a_local_run(runs):
    local, slurm, _ = runs
    (steps,) = points(local)
    assert points(slurm) == [steps]
    for name, step in steps.items():
        a = json.loads((local / name / step["key"] / "stats.json").read_text())
        b = json.loads((slurm / name / step["key"] / "stats.json").read_text())
        assert without_timings(a) == without_timings(b), name
    report = (slurm / "report/report.md").read_text()
    assert all(name in report for name in ("filter", "pretrain"))


@pytest.mark.slow
def test_every_job_went_through_slurm_and_appears_in_sacct(runs, slurm_env):
    _, slurm, output = runs
    submitted = {rule: n for rule, n in job_stats(output).items() if rule not in ("all", "dedup_shards")}  # local rules
    assert submitted["filter_shards"] == 2 and submitted["scrub_shards"] == 2 and submitted["pretrain"] == 1
    rows = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--starttime", "now-1day",
                           "--format=JobIDRaw,State,Comment"], env=slurm_env, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    by_rule: dict[str, list[str]] = {}
    for line in rows:
        job_id, state, comment = line.split("|", 2)
        m = re.match(r"rule_(\w+?)(_wildcards_|$)", comment)
        if m:
            by_rule.setdefault(m.group(1), []).append(state)
    assert {rule: len(states) for rule, states in by_rule.items()} == submitted
    assert {state for states in by_rule.values() for state in states} == {"COMPLETED"}
    # the shard slices were temporary: gathered into their steps, then removed
    assert not any((slurm / d).is_dir() and any((slurm / d).rglob("stats.json"))
                   for d in ("filter_shards", "scrub_shards"))

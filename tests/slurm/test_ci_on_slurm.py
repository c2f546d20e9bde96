"""The ci experiment through workflow/profiles/slurm on a real one-node Slurm cluster: every job
goes through sbatch and appears in sacct, filter and scrub run as per-shard jobs, and the
results equal a local run's (same steps, same keys, same stats apart from timings)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI = "experiment=ci"
SHARDED = "overrides=filter.shard_jobs=2 scrub.shard_jobs=2"  # unkeyed: the same steps as locally
# The ci experiment's main line, every kind of rule in it: generated, per-shard (filter, scrub),
# dedup's scatter/gather with its checkpoint, training, evaluation. LMDAG_SLURM_FULL=1 runs
# every step and the report (the fine-tuning, compression and chat-evaluation branches are
# more jobs of the same generated rules, and most of the time).
MAIN_LINE = ("collect", "filter", "dedup", "scrub", "tokenize", "pretrain")


def main_line(steps) -> list:
    """The main line's steps and the (plain, not chat) evaluation of the pretrained model."""
    line = [s for s in steps if s.stage in MAIN_LINE]
    line += [s for s in steps if s.stage == "evaluate" and s.inputs["model"].stage == "pretrain"
             and not s.config.get("apply_chat_template")][:1]
    return line


def targets() -> list[str]:
    if os.environ.get("LMDAG_SLURM_FULL") == "1":
        return []  # rule all
    from workflow.plan import build_plan

    (point,) = build_plan({"experiment": "ci"})
    return [f"results/{s.name}/{s.key}" for s in main_line(point.steps)]


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]


@pytest.fixture(scope="module")
def runs(slurm_env, tmp_path_factory):
    """(local results, slurm results, the Slurm run's output); both runs at once, on 2 cores."""
    local, slurm = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("on-slurm")
    goal = targets()
    with open(local / "snakemake.log", "w") as local_log:
        local_run = subprocess.Popen(snakemake(local, *goal, "-c", "2", "--profile", str(REPO / "workflow/profiles/local"),
                                               "--config", CI), stdout=local_log, stderr=subprocess.STDOUT)
        on_slurm = subprocess.run(
            snakemake(slurm, *goal, "--profile", str(REPO / "workflow/profiles/slurm"), "--jobs", "4",
                      # the test cluster answers at once: look at the jobs every 2 s, not every 40 s
                      "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
                      "--config", CI, SHARDED),
            env=slurm_env, capture_output=True, text=True)
        local_rc = local_run.wait()
    assert on_slurm.returncode == 0, on_slurm.stdout[-4000:] + on_slurm.stderr[-6000:]
    assert local_rc == 0, (local / "snakemake.log").read_text()[-4000:]
    return local / "results", slurm / "results", on_slurm.stdout + on_slurm.stderr


def main_line_steps():
    from workflow.plan import build_plan

    (point,) = build_plan({"experiment": "ci"})
    return main_line(point.steps)


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


def submitted_jobs(output: str) -> dict[str, int]:
    """Rule -> jobs sent to Slurm, from the run's log: each such job opens with ``rule NAME:``
    (local ones with ``localrule``). The "Job stats" table cannot say it: it is printed before
    dedup's checkpoint adds the per-shard signature jobs."""
    return dict(Counter(re.findall(r"^rule (\w+):$", output, re.M)))


@pytest.mark.slow
def test_the_same_steps_keys_and_stats_as_a_local_run(runs):
    local, slurm, _ = runs
    (steps,) = points(local)
    assert points(slurm) == [steps]
    ran = [name for name, step in steps.items() if (local / name / step["key"] / "stats.json").is_file()]
    assert {s.stage for s in main_line_steps()} == {*MAIN_LINE, "evaluate"} and set(ran) >= {
        s.name for s in main_line_steps()}
    for name in ran:
        a = json.loads((local / name / steps[name]["key"] / "stats.json").read_text())
        b = json.loads((slurm / name / steps[name]["key"] / "stats.json").read_text())
        assert without_timings(a) == without_timings(b), name
    if not targets():
        assert "pretrain" in (slurm / "report/report.md").read_text()


@pytest.mark.slow
def test_every_job_went_through_slurm_and_appears_in_sacct(runs, slurm_env):
    _, slurm, output = runs
    submitted = submitted_jobs(output)
    assert submitted["filter_shards"] == 2 and submitted["scrub_shards"] == 2 and submitted["pretrain"] == 1
    assert submitted["dedup_signatures"] >= 2 and "dedup_shards" not in submitted  # its checkpoint runs locally
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

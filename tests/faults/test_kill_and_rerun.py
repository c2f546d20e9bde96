"""SIGKILL the workflow while each stage of the main line runs, ``snakemake --unlock``, run
again: the DAG completes, a killed step is never taken as finished, and every step's
stats.json equals an uninterrupted run's (timings and where training resumed aside).

The ci recipe, cut to seconds of work per job, from collect to the evaluation of the
pretrained model (the rules every other step reuses: generated, per-shard, dedup's
scatter/gather with its checkpoint, training, evaluation).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.publish import is_complete

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
TINY = [
    "collect.builtin_groups=[news,web]", "collect.max_docs_per_source=8", "collect.shard_docs=4",
    "filter.shard_jobs=2", "scrub.shard_jobs=2",
    "tokenize.vocab_size=300", "tokenize.n_sentinels=2", "tokenize.train_max_bytes=100000",
    "train.steps=12", "train.batch_size=4", "train.warmup_steps=1", "train.eval_every=6", "train.eval_batches=1",
    "train.checkpoint_every=2", "train.log_every=1", "train.progress=false", "pretrain.final_eval_windows=4",
    "pretrain.sample_tokens=4", "evaluate.tasks=[piqa]", "evaluate.limit=4", "evaluate.heldout_docs=4",
    "evaluate.bootstrap_iters=0", "evaluate.contamination_max_docs=4",
]
KILLED = ("collect", "filter_shards", "filter", "dedup_signatures", "dedup_buckets", "dedup_clusters", "dedup",
          "scrub_shards", "scrub", "tokenize",
          "pretrain", "evaluate")


def config(results: Path) -> list[str]:
    return ["--config", "experiment=ci", "overrides=" + " ".join([*TINY, f"results_dir={results}"])]


def main_line(results: Path) -> list[str]:
    """The targets: every main-line step and the plain evaluation of the pretrained model."""
    from workflow.plan import build_plan

    (point,) = build_plan({"experiment": "ci", "overrides": " ".join([*TINY, f"results_dir={results}"])})
    line = [s for s in point.steps if s.stage in ("collect", "filter", "dedup", "scrub", "tokenize", "pretrain")]
    line += [s for s in point.steps if s.stage == "evaluate" and s.inputs["model"].stage == "pretrain"
             and not s.config.get("apply_chat_template")][:1]
    return [str(results / s.name / s.key) for s in line]


def snakemake(workdir: Path, results: Path, *args: str, **popen):
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-c", "1",
           "--profile", str(REPO / "workflow/profiles/local"), *args, *config(results)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each job's "rule NAME:" reaches the log as it starts
    return subprocess.Popen(cmd, stdout=popen.pop("stdout", subprocess.PIPE), stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env, **popen)  # its own process group: killed with its jobs


def finished(proc) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    return out


def without_run_details(value):
    """Stats minus what depends on the clock or on where a killed training run resumed (and
    the code fingerprint: the same code in one checkout, but engineers edit a shared tree)."""
    if isinstance(value, dict):
        return {k: without_run_details(v) for k, v in value.items()
                if not (k.endswith("_s") or k in ("mfu", "resumed_from_step", "source"))}
    if isinstance(value, list):
        return [without_run_details(v) for v in value]
    return value


def kill_while(rules: tuple[str, ...], workdir: Path, results: Path, targets: list[str], rng: random.Random) -> str | None:
    """Run the workflow until a job of one of ``rules`` starts (the first is the one wanted; the
    others come after it in the DAG, and a job of theirs starting first means the wanted rule
    had already finished), then SIGKILL everything at a random moment of that job; -> the
    rule killed, None when the workflow ended first (nothing of ``rules`` was left to run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"kill-{rules[0]}.log"
    with open(log, "w") as out:
        proc = snakemake(workdir, results, *targets, stdout=out)
        started = []
        while proc.poll() is None and not started:
            text = log.read_text()
            started = [r for r in rules if f"rule {r}:\n" in text]  # ("localrule NAME:" too)
            time.sleep(0.1)
        if not started:
            return None
        # a random point of the job: on an idle machine most take one to a few seconds, start-up included
        time.sleep(rng.uniform(0.0, 1.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    unlock = snakemake(workdir, results, "--unlock")
    finished(unlock)
    return started[0]


@pytest.mark.slow
def test_killed_at_every_stage_the_rerun_equals_an_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    finished(snakemake(tmp_path / "w1", reference, *main_line(reference)))
    targets = main_line(killed)
    rng = random.Random(0)
    kills = []
    for i, rule in enumerate(KILLED):
        if rule not in kills:  # (a rule may have been killed already, in place of an earlier one)
            kills.append(kill_while(KILLED[i:], tmp_path / "w2", killed, targets, rng))
    # most rules were killed mid-job; a job shorter than its delay lets the kill land in the next one,
    # and a rule finished before its turn has a later one killed in its place
    assert None not in kills[:-1] and len(set(kills) - {None}) >= 8, kills
    for target in map(Path, targets):  # half-written work is never taken as finished
        assert not target.exists() or is_complete(target), target
    dry = snakemake(tmp_path / "w2", killed, "-n", *targets)
    out = finished(dry)
    rerun = finished(snakemake(tmp_path / "w2", killed, *targets))
    assert "Nothing to be done" not in out or "Nothing to be done" in rerun
    for ref_dir, dir_ in zip(main_line(reference), targets):
        # (paths inside stats name each run's own results directory)
        a = json.loads((Path(ref_dir) / "stats.json").read_text().replace(str(reference), "RESULTS"))
        b = json.loads((Path(dir_) / "stats.json").read_text().replace(str(killed), "RESULTS"))
        assert without_run_details(a) == without_run_details(b), dir_
    # killed temporary directories were cleaned by the rerun of their step
    assert not [p for p in killed.rglob(".tmp-*") if p.is_dir()]

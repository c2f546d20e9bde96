"""The DAG end to end on the tiny `ci` recipe, and what Snakemake says and reruns after a change:
-n, -R, --until, --unlock, --rulegraph, --report, sweeps sharing steps, stale results."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import compose
from pipeline.core.dag import build_steps
from workflow.plan import build_plan, expand_grid

REPO = Path(__file__).resolve().parents[2]
CI = ["--config", "experiment=ci"]


def snakemake(workdir, *args, check=True, cores=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *(["-c", "2"] if cores else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


class Jobs(dict):
    """Rule -> job count of a dry run; its text (with Snakemake's reasons) shows when a test fails."""

    def __init__(self, counts: dict, text: str):
        super().__init__(counts)
        self.text = text

    def __repr__(self) -> str:
        return f"{dict(self)!r}\n--- dry run ---\n{self.text[-4000:]}"


def planned_jobs(workdir, *args) -> Jobs:
    """Rule -> job count of a dry run (the 'Job stats' table), empty when nothing is to be done."""
    proc = snakemake(workdir, "-n", *args)
    out = proc.stdout
    if "Job stats:" not in out:
        assert "Nothing to be done" in out, out
        return Jobs({}, out + proc.stderr)
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    return Jobs(counts, out + proc.stderr)


def ci_steps(*overrides):
    return build_steps(compose(["experiment=ci", *overrides]))


def stage_of(rule: str) -> str:
    """dedup's scatter/gather rules are dedup_<part>; every other rule is named after its stage."""
    return "dedup" if rule.startswith("dedup_") else rule


def downstream_of(stage: str) -> dict[str, int]:
    """Stage -> how many steps of it read ``stage``'s steps, directly or not (``stage`` included)."""
    found, counts = set(), {}
    for s in ci_steps():
        if s.stage == stage or any(i.name in found for i in s.inputs.values()):
            found.add(s.name)
            counts[s.stage] = counts.get(s.stage, 0) + 1
    return counts


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    snakemake(work, *CI)
    return work


@pytest.mark.slow
def test_ci_pipeline_runs_every_step_and_the_report(ci_run):
    (manifest,) = (ci_run / "results/.plan").glob("points-*.json")
    (point,) = json.loads(manifest.read_text())["points"]
    for name, entry in point["steps"].items():
        d = ci_run / "results" / name / entry["key"]
        assert {"config.yaml", "stats.json", "log.txt"} <= {p.name for p in d.iterdir()}, name
        stats = json.loads((d / "stats.json").read_text())
        assert stats["step"] == name and stats["key"] == entry["key"] and stats["source"]
        if "docs_in" in stats:
            assert stats["docs_in"] == stats["docs_kept"] + sum(stats["dropped"].values()), name
        # the job ran from its plan file, and Snakemake's log: file holds the step's log
        assert (ci_run / "results/.plan" / name / f"{entry['key']}.json").is_file(), name
        assert "done in" in (ci_run / "results/.logs" / name / f"{entry['key']}.log").read_text(), name
    html = (ci_run / "results/report/index.html").read_text()
    assert "Data funnel" in html and "data:image/png;base64," in html and "Run overview" in html
    assert "books/shakespeare" in (ci_run / "results/report/report.md").read_text()
    assert not list((ci_run / "results").glob("*/.tmp-*")), "a temporary step dir was left behind"


@pytest.mark.slow
def test_finished_dag_has_nothing_to_do(ci_run):
    jobs = planned_jobs(ci_run, *CI)
    assert not jobs, repr(jobs)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["evaluate", "collect"])
def test_changing_one_stage_reruns_it_and_downstream_only(ci_run, stage):
    field, value = _an_int_field(stage)
    jobs = planned_jobs(ci_run, "--config", "experiment=ci", f"overrides={stage}.{field}={value + 1}")
    expected = downstream_of(stage)
    assert {stage_of(r) for r in jobs} == set(expected) | {"report", "all"}, repr(jobs)
    assert all(jobs[s] == n for s, n in expected.items()), repr(jobs)


@pytest.mark.slow
def test_rerun_a_stage_with_R(ci_run):
    jobs = planned_jobs(ci_run, *CI, "-R", "collect")
    assert {stage_of(r) for r in jobs} == {s.stage for s in ci_steps()} | {"report", "all"}


@pytest.mark.slow
def test_until_stops_after_the_stage(ci_run):
    jobs = planned_jobs(ci_run, *CI, "-R", "collect", "--until", "collect")
    assert set(jobs) == {"collect"}


def test_until_a_step_or_a_chained_stage_names_the_step_directories():
    from workflow.plan import rewrite_until, unique_steps

    steps = unique_steps(build_plan({"experiment": "ci"}))
    key = {name: k for name, k in steps}
    dirs = lambda *names: [f"results/{n}/{key[n]}" for n in names]  # noqa: E731
    # finetune's steps read each other (sft -> dpo, reward -> rl): its last ones stand for it
    assert rewrite_until(["-n", "--until", "finetune", "-c", "2"], steps, Path("results")) == (
        ["finetune"], dirs("lora", "dpo", "rl", "safety"))
    assert rewrite_until(["--until=sft"], steps, Path("results")) == (["sft"], dirs("sft"))
    assert rewrite_until(["--until", "collect", "tokenize"], steps, Path("results")) is None  # rules as they are
    assert rewrite_until(["-R", "finetune"], steps, Path("results")) is None


@pytest.mark.slow
def test_until_finetune_says_the_command_that_runs_it_and_that_command_does(tmp_path):
    proc = snakemake(tmp_path, "-n", *CI, "--until", "finetune", check=False)
    assert proc.returncode != 0 and "lmdag error: --until finetune" in proc.stderr, proc.stderr[-2000:]
    targets = proc.stderr.split("name the step directories instead:\n  --until ", 1)[1].split()
    # Snakemake's own --until finetune stopped here with "Out of jobs ready to be started" once sft
    # was done: it starts nothing that reads a --until job, and dpo reads sft
    snakemake(tmp_path, *CI, "--until", *targets)
    finetuned = {s.name for s in ci_steps() if s.stage == "finetune"}
    assert {d.name for d in (tmp_path / "results").iterdir()} >= finetuned
    assert not (tmp_path / "results" / "report").exists()  # nothing past the named steps


@pytest.mark.slow
def test_snakemake_commands_users_type(ci_run, tmp_path):
    assert "Unlock" in (snakemake(ci_run, "--unlock", *CI, cores=False).stdout
                        + snakemake(ci_run, "--unlock", *CI, cores=False).stderr)
    graph = snakemake(ci_run, "--rulegraph", "mermaid-js", *CI, cores=False).stdout
    assert all(s.stage in graph for s in ci_steps()) and "report" in graph
    snakemake(ci_run, "--report", str(tmp_path / "snakemake-report.html"), *CI, cores=False)
    assert (tmp_path / "snakemake-report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_a_result_made_by_other_code_is_pointed_out_not_recomputed(ci_run):
    step = next(s for s in ci_steps() if s.stage == "filter")
    stats_path = ci_run / "results" / step.name / step.key / "stats.json"
    original = stats_path.read_text()
    stats = json.loads(original)
    stats["source"]["pipeline/filter/gopher.py"] = "0" * 16  # as if gopher.py changed since
    stats_path.write_text(json.dumps(stats))
    try:
        proc = snakemake(ci_run, "-n", *CI)
        assert f"stale: results/{step.name}/{step.key}" in proc.stderr and "pipeline/filter" in proc.stderr
        assert "Nothing to be done" in proc.stdout
        status = subprocess.run([sys.executable, "-m", "pipeline", "status", "experiment=ci"], cwd=ci_run,
                                capture_output=True, text=True, check=True).stdout
        assert re.search(rf"^filter\s+{step.key}\s+filter\(docs=collect\)\s+stale: pipeline/filter", status, re.M)
        assert re.search(r"^pretrain\s+\w+\s+pretrain\(tokens=tokenize\)\s+done$", status, re.M)
    finally:
        stats_path.write_text(original)


def _an_int_field(stage):
    cfg = compose(["experiment=ci"])[stage]
    for k, v in cfg.items():
        if isinstance(v, int) and not isinstance(v, bool) and k not in ("workers", "sample_size", "threads"):
            return k, v
    raise AssertionError(f"{stage} has no int field to vary")


def test_sweep_expands_the_grid_and_shares_unchanged_steps():
    field, value = _an_int_field("evaluate")
    grid = f"evaluate.{field}={value},{value + 1}"
    assert expand_grid([grid, "seed=1"]) == [[f"evaluate.{field}={value}", "seed=1"],
                                             [f"evaluate.{field}={value + 1}", "seed=1"]]
    points = build_plan({"experiment": "ci", "sweep": grid})
    assert len(points) == 2
    for a, b in zip(*(p.steps for p in points)):
        assert (a.key == b.key) == (a.stage != "evaluate"), a.name


def test_sweep_file(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("experiment: ci\noverrides: [seed=7]\ngrid:\n  collect.max_docs_per_source: [3, 4, 5]\n")
    points = build_plan({"sweep": str(spec)})
    assert [p.name for p in points] == [f"collect.max_docs_per_source={n}" for n in (3, 4, 5)]
    assert all("experiment=ci" in p.overrides and "seed=7" in p.overrides for p in points)
    assert len({p.steps[0].key for p in points}) == 3


def test_sweep_file_with_unknown_key_is_an_error(tmp_path):
    from pipeline.core.errors import StageError

    spec = tmp_path / "s.yaml"
    spec.write_text("grids: {}\n")
    with pytest.raises(StageError, match="unknown key"):
        build_plan({"sweep": str(spec)})


@pytest.mark.slow
def test_sweep_dry_run_reuses_every_step_it_does_not_change(ci_run):
    lr = compose(["experiment=ci"]).train.lr
    jobs = planned_jobs(ci_run, "--config", "experiment=ci", f"sweep=train.lr={lr},{lr / 2}")
    # Only the new point's training, fine-tuning and evaluation run; the data steps are shared.
    assert dict(jobs) == {**downstream_of("pretrain"), "report": 1, "all": 1}, repr(jobs)

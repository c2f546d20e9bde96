"""The DAG end to end on the tiny `ci` recipe, and what Snakemake would rerun after a change."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import compose
from pipeline.stage import STAGES, stage_module
from workflow.plan import build_plan, expand_grid

REPO = Path(__file__).resolve().parents[2]


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-c", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def planned_jobs(workdir, *args) -> dict[str, int]:
    """Rule -> job count of a dry run (the 'Job stats' table), {} when nothing is to be done."""
    out = snakemake(workdir, "-n", *args).stdout
    if "Job stats:" not in out:
        assert "Nothing to be done" in out, out
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def stage_of(rule: str) -> str:
    """A split stage's step rules are named <stage>_<step> (dedup_signatures ...)."""
    head = rule.rsplit("_", 1)[0]
    return head if rule not in STAGES and head in STAGES else rule


def downstream_of(stage: str) -> set[str]:
    """The stage and every stage that reads it, directly or not."""
    found = {stage}
    for name in STAGES:
        if any(up in found for up in stage_module(name).INPUTS):
            found.add(name)
    return found


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    snakemake(work, "--config", "experiment=ci")
    return work


@pytest.mark.slow
def test_ci_pipeline_runs_every_stage_and_the_report(ci_run):
    (manifest,) = (ci_run / "results/.plan").glob("points-*.json")
    (point,) = json.loads(manifest.read_text())
    for stage, key in point["keys"].items():
        d = ci_run / "results" / stage / key
        assert {"config.yaml", "stats.json", "log.txt"} <= {p.name for p in d.iterdir()}, stage
        stats = json.loads((d / "stats.json").read_text())
        if "docs_in" in stats:
            assert stats["docs_in"] == stats["docs_kept"] + sum(stats["dropped"].values()), stage
    html = (ci_run / "results/report/index.html").read_text()
    assert "Data funnel" in html and "data:image/png;base64," in html
    assert "books/shakespeare" in (ci_run / "results/report/report.md").read_text()
    assert not list((ci_run / "results").glob("*/.tmp-*")), "a temporary stage dir was left behind"


@pytest.mark.slow
def test_finished_dag_has_nothing_to_do(ci_run):
    assert planned_jobs(ci_run, "--config", "experiment=ci") == {}


@pytest.mark.slow
@pytest.mark.parametrize("stage", [s for s in STAGES if s != "collect"][-1:] + ["collect"])
def test_changing_one_stage_reruns_it_and_downstream_only(ci_run, stage):
    field, value = _an_int_field(stage)
    jobs = planned_jobs(ci_run, "--config", "experiment=ci", f"overrides={stage}.{field}={value + 1}")
    assert {stage_of(r) for r in jobs} == downstream_of(stage) | {"report", "all"}
    assert all(jobs[s] == 1 for s in downstream_of(stage))


@pytest.mark.slow
def test_rerun_a_stage_with_R(ci_run):
    jobs = planned_jobs(ci_run, "--config", "experiment=ci", "-R", "collect")
    assert {stage_of(r) for r in jobs} == set(STAGES) | {"report", "all"}


@pytest.mark.slow
def test_until_stops_after_the_stage(ci_run):
    jobs = planned_jobs(ci_run, "--config", "experiment=ci", "-R", "collect", "--until", "collect")
    assert set(jobs) == {"collect"}


def _an_int_field(stage):
    cfg = compose(["experiment=ci"])[stage]
    for k, v in cfg.items():
        if isinstance(v, int) and not isinstance(v, bool) and k not in ("workers", "sample_size"):
            return k, v
    raise AssertionError(f"{stage} has no int field to vary")


def test_sweep_expands_the_grid_and_shares_unchanged_stages():
    last = list(STAGES)[-1]
    field, value = _an_int_field(last)
    grid = f"{last}.{field}={value},{value + 1}"
    assert expand_grid([grid, "seed=1"]) == [[f"{last}.{field}={value}", "seed=1"],
                                             [f"{last}.{field}={value + 1}", "seed=1"]]
    points = build_plan({"experiment": "ci", "sweep": grid})
    assert len(points) == 2
    for stage in STAGES:
        keys = {p.keys[stage] for p in points}
        assert len(keys) == (2 if stage in downstream_of(last) else 1), stage


def test_sweep_file(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("experiment: ci\noverrides: [seed=7]\ngrid:\n  collect.max_docs_per_source: [3, 4, 5]\n")
    points = build_plan({"sweep": str(spec)})
    assert [p.name for p in points] == [f"collect.max_docs_per_source={n}" for n in (3, 4, 5)]
    assert all("experiment=ci" in p.overrides and "seed=7" in p.overrides for p in points)
    assert len({p.keys["collect"] for p in points}) == 3


def test_sweep_file_with_unknown_key_is_an_error(tmp_path):
    from pipeline.core.errors import StageError

    spec = tmp_path / "s.yaml"
    spec.write_text("grids: {}\n")
    with pytest.raises(StageError, match="unknown key"):
        build_plan({"sweep": str(spec)})


@pytest.mark.slow
def test_sweep_dry_run_reuses_every_stage_it_does_not_change(ci_run):
    lr = compose(["experiment=ci"]).train.lr
    jobs = planned_jobs(ci_run, "--config", "experiment=ci", f"sweep=train.lr={lr},{lr / 2}")
    # Only the new point's training and evaluation run; everything upstream is shared.
    assert jobs == {"pretrain": 1, "evaluate": 1, "report": 1, "all": 1}

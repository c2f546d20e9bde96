"""filter and scrub as one job per slice of their shards, then a gather job: the step's
directory is the one a single job writes (same files, same stats), whatever the job count."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.docs import doc, read_rows, shard_paths, write_table
from pipeline.core.errors import StageError
from pipeline.core.plan import step_dir, write_plan
from pipeline.core.shard_jobs import parse_part, part_names
from pipeline.core.step import Step
from pipeline.runner import run_plan
from tests.filter.test_rules import PROSE

REPO = Path(__file__).resolve().parents[2]
TIMINGS = {"wall_s", "docs_per_s"}


def corpus(n_shards: int = 5) -> list[list[dict]]:
    """Shards with documents each stage keeps, rewrites and drops (empty, off-language, PII-only)."""
    shards = []
    for s in range(n_shards):
        rows = [doc(f"s{s}-prose", PROSE + f" Write to jane{s}@example.org or call (415) 555-01{s:02d}.", "web/a"),
                doc(f"s{s}-empty", "", "web/a"),
                doc(f"s{s}-list", f"jo{s}@mail.com, ann{s}@mail.com", "web/b"),
                doc(f"s{s}-de", "Die Kommission traf sich am Dienstag, um den Haushalt zu besprechen. " * 6, "web/b")]
        shards.append(rows[: 1 + s % 4] if s else rows)
    return shards


@pytest.fixture
def planned(tmp_path):
    """A finished input step (5 shards) and a plan for a filter or scrub step reading it."""
    results = tmp_path / "results"
    source = Step("collect", "collect", {})
    for i, rows in enumerate(corpus()):
        write_table(step_dir(results, "collect", source.key) / f"shard-{i:05d}.parquet", rows)
    (step_dir(results, "collect", source.key) / "stats.json").write_text("{}")

    def plan(stage: str, name: str, jobs: int) -> tuple[Path, Step]:
        step = Step(name, stage, {"shard_jobs": jobs}, {"docs": source})
        return write_plan(step, results), step

    return results, plan


def directory_contents(d: Path) -> dict:
    """Every document file's rows and the stats, timings left out."""
    files = {str(p.relative_to(d)): read_rows(p) for p in sorted(d.rglob("shard-*.parquet"))}
    stats = {k: v for k, v in json.loads((d / "stats.json").read_text()).items() if k not in TIMINGS}
    return {"files": files, "stats": stats}


@pytest.mark.parametrize("stage", ["filter", "scrub"])
@pytest.mark.parametrize("jobs", [1, 3, 7])  # 7 > 5 shards: two jobs read nothing
def test_part_jobs_then_gather_equal_one_job(planned, stage, jobs):
    results, plan = planned
    one_plan, one = plan(stage, f"{stage}_one", 0)
    split_plan, split = plan(stage, f"{stage}_split", jobs)
    assert one.key == split.key  # shard_jobs is unkeyed: the same step, whatever the job count
    whole = run_plan(one_plan)
    parts_dir = step_dir(results, split.name, split.key, "shards")
    for name in part_names(jobs):
        run_plan(split_plan, part="shards", args=[name])
        assert (parts_dir / name / "stats.json").is_file()
    gathered = run_plan(split_plan, extra_inputs={"shards": str(parts_dir)})
    a, b = directory_contents(whole), directory_contents(gathered)
    for stats in (a["stats"], b["stats"]):
        stats.pop("step")
    assert a == b
    assert a["stats"]["docs_in"] == 14 and a["stats"]["shards"] == 5
    assert a["stats"]["docs_kept"] < a["stats"]["docs_in"] and any(k.endswith("dropped/shard-00000.parquet") for k in a["files"])


def test_a_missing_or_overlapping_part_is_an_error(planned):
    results, plan = planned
    split_plan, split = plan("filter", "filter", 3)
    parts_dir = step_dir(results, split.name, split.key, "shards")
    run_plan(split_plan, part="shards", args=["00000-of-00003"])
    run_plan(split_plan, part="shards", args=["00002-of-00003"])
    with pytest.raises(StageError, match="part 00001-of-00003 of this step is missing"):
        run_plan(split_plan, extra_inputs={"shards": str(parts_dir)})
    assert not step_dir(results, split.name, split.key).exists()  # nothing that looks finished
    # a part from a run with another job count covers other shards: read twice, or never
    (parts_dir / "00001-of-00003").mkdir()
    records = json.loads((parts_dir / "00000-of-00003" / "shards.json").read_text())
    (parts_dir / "00001-of-00003" / "shards.json").write_text(json.dumps(records))
    (parts_dir / "00001-of-00003" / "stats.json").write_text("{}")
    with pytest.raises(StageError, match=r"do not cover .* once: missing \['shard-00001.parquet', "
                                         r"'shard-00004.parquet'\], read twice \['shard-00000.parquet'"):
        run_plan(split_plan, extra_inputs={"shards": str(parts_dir)})


def test_bad_part_names_and_counts():
    assert parse_part("00003-of-00008") == (3, 8)
    for bad in ("3of8", "00008-of-00008", "-1-of-2"):
        with pytest.raises(StageError, match="index>-of-<count>"):
            parse_part(bad)
    with pytest.raises(StageError, match=r"filter.shard_jobs must be >= 0"):
        Step("filter", "filter", {"shard_jobs": -2}).typed


# collect.shard_docs: more input shards than slices, so a slice takes several
OVERRIDES = "filter.shard_jobs=3 scrub.shard_jobs=2 collect.shard_docs=12"


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-c", "2", *args,
           "--config", "experiment=ci", f"overrides={OVERRIDES}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_snakemake_plans_one_job_per_slice_and_a_gather(tmp_path):
    out = _snakemake(tmp_path, "-n").stdout
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    for rule, count in (("filter_shards", 3), ("filter", 1), ("scrub_shards", 2), ("scrub", 1)):
        assert f"\n{rule} " in table and any(line.split() == [rule, str(count)] for line in table.splitlines()), table


@pytest.mark.slow
def test_snakemake_runs_the_slices_and_removes_them_once_gathered(tmp_path):
    from workflow.plan import build_plan

    (point,) = build_plan({"experiment": "ci", "overrides": OVERRIDES})
    (step,) = [s for s in point.steps if s.stage == "filter"]
    # the step's directory as the target (with --until, Snakemake keeps temp() files it gathered)
    _snakemake(tmp_path, f"results/{step.name}/{step.key}")
    (filter_dir,) = (tmp_path / "results/filter").iterdir()
    stats = json.loads((filter_dir / "stats.json").read_text())
    (collect_dir,) = (tmp_path / "results/collect").iterdir()
    assert stats["shards"] == len(shard_paths(collect_dir)) == len(shard_paths(filter_dir)) > 3
    assert stats["docs_in"] == stats["docs_kept"] + sum(stats["dropped"].values())
    logs = sorted(p.name for p in (tmp_path / f"results/.logs/filter_shards/{filter_dir.name}").iterdir())
    assert logs == [f"{n}.log" for n in part_names(3)]
    assert not list((tmp_path / "results/filter_shards" / filter_dir.name).glob("*"))  # temp(): removed once gathered

"""conf/sweep/architectures.yaml plans one point per family of conf/family/: each point's pretrain
step trains that family's architecture and objective, and nothing else differs between them
(the same curated data and tokenizer, the same model sizes and compute)."""
from pathlib import Path

import pytest
import yaml

from workflow.plan import build_plan

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "conf" / "sweep" / "architectures.yaml"
FAMILIES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "conf" / "family").glob("*.yaml"))}
DATA_STEPS = ("collect", "filter", "dedup", "scrub", "tokenize")


@pytest.fixture(scope="module")
def points():
    return {p.name: {s.name: s for s in p.steps} for p in build_plan({"sweep": str(SWEEP)})}


def test_every_family_is_a_point_of_the_sweep(points):
    assert sorted(points) == sorted(f"+family={name}" for name in FAMILIES)


def test_each_point_pretrains_its_familys_architecture_and_objective(points):
    for name, family in FAMILIES.items():
        cfg = points[f"+family={name}"]["pretrain"].config
        for group in ("model", "train"):
            for key, value in family[group].items():
                assert cfg[group][key] == value, (name, f"{group}.{key}")


def test_the_points_share_the_data_steps_and_differ_in_pretraining(points):
    for step in DATA_STEPS:
        assert len({steps[step].key for steps in points.values()}) == 1, step
    assert len({steps["pretrain"].key for steps in points.values()}) == len(FAMILIES)
    for steps in points.values():
        assert steps["pretrain"].inputs["tokens"].name == "tokenize"
        assert steps["evaluate_pretrain"].inputs["model"].name == "pretrain"


def test_the_points_train_with_the_same_sizes_and_compute(points):
    """Only the family's own keys may differ: every other model and train setting is equal."""
    family_keys = {(g, k) for f in FAMILIES.values() for g in ("model", "train") for k in f[g]}
    configs = [steps["pretrain"].config for steps in points.values()]
    for group in ("model", "train"):
        for key in configs[0][group]:
            if (group, key) not in family_keys:
                assert len({repr(c[group][key]) for c in configs}) == 1, f"{group}.{key}"
    assert configs[0]["train"]["steps"] == 200 and configs[0]["model"]["n_layer"] == 2


def test_the_comparison_stops_at_evaluation(points):
    """Fine-tuning, compression and serving read decoder models only: the sweep leaves them out."""
    for steps in points.values():
        assert sorted({s.stage for s in steps.values()}) == sorted([*DATA_STEPS, "pretrain", "evaluate"])


def test_make_sweeps_snakemake_command_plans_one_training_per_family(tmp_path):
    """What `make sweep SWEEP=conf/sweep/architectures.yaml` runs, as a dry run in a scratch dir:
    the data steps once, a pretrain and an evaluate per family, the report."""
    import re
    import subprocess
    import sys

    snakemake = Path(sys.executable).parent / "snakemake"
    proc = subprocess.run([str(snakemake), "-n", "-c", "1", "--profile", str(REPO / "workflow/profiles/local"),
                           "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--config", f"sweep={SWEEP}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    assert jobs["pretrain"] == jobs["evaluate"] == len(FAMILIES)
    assert all(jobs[stage] == 1 for stage in ("collect", "filter", "scrub", "tokenize", "report"))

"""Planning a sweep without composing every point with Hydra (workflow/plan.py:SweepBase): each
point's steps, configs and keys are the ones Hydra's composition gives, interpolations that
read an overridden key included; what it cannot follow goes to Hydra."""
import pytest

from pipeline.config import compose
from pipeline.core import dag
from pipeline.core.errors import StageError
from workflow.plan import SweepBase, build_plan

BASE = ["experiment=ci"]


def hydra_steps(values):
    dag._CHECKED.clear()
    return dag.build_steps(compose(BASE + values))


def same_steps(a, b):
    assert [(s.name, s.key) for s in a] == [(s.name, s.key) for s in b]
    assert [s.config for s in a] == [s.config for s in b]


@pytest.fixture(scope="module")
def base():
    return SweepBase(compose(BASE))


@pytest.mark.parametrize("values", [
    ["train.lr=1e-3", "train.warmup_steps=3"],  # read through ${train} by the pretrain step
    ["seed=7"],                                # ${seed}: collect's canaries, then evaluate's ${collect.canaries}
    ["tokenize.vocab_size=400"],               # a chain: model.vocab_size, then ${model} in pretrain
    ["filter.gopher_quality.min_doc_words=60", "evaluate.limit=5"],
])
def test_a_point_equals_hydras_composition(base, values):
    resolved = base.point(values)
    assert resolved is not None
    same_steps(dag.build_steps(resolved), hydra_steps(values))


@pytest.mark.parametrize("values", [
    ["model=cpu_10m"],                  # a group choice: Hydra composes it
    ["+train.new_key=1"],               # an addition
    ["train.lrr=1e-3"],                 # not in the schema: Hydra's error names it
    ["train.steps=many"],               # not an int: Hydra's error
    ["train={steps: 3}"],               # a whole group's value
])
def test_what_it_cannot_follow_goes_to_hydra(base, values):
    assert base.point(values) is None


def test_a_sweep_plans_as_hydra_would_and_errors_stay_hydras():
    points = build_plan({"experiment": "ci", "sweep": "train.lr=1e-3,2e-3 model=ci_tiny,cpu_2m seed=3"})
    assert len(points) == 4
    for p in points:
        same_steps(p.steps, hydra_steps(p.overrides[1:]))
    with pytest.raises(StageError, match="lrr"):
        build_plan({"experiment": "ci", "sweep": "train.lrr=1e-3,2e-3"})


@pytest.mark.slow
def test_the_planning_benchmark_runs(capsys):
    from benchmarks.plan import main

    assert main(["--naive-points", "1"]) == 0  # 0: the naive point's keys equal ours
    out = capsys.readouterr().out
    assert "ours:  200 points" in out and "points/s" in out and "keys are the same: True" in out

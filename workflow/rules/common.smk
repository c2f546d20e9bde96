# Planning: every sweep point composed once, its steps built, one plan file per step.
import sys

sys.path.insert(0, workflow.basedir)

from pipeline.core.plan import log_file, plan_file, step_dir
from pipeline.core.publish import is_complete
from pipeline.core.source import stale_parts
from workflow.plan import build_plan, results_dir, unique_steps, write_all

RESULTS = results_dir(config)
POINTS = build_plan(config)
STEPS = unique_steps(POINTS)  # (step name, key) -> Step
MANIFEST = write_all(POINTS, config)
REPORT = [f"{RESULTS}/report/index.html", f"{RESULTS}/report/report.md"]
PYTHON = sys.executable

# Step names by stage: each stage is one rule, whose `step` wildcard is one of its steps.
STAGE_STEPS = {}
for _name, _key in STEPS:
    STAGE_STEPS.setdefault(STEPS[(_name, _key)].stage, set()).add(_name)

wildcard_constraints:
    key="[0-9a-f]{12}",


def steps_of(stage):
    """A regex matching exactly the step names of a stage (a rule's `step` wildcard)."""
    return "|".join(sorted(STAGE_STEPS.get(stage, ()), key=len, reverse=True)) or "(?!)"


def planned(wildcards):
    try:
        return STEPS[(wildcards.step, wildcards.key)]
    except KeyError:
        raise ValueError(f"no planned step {wildcards.step} with key {wildcards.key}") from None


def plan_input(wildcards):
    return str(plan_file(RESULTS, wildcards.step, wildcards.key))


def input_dirs(wildcards):
    return [str(step_dir(RESULTS, s.name, s.key)) for s in planned(wildcards).inputs.values()]


def job_threads(wildcards):
    """Snakemake scales this down to --cores; stages say what they can use (resources(cfg))."""
    return job_resources(wildcards).get("threads", 1)


def job_resources(wildcards):
    s = planned(wildcards)
    declare = getattr(s.module, "resources", None)
    return declare(s.typed) if declare else {"threads": getattr(s.typed, "workers", 1)}


def step_outputs():
    """Every step directory of every point: the report reads them all."""
    return sorted(str(step_dir(RESULTS, name, key)) for name, key in STEPS)


# Results made by code that changed since: pointed out, never recomputed by themselves.
for (_name, _key), _step in STEPS.items():
    _changed = stale_parts(step_dir(RESULTS, _name, _key), _step.stage)
    if _changed:
        print(f"lmdag: stale: {step_dir(RESULTS, _name, _key)} was made before {', '.join(_changed)} "
              f"changed; rerun it with -R {_step.stage}", file=sys.stderr)

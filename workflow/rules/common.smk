# Planning: every sweep point composed once, its steps built, one plan file per step.
import shlex
import sys

sys.path.insert(0, workflow.basedir)

from pipeline.core.plan import log_file, plan_file, step_dir
from pipeline.core.publish import is_complete
from pipeline.core.shard_jobs import part_names, sharded_part
from pipeline.core.source import stale_parts
from pipeline.stage import stage_module
from workflow.plan import build_plan, results_dir, rewrite_until, unique_steps, write_all

RESULTS = results_dir(config)
POINTS = build_plan(config)
STEPS = unique_steps(POINTS)  # (step name, key) -> Step
MANIFEST = write_all(POINTS, config)

# `--until sft` (a step) and `--until finetune` (a stage whose steps read each other) cannot run
# as Snakemake reads them (workflow/plan.py: until_targets); Snakemake reads --until only after
# this file is parsed, so the command that works is printed instead of a Snakemake failure later.
_until = rewrite_until(sys.argv[1:], STEPS, RESULTS)
if _until is not None:
    sys.exit("lmdag error: --until " + " ".join(_until[0]) + " names a step, or a stage whose steps read each "
             "other, which Snakemake's --until cannot run; name the step directories instead:\n  --until "
             + " ".join(_until[1]))

REPORT = [f"{RESULTS}/report/index.html", f"{RESULTS}/report/report.md"]
# Paths reach the shell quoted (a results path with a space, a venv path with a quote); config
# values never reach it: each job reads its plan file.
PYTHON = shlex.quote(sys.executable)


onstart:
    # one run that executes jobs per results directory (workflow/lock.py); -n never gets here
    from workflow.lock import ResultsInUse, hold

    try:
        hold(RESULTS)
    except ResultsInUse as err:
        sys.exit(f"lmdag error: {err}")

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


# What a job asks for when its stage's resources(cfg) does not say (Snakemake's resources;
# the slurm executor turns them into sbatch options). mpi "": run the command as it is.
RESOURCE_DEFAULTS = {"mem_mb": 4000, "runtime": 60, "nodes": 1, "tasks": 1, "mpi": "", "gres": ""}


def rule_resources(stage):
    """The resources of a stage's rule: mem_mb, runtime, and what any of its steps' resources(cfg)
    adds (nodes, tasks, mpi and gres for multi-node training), each read per job."""
    keys = {"mem_mb", "runtime"}
    for s in STEPS.values():
        declare = getattr(s.module, "resources", None) if s.stage == stage else None
        keys |= set(declare(s.typed)) - {"threads"} if declare else set()
    unknown = keys - set(RESOURCE_DEFAULTS)
    if unknown:
        raise ValueError(f"pipeline/{stage}: resources() returns {sorted(unknown)}; known: {sorted(RESOURCE_DEFAULTS)}")
    return {k: (lambda wc, k=k: job_resources(wc).get(k, RESOURCE_DEFAULTS[k])) for k in sorted(keys)}


def shard_part_dirs(wildcards):
    """The part directories of a step split into shard jobs (shard_jobs > 0); [] otherwise."""
    s = planned(wildcards)
    part = sharded_part(s.module)
    count = part.jobs(s.typed) if part else 0
    return [str(step_dir(RESULTS, s.name, s.key, "shards") / name) for name in part_names(count)]


def gather_arg(wildcards, input):
    """The stage's rule gathers its shard jobs' parts (run-step --input shards=DIR) when it has them."""
    if not input.shards:
        return ""
    return "--input " + shlex.quote(f"shards={step_dir(RESULTS, wildcards.step, wildcards.key, 'shards')}")


def step_outputs():
    """Every step directory of every point: the report reads them all."""
    return sorted(str(step_dir(RESULTS, name, key)) for name, key in STEPS)


# Results made by code that changed since: pointed out, never recomputed by themselves.
for (_name, _key), _step in STEPS.items():
    _changed = stale_parts(step_dir(RESULTS, _name, _key), _step.stage)
    if _changed:
        print(f"lmdag: stale: {step_dir(RESULTS, _name, _key)} was made before {', '.join(_changed)} "
              f"changed; rerun it with -R {_step.stage}", file=sys.stderr)

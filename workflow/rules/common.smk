# Planning and input functions shared by every rule file.
import sys

sys.path.insert(0, workflow.basedir)

from pipeline.stage import STAGES, stage_module
from workflow.plan import build_plan, results_dir, write_plan

RESULTS = results_dir(config)
POINTS = build_plan(config)
MANIFEST = write_plan(POINTS, RESULTS)
REPORT = [f"{RESULTS}/report/index.html", f"{RESULTS}/report/report.md"]

# Keys are short hex digests; this keeps temp dirs (".tmp-...") out of the wildcard.
wildcard_constraints:
    key="[0-9a-f]{12}",

# The shell command of every stage rule: only the rule name and the key reach the shell
# (no params), so editing one stage's config never reruns an unrelated stage.
STAGE_CMD = f"{sys.executable} -m pipeline {{rule}} --planned {{wildcards.key}} {RESULTS}"


def stage_path(stage):
    return f"{RESULTS}/{stage}/{{key}}"


def upstream(stage):
    """Input function: the upstream stage directories of the point that owns this key."""

    def inputs(wildcards):
        for p in POINTS:
            if p.keys[stage] == wildcards.key:
                return [f"{RESULTS}/{up}/{p.keys[up]}" for up in stage_module(stage).INPUTS]
        raise ValueError(f"no point of the plan has {stage} key {wildcards.key}")

    return inputs


def final_outputs():
    """Every stage directory of every point: the report reads them all."""
    return sorted({f"{RESULTS}/{s}/{p.keys[s]}" for p in POINTS for s in STAGES})

# One rule per stage, generated from the plan: its `step` wildcard takes each step of that
# stage (evaluate_pretrain, evaluate_sft ...). A stage with rules of its own (dedup.smk)
# is skipped here. Only the plan file and the rule's name reach the shell.
#
# A data stage that declares a per-shard part (PARTS["shards"], pipeline/core/shard_jobs.py)
# also gets <stage>_shards: with shard_jobs: N, N jobs over slices of the input shards, which
# the stage's own rule then gathers; with N = 0 the stage's rule alone does it all.
CUSTOM_RULES = {"dedup"}

for _stage in sorted(STAGE_STEPS):
    if _stage in CUSTOM_RULES:
        continue

    if sharded_part(stage_module(_stage)):

        rule:
            name: f"{_stage}_shards"
            input:
                plan=plan_input,
                inputs=input_dirs,
            output:
                # removed once gathered: the step's directory holds hard links to the same files
                temp(directory(f"{RESULTS}/{{step}}_shards/{{key}}/{{part}}")),
            log:
                f"{RESULTS}/.logs/{{step}}_shards/{{key}}/{{part}}.log",
            wildcard_constraints:
                step=steps_of(_stage),
                part=r"\d+-of-\d+",
            resources:
                mem_mb=lambda wc: job_resources(wc).get("mem_mb", 4000),
                runtime=lambda wc: job_resources(wc).get("runtime", 60),
            shell:
                f"{PYTHON} -m pipeline run-step {{input.plan:q}} --part shards {{wildcards.part}} > {{log:q}} 2>&1"

    rule:
        name: _stage
        input:
            plan=plan_input,
            inputs=input_dirs,
            shards=shard_part_dirs,
        output:
            directory(f"{RESULTS}/{{step}}/{{key}}"),
        log:
            f"{RESULTS}/.logs/{{step}}/{{key}}.log",
        wildcard_constraints:
            step=steps_of(_stage),
        threads: job_threads
        resources:
            **rule_resources(_stage),
        params:
            gather=gather_arg,
        shell:
            f"{PYTHON} -m pipeline run-step {{input.plan:q}} {{params.gather}} --log {{log:q}} --threads {{threads}}"

# One rule per stage, generated from the plan: its `step` wildcard takes each step of that
# stage (evaluate_pretrain, evaluate_sft ...). A stage with rules of its own (dedup.smk)
# is skipped here. Only the plan file and the rule's name reach the shell.
CUSTOM_RULES = {"dedup"}

for _stage in sorted(STAGE_STEPS):
    if _stage in CUSTOM_RULES:
        continue

    rule:
        name: _stage
        input:
            plan=plan_input,
            inputs=input_dirs,
        output:
            directory(f"{RESULTS}/{{step}}/{{key}}"),
        log:
            f"{RESULTS}/.logs/{{step}}/{{key}}.log",
        wildcard_constraints:
            step=steps_of(_stage),
        threads: job_threads
        resources:
            mem_mb=lambda wc: job_resources(wc).get("mem_mb", 4000),
            runtime=lambda wc: job_resources(wc).get("runtime", 60),
        shell:
            f"{PYTHON} -m pipeline run-step {{input.plan}} --log {{log}} --threads {{threads}}"

# dedup as scatter/gather rules (pipeline/dedup/__init__.py): signatures (one job per shard)
# -> buckets -> clusters -> dedup (the removal: the step's directory). The parts write
# results/<step>_<part>/<key>/ under the step's own key.
PART = f"{PYTHON} -m pipeline run-step {{input.plan:q}} --part"


checkpoint dedup_shards:
    input:
        plan=plan_input,
        inputs=input_dirs,
    output:
        f"{RESULTS}/{{step}}_signatures/{{key}}/shards.txt",
    wildcard_constraints:
        step=steps_of("dedup"),
    localrule: True
    shell:
        # the shard names (pipeline.core.docs.SHARD_GLOB) without their suffix, one a line
        r"ls {input.inputs[0]:q} | sed -n 's/^\(shard-[0-9]*\)\.parquet$/\1/p' > {output:q}"


rule dedup_signatures:
    input:
        plan=plan_input,
        inputs=input_dirs,
    output:
        f"{RESULTS}/{{step}}_signatures/{{key}}/{{shard}}.npz",
    log:
        f"{RESULTS}/.logs/{{step}}_signatures/{{key}}/{{shard}}.log",
    wildcard_constraints:
        step=steps_of("dedup"),
        shard=r"shard-\d+",
    shell:
        f"{PART} signatures {{wildcards.shard}}.parquet > {{log:q}} 2>&1"


def dedup_signature_files(wildcards):
    """One signature file per input shard: known once the input step has run (checkpoint)."""
    listing = checkpoints.dedup_shards.get(step=wildcards.step, key=wildcards.key).output[0]
    with open(listing) as f:
        return [f"{RESULTS}/{wildcards.step}_signatures/{wildcards.key}/{name}.npz" for name in f.read().split()]


rule dedup_buckets:
    input:
        dedup_signature_files,
        plan=plan_input,
    output:
        directory(f"{RESULTS}/{{step}}_buckets/{{key}}"),
    log:
        f"{RESULTS}/.logs/{{step}}_buckets/{{key}}.log",
    wildcard_constraints:
        step=steps_of("dedup"),
    shell:
        f"{PART} buckets > {{log:q}} 2>&1"


rule dedup_clusters:
    input:
        plan=plan_input,
        inputs=input_dirs,
        buckets=f"{RESULTS}/{{step}}_buckets/{{key}}",
    output:
        directory(f"{RESULTS}/{{step}}_clusters/{{key}}"),
    log:
        f"{RESULTS}/.logs/{{step}}_clusters/{{key}}.log",
    wildcard_constraints:
        step=steps_of("dedup"),
    shell:
        f"{PART} clusters > {{log:q}} 2>&1"


rule dedup:
    input:
        plan=plan_input,
        inputs=input_dirs,
        clusters=f"{RESULTS}/{{step}}_clusters/{{key}}",
    output:
        directory(f"{RESULTS}/{{step}}/{{key}}"),
    log:
        f"{RESULTS}/.logs/{{step}}/{{key}}.log",
    wildcard_constraints:
        step=steps_of("dedup"),
    threads: job_threads
    shell:
        f"{PYTHON} -m pipeline run-step {{input.plan:q}} --input clusters={{input.clusters:q}} --log {{log:q}} --threads {{threads}}"

# Data stages: collect, filter, dedup (later: scrub).


rule collect:
    output:
        directory(stage_path("collect")),
    shell:
        STAGE_CMD


rule filter:
    input:
        upstream("filter"),
    output:
        directory(stage_path("filter")),
    shell:
        STAGE_CMD


# dedup as scatter/gather rules (pipeline/dedup/__init__.py): signatures (one job per shard) ->
# buckets -> clusters -> dedup (the removal; the stage directory). The steps write
# results/dedup_<step>/<key>/ under the dedup stage's own key.
DEDUP_STEP = f"{sys.executable} -m pipeline dedup --planned {{wildcards.key}} {RESULTS} --step"


checkpoint dedup_shards:
    input:
        upstream("dedup"),
    output:
        f"{stage_path('dedup_signatures')}/shards.txt",
    localrule: True
    shell:
        # the shard names (pipeline.core.docs.SHARD_GLOB) without their suffix, one a line
        r"ls {input[0]} | sed -n 's/^\(shard-[0-9]*\)\.parquet$/\1/p' > {output}"


rule dedup_signatures:
    input:
        upstream("dedup"),
    output:
        f"{stage_path('dedup_signatures')}/{{shard}}.npz",
    wildcard_constraints:
        shard=r"shard-\d+",
    shell:
        f"{DEDUP_STEP} signatures {{wildcards.shard}}.parquet"


def dedup_signature_files(wildcards):
    """One signature file per input shard: known once the upstream stage has run (checkpoint)."""
    with open(checkpoints.dedup_shards.get(key=wildcards.key).output[0]) as f:
        return [f"{RESULTS}/dedup_signatures/{wildcards.key}/{name}.npz" for name in f.read().split()]


rule dedup_buckets:
    input:
        dedup_signature_files,
    output:
        directory(stage_path("dedup_buckets")),
    shell:
        f"{DEDUP_STEP} buckets"


rule dedup_clusters:
    input:
        upstream("dedup"),
        stage_path("dedup_buckets"),
    output:
        directory(stage_path("dedup_clusters")),
    shell:
        f"{DEDUP_STEP} clusters"


rule dedup:
    input:
        upstream("dedup"),
        stage_path("dedup_clusters"),
    output:
        directory(stage_path("dedup")),
    shell:
        STAGE_CMD


rule scrub:
    input:
        upstream("scrub"),
    output:
        directory(stage_path("scrub")),
    shell:
        STAGE_CMD

# Data stages: collect (later: filter, dedup, scrub).


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

# Data stages: collect (later: filter, dedup, scrub).


rule collect:
    output:
        directory(stage_path("collect")),
    shell:
        STAGE_CMD

# Evaluation: every model the DAG produces is scored by the same stage (today: pretrain).


rule evaluate:
    input:
        upstream("evaluate"),
    output:
        directory(stage_path("evaluate")),
    shell:
        STAGE_CMD

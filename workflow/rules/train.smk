# Training family: tokenize (BPE + token files), then pretrain (and later fine-tuning).


rule tokenize:
    input:
        upstream("tokenize"),
    output:
        directory(stage_path("tokenize")),
    shell:
        STAGE_CMD


# Training takes every core Snakemake was given; train.nproc > 1 makes the stage launch
# torchrun itself (DDP/FSDP), so the rule stays one job.
rule pretrain:
    input:
        upstream("pretrain"),
    output:
        directory(stage_path("pretrain")),
    threads: workflow.cores
    shell:
        STAGE_CMD

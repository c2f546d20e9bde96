# Training family: tokenize (BPE + token files), then pretrain (and later fine-tuning).


rule tokenize:
    input:
        upstream("tokenize"),
    output:
        directory(stage_path("tokenize")),
    shell:
        STAGE_CMD

# lmdag: raw text -> curated shards -> tokenizer -> model -> evaluation -> report.
# Every stage writes results/<stage>/<key>/, where key hashes the stage's resolved config,
# its upstream keys and its code version: a sweep shares every stage it does not change.
#
#   snakemake -c all                                   the default experiment
#   snakemake -c all --config experiment=ci            the tiny CI recipe
#   snakemake -c all --config sweep=conf/sweep/filter_and_lr.yaml
#   snakemake -n -R filter                             what a rerun of filter would redo
from snakemake.utils import min_version

min_version("8.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT,

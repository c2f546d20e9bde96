# lmdag: raw text -> curated shards -> tokenizer -> model -> evaluation -> report.
# The steps and their inputs are declared in conf/dag/ (composed by Hydra); every step writes
# results/<step>/<key>/, where key hashes its stage's code version, its resolved config and
# its inputs' keys: a sweep shares every step it does not change.
#
#   snakemake -c all                                   the default experiment
#   snakemake -c all --config experiment=ci            the tiny CI recipe
#   snakemake -c all --config sweep=conf/sweep/filter_and_lr.yaml
#   snakemake -n -R filter                             what a rerun of filter would redo
from snakemake.utils import min_version

min_version("8.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/steps.smk"
include: "workflow/rules/dedup.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT,
    default_target: True

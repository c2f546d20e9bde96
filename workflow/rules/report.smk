# The report card: one page over every step of every sweep point.


rule report:
    input:
        step_outputs(),
        manifest=MANIFEST,
    output:
        REPORT,
    log:
        f"{RESULTS}/.logs/report.log",
    shell:
        f"{PYTHON} -m pipeline report --manifest {{input.manifest}} --out {RESULTS}/report > {{log}} 2>&1"

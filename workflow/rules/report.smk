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
        f"{PYTHON} -m pipeline report --manifest {{input.manifest:q}} --out {shlex.quote(f'{RESULTS}/report')} > {{log:q}} 2>&1"

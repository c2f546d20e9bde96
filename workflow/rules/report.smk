# The report card: one page over every stage of every sweep point.


rule report:
    input:
        final_outputs(),
        manifest=MANIFEST,
    output:
        REPORT,
    shell:
        f"{sys.executable} -m pipeline report --manifest {{input.manifest}} --out {RESULTS}/report"

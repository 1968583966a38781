# Figures drawn from the hierarchy tables alone (no refits); `snakemake --report` collects them.
rule report:
    input:
        scores=rules.hierarchy.output.scores,
        tests=rules.hierarchy.output.tests,
        verdicts=rules.hierarchy.output.verdicts,
        profiles=rules.hierarchy.output.profiles,
        latencies=rules.hierarchy.output.latencies,
        best_layers=rules.hierarchy.output.best_layers,
    output:
        report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    script:
        "../scripts/report.py"

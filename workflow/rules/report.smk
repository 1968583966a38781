# Figures and tables drawn from the hierarchy tables alone (no refits); `snakemake --report report.html` collects
# them with the captions of workflow/report/, which name the objective, pooling, folds and tests of each figure.
rule report:
    input:
        scores=rules.hierarchy.output.scores,
        tests=rules.hierarchy.output.tests,
        verdicts=rules.hierarchy.output.verdicts,
        profiles=rules.hierarchy.output.profiles,
        latencies=rules.hierarchy.output.latencies,
        best_layers=rules.hierarchy.output.best_layers,
        topographies=rules.hierarchy.output.topographies,
        claims=rules.hierarchy.output.claims,
        partition=rules.hierarchy.output.partition,
    output:
        figures=report(
            directory(f"{RESULTS}/figures"),
            patterns=["{dataset}__{model}__{figure}.png"],
            caption="../report/figures.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "{figure}"},
        ),
        summary=report(
            directory(f"{RESULTS}/report"),
            patterns=["{name}.png", "{name}.html"],
            caption="../report/summary.rst",
            category="Summary",
            labels={"item": "{name}"},
        ),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        "../../envs/stats.yaml"
    threads: 1
    params:
        models={
            m: spec_subset(m, ("arch", "objective", "pooling", "weights"))
            for m in MODELS
        },
        alpha=config["hierarchy"]["fdr_alpha"],
    script:
        "../scripts/report.py"

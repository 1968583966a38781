# Spatial and temporal scores, divergences, permutation nulls and group tests, as tidy tables.
rule hierarchy:
    input:
        encoding=encoding_files(),
        brain=[brain_of(p) for p in encoding_files()],
    output:
        scores=f"{RESULTS}/hierarchy/scores.csv",
        tests=f"{RESULTS}/hierarchy/tests.csv",
        verdicts=f"{RESULTS}/hierarchy/verdicts.csv",
        profiles=f"{RESULTS}/hierarchy/profiles.csv",
        latencies=f"{RESULTS}/hierarchy/latencies.csv",
        best_layers=f"{RESULTS}/hierarchy/best_layers.csv",
        topographies=f"{RESULTS}/hierarchy/topographies.csv",
        claims=f"{RESULTS}/hierarchy/claims.csv",
        partition=f"{RESULTS}/hierarchy/partition.csv",
    log:
        f"{RESULTS}/logs/hierarchy.log",
    benchmark:
        f"{RESULTS}/benchmarks/hierarchy.tsv"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=job_size("hierarchy", "mem_mb"),
        runtime=job_size("hierarchy", "runtime"),
    params:
        hierarchy=config["hierarchy"],
        scenarios={n: d["simulated"] for n, d in DATASETS.items() if d.get("simulated")},
    script:
        "../scripts/hierarchy.py"

rule data:
    input:
        data_input,
    output:
        "results/data/benchmark.parquet",
    params:
        reads=lambda w: stage_params(P, "data"),
    resources:
        **stage_resources(P, "data"),
    benchmark:
        "results/benchmarks/data.tsv"
    log:
        "results/logs/data.log",
    shell:
        "{LEAKK} data --out {output} 2> {log}"

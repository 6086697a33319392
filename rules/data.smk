rule data:
    output:
        "results/data/benchmark.parquet",
    params:
        seed=P["seed"],
        data=P["data"],
    benchmark:
        "results/benchmarks/data.tsv"
    log:
        "results/logs/data.log",
    shell:
        "{LEAKK} data --out {output} 2> {log}"

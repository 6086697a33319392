rule judge:
    input:
        data="results/data/benchmark.parquet",
        samples="results/samples/{model}/{decoding}.parquet",
    output:
        "results/judgments/{model}/{decoding}.parquet",
    params:
        reads=lambda w: stage_params(P, "judge"),
    resources:
        **stage_resources(P, "judge"),
    benchmark:
        "results/benchmarks/judge/{model}_{decoding}.tsv"
    log:
        "results/logs/judge_{model}_{decoding}.log",
    shell:
        "{LEAKK} judge --data {input.data} --samples {input.samples} --out {output} 2> {log}"

rule estimate:
    input:
        data="results/data/benchmark.parquet",
        judgments=expand("results/judgments/{model}/{judge}/{decoding}.parquet", model=MODELS, judge=JUDGES,
                         decoding=DECODINGS),
    output:
        table="results/leak_at_k.parquet",
        csv="results/leak_at_k.csv",
        utility="results/utility.csv",
        summary="results/summary.md",
        rule_vs_base="results/rule_vs_base.csv",
    params:
        reads=lambda w: stage_params(P, "estimate"),
    resources:
        **stage_resources(P, "estimate"),
    benchmark:
        "results/benchmarks/estimate.tsv"
    log:
        "results/logs/estimate.log",
    shell:
        "{LEAKK} estimate --data {input.data} --judgments results/judgments --out-dir results > {log} 2>&1"

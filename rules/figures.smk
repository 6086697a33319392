rule figures:
    input:
        "results/leak_at_k.parquet",
    output:
        "results/figures/leak_at_k_{judge}.png",
        "results/figures/greedy_vs_sampled_{judge}.png",
    params:
        reads=lambda w: stage_params(P, "figures"),
    resources:
        **stage_resources(P, "figures"),
    benchmark:
        "results/benchmarks/figures/{judge}.tsv"
    log:
        "results/logs/figures_{judge}.log",
    shell:
        "{LEAKK} figures --leak {input} --judge {wildcards.judge} --out-dir results/figures 2> {log}"

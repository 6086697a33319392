rule figures:
    input:
        "results/leak_at_k.parquet",
    output:
        report("results/figures/leak_at_k_{judge}.png", caption="../report/leak_at_k.rst",
               category="4. leak@k", subcategory="{judge}"),
        report("results/figures/greedy_vs_sampled_{judge}.png", caption="../report/greedy_vs_sampled.rst",
               category="4. leak@k", subcategory="{judge}"),
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

rule unlearn:
    input:
        data="results/data/benchmark.parquet",
        full=model_folder(P, "full"),
    output:
        directory("results/models/{method}"),
    wildcard_constraints:
        method="|".join(map(re.escape, P["unlearn"])),
    params:
        reads=lambda w: stage_params(P, "unlearn", name=w.method),
    threads: 1
    resources:
        **stage_resources(P, "unlearn"),
    benchmark:
        "results/benchmarks/unlearn/{method}.tsv"
    log:
        "results/logs/unlearn_{method}.log",
    shell:
        "{LEAKK} --threads {threads} unlearn --data {input.data} --name {wildcards.method} "
        "--model-dir {input.full} --out {output} 2> {log}"

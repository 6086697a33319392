rule unlearn:
    input:
        data="results/data/benchmark.parquet",
        full="results/models/full",
    output:
        directory("results/models/{method}"),
    wildcard_constraints:
        method="|".join(map(re.escape, P["unlearn"])),
    params:
        seed=P["seed"],
        device=P["device"],
        run=lambda w: P["unlearn"][w.method],
        template=lambda w: P["prompt_template"],  # a function: "{question}" is no wildcard
    threads: 1
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/unlearn/{method}.tsv"
    log:
        "results/logs/unlearn_{method}.log",
    shell:
        "{LEAKK} --threads {threads} unlearn --data {input.data} --name {wildcards.method} "
        "--model-dir {input.full} --out {output} 2> {log}"

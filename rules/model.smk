rule finetune:
    input:
        "results/data/benchmark.parquet",
    output:
        directory("results/models/{which}"),
    wildcard_constraints:
        which="full|retrain",
    params:
        seed=P["seed"],
        device=P["device"],
        model=P["model"],
        finetune=P["finetune"],
        template=lambda w: P["prompt_template"],  # a function: "{question}" is no wildcard
    threads: 1
    resources:
        gpu=1,
    benchmark:
        "results/benchmarks/finetune/{which}.tsv"
    log:
        "results/logs/finetune_{which}.log",
    shell:
        "{LEAKK} --threads {threads} finetune --data {input} --which {wildcards.which} --out {output} 2> {log}"

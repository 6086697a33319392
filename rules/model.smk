rule finetune:
    input:
        "results/data/benchmark.parquet",  # a hub model.base is downloaded before `data` (common.smk)
    output:
        directory("results/models/{which}"),
    wildcard_constraints:
        which="|".join(TRAINED_BASES) or "^$",  # not a `models:` entry (those are evaluated as they are)
    params:
        reads=lambda w: stage_params(P, "finetune"),  # a function: "{question}" is no wildcard
    threads: 1
    resources:
        **stage_resources(P, "finetune"),
    benchmark:
        "results/benchmarks/finetune/{which}.tsv"
    log:
        "results/logs/finetune_{which}.log",
    shell:
        "{LEAKK} --threads {threads} finetune --data {input} --which {wildcards.which} --out {output} 2> {log}"

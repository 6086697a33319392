# One job per (model, decoding, judge): a job's params are only its own judge's entry, so
# editing one judge (a ROUGE threshold) re-runs that judge's files and what reads them,
# never another judge (e.g. a paid LLM judge).
rule judge:
    input:
        data="results/data/benchmark.parquet",
        samples="results/samples/{model}/{decoding}.parquet",
    output:
        "results/judgments/{model}/{judge}/{decoding}.parquet",
    params:
        reads=lambda w: stage_params(P, "judge", judge=w.judge),
    resources:
        **stage_resources(P, "judge"),
    benchmark:
        "results/benchmarks/judge/{model}_{judge}_{decoding}.tsv"
    log:
        "results/logs/judge_{model}_{judge}_{decoding}.log",
    shell:
        "{LEAKK} judge --data {input.data} --samples {input.samples} --judge {wildcards.judge} "
        "--out {output} 2> {log}"

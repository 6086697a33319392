# One job per (model, decoding); with sample.shards = S > 1, S shard jobs (each its own
# GPU job on a cluster) and a merge. Each completion's randomness depends only on
# (seed, qid, sample_idx), so the merged shards equal the unsharded run.
SHARDS = P["sample"]["shards"]


def sample_shell(shard, shards):
    return (
        "{LEAKK} --threads {threads} sample --data {input.data} --model {wildcards.model} "
        "--model-dir {params.model_dir} --decoding {wildcards.decoding} "
        f"--shard {shard} --shards {shards} --out {{output}} 2> {{log}}"
    )


if SHARDS == 1:

    rule sample:
        input:
            data="results/data/benchmark.parquet",
            model=model_input,
        output:
            "results/samples/{model}/{decoding}.parquet",
        params:
            model_dir=model_dir,
            reads=lambda w: stage_params(P, "sample"),  # a function: "{question}" is no wildcard
        threads: 1
        resources:
            **stage_resources(P, "sample"),
        benchmark:
            "results/benchmarks/sample/{model}_{decoding}.tsv"
        log:
            "results/logs/sample_{model}_{decoding}.log",
        shell:
            sample_shell(0, 1)

else:

    rule sample_shard:
        input:
            data="results/data/benchmark.parquet",
            model=model_input,
        output:
            temp("results/samples/{model}/{decoding}.shard{shard}.parquet"),
        params:
            model_dir=model_dir,
            reads=lambda w: stage_params(P, "sample"),  # a function: "{question}" is no wildcard
        threads: 1
        resources:
            **stage_resources(P, "sample"),
        benchmark:
            "results/benchmarks/sample/{model}_{decoding}_{shard}.tsv"
        log:
            "results/logs/sample_{model}_{decoding}_shard{shard}.log",
        shell:
            sample_shell("{wildcards.shard}", SHARDS)

    rule merge_samples:
        input:
            lambda w: expand(
                "results/samples/{model}/{decoding}.shard{shard}.parquet",
                model=w.model, decoding=w.decoding, shard=range(SHARDS),
            ),
        output:
            "results/samples/{model}/{decoding}.parquet",
        resources:
            **stage_resources(P, "merge_samples"),
        benchmark:
            "results/benchmarks/merge_samples/{model}_{decoding}.tsv"
        log:
            "results/logs/merge_{model}_{decoding}.log",
        shell:
            "{LEAKK} merge {input} --out {output} 2> {log}"

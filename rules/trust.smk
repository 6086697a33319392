# Numbers a reviewer trusts: the exact leak bound (no sampling), Clopper-Pearson guarantees,
# Beta-binomial extrapolation beyond n, the DVC plot/metrics files and the report tables.
# Wiring only: each rule is one `leakk <stage>` call (src/leakk/stages/trust.py).


rule bounds:
    input:
        data="results/data/benchmark.parquet",
        model=model_input,
    output:
        "results/bounds/{model}.parquet",
    params:
        model_dir=model_dir,
        reads=lambda w: stage_params(P, "bounds"),  # not n, seed or backend: it samples nothing
    threads: 1
    resources:
        **stage_resources(P, "bounds"),
    benchmark:
        "results/benchmarks/bounds/{model}.tsv"
    log:
        "results/logs/bounds_{model}.log",
    shell:
        "{LEAKK} --threads {threads} bounds --data {input.data} --model {wildcards.model} "
        "--model-dir {params.model_dir} --out {output} 2> {log}"


rule bounds_table:
    input:
        data="results/data/benchmark.parquet",
        bounds=expand("results/bounds/{model}.parquet", model=MODELS),
        leak="results/leak_at_k.parquet",
        samples=expand("results/samples/{model}/{decoding}.parquet", model=MODELS, decoding=DECODINGS),
    output:
        table="results/bounds.parquet",
        csv="results/bounds.csv",
        check="results/bounds_check.csv",
        why="results/why_leaks.csv",
        figure=report("results/figures/bound_vs_sampled.png", caption="../report/bound_vs_sampled.rst",
                      category="2. Exact bound"),
    params:
        reads=lambda w: stage_params(P, "bounds_table"),
    resources:
        **stage_resources(P, "bounds_table"),
    benchmark:
        "results/benchmarks/bounds_table.tsv"
    log:
        "results/logs/bounds_table.log",
    shell:
        "{LEAKK} bounds-table --data {input.data} --bounds {input.bounds} --leak {input.leak} "
        "--samples results/samples --out-dir results 2> {log}"


rule reliability:
    input:
        data="results/data/benchmark.parquet",
        judgments=rules.estimate.input.judgments,
        leak="results/leak_at_k.parquet",
    output:
        guarantees="results/guarantees.csv",
        extrapolation="results/extrapolation.csv",
        check="results/extrapolation_check.csv",
        markdown="results/reliability.md",
        figure=report("results/figures/leak_rate_distribution.png",
                      caption="../report/leak_rate_distribution.rst", category="3. Why it leaks"),
        curve="results/leak_curve.csv",
        metrics="results/metrics.json",
    params:
        reads=lambda w: stage_params(P, "reliability"),
    resources:
        **stage_resources(P, "reliability"),
    benchmark:
        "results/benchmarks/reliability.tsv"
    log:
        "results/logs/reliability.log",
    shell:
        "{LEAKK} reliability --data {input.data} --judgments results/judgments --leak {input.leak} "
        "--out-dir results > {log} 2>&1"


rule report_tables:
    input:
        summary="results/summary.md",
        bounds="results/bounds.csv",
        check="results/bounds_check.csv",
        why="results/why_leaks.csv",
        reliability="results/reliability.md",
    output:
        report("results/tables.html", caption="../report/tables.rst", category="1. Tables"),
    resources:
        **stage_resources(P, "report_tables"),
    log:
        "results/logs/report_tables.log",
    shell:
        "{LEAKK} report-tables --summary {input.summary} --bounds {input.bounds} --check {input.check} "
        "--reliability {input.reliability} --why {input.why} --out {output} 2> {log}"


# The T × top-p heatmap only where sample.decodings form a grid (configs/decoding_grid.yaml).
from leakk.report.figures import decoding_grid

HAS_GRID = decoding_grid(DECODINGS) is not None

if HAS_GRID:

    rule decoding_heatmap:
        input:
            "results/leak_at_k.parquet",
        output:
            report("results/figures/decoding_heatmap_{judge}.png", caption="../report/decoding_heatmap.rst",
                   category="4. leak@k", subcategory="{judge}"),
        params:
            reads=lambda w: stage_params(P, "decoding_heatmap"),
            k=max(P["estimate"]["ks"]),
        resources:
            **stage_resources(P, "decoding_heatmap"),
        log:
            "results/logs/decoding_heatmap_{judge}.log",
        shell:
            "{LEAKK} heatmap --leak {input} --judge {wildcards.judge} --k {params.k} --out {output} 2> {log}"


def trust_files():
    files = ["results/bounds.parquet", "results/guarantees.csv", "results/extrapolation.csv",
             "results/metrics.json", "results/leak_curve.csv", "results/tables.html"]
    if HAS_GRID:
        files += expand("results/figures/decoding_heatmap_{judge}.png", judge=JUDGES)
    return files

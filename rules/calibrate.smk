# Judges against ground truth: only where the benchmark has facts and another judge exists.
CALIBRATE = "fact" in JUDGES and len(JUDGES) > 1


def calibration_files():
    return ["results/calibration.parquet", "results/calibration.csv", "results/figures/calibration.png"] if CALIBRATE else []


rule calibrate:
    input:
        data="results/data/benchmark.parquet",
        judgments=expand("results/judgments/{model}/{judge}/{decoding}.parquet", model=MODELS, judge=JUDGES,
                         decoding=DECODINGS),
    output:
        table="results/calibration.parquet",
        csv="results/calibration.csv",
        figure=report("results/figures/calibration.png", caption="../report/calibration.rst",
                      category="6. Judges"),
    params:
        reads=lambda w: stage_params(P, "calibrate"),
    resources:
        **stage_resources(P, "calibrate"),
    benchmark:
        "results/benchmarks/calibrate.tsv"
    log:
        "results/logs/calibrate.log",
    shell:
        "{LEAKK} calibrate --data {input.data} --judgments results/judgments --out-dir results "
        "--figure {output.figure} > {log} 2>&1"

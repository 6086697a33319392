# RULE rounds are unrolled: round r trains from round r-1's folder (round 1 from the base
# method's model), so each round's checkpoint and leaked set are cached and inspectable.
# Each round is evaluated by its own job on the held-out phrasing with the evaluation seed;
# editing sampling parameters re-runs those evaluations, never the training rounds. Round 0
# (the base run) and the last round (the RULE model) are sampled and judged by the main
# pipeline already: their evaluations read those judgments.


def round_folder(name, r):
    return f"results/models/{RULES[name]['base']}" if r == 0 else f"results/rule/{name}/round_{r}"


def round_judgments(name, r):
    """The main pipeline's judgments a round's evaluation reads (round 0 and the last round)."""
    model = round_model_name(P, name, r)
    if model is None:
        return []
    est = P["estimate"]
    return [str(main_judgments("results/judgments", model, est["headline_judge"], est["headline_decoding"])),
            str(main_judgments("results/judgments", model, utility_judge(P), "greedy"))]


rule rule_round:
    input:
        data="results/data/benchmark.parquet",
        prev=lambda w: round_folder(w.name, int(w.round) - 1),
        reference=model_folder(P, "full"),  # NPO's frozen reference (rule.<name>.reference: full)
    output:
        directory("results/rule/{name}/round_{round}"),
    params:
        reads=lambda w: stage_params(P, "rule_round", name=w.name),  # not `rounds`: more rounds keep these
    threads: 1
    resources:
        **stage_resources(P, "rule_round"),
    benchmark:
        "results/benchmarks/rule_round/{name}_{round}.tsv"
    log:
        "results/logs/rule_{name}_round_{round}.log",
    shell:
        "{LEAKK} --threads {threads} rule-round --data {input.data} --name {wildcards.name} "
        "--round {wildcards.round} --prev {input.prev} --reference {input.reference} --out {output} 2> {log}"


rule rule_eval:
    input:
        data="results/data/benchmark.parquet",
        model=lambda w: round_folder(w.name, int(w.round)),
        judgments=lambda w: round_judgments(w.name, int(w.round)),
    output:
        "results/rule_eval/{name}/round_{round}.parquet",
    params:
        reads=lambda w: stage_params(P, "rule_eval"),
    threads: 1
    resources:
        **stage_resources(P, "rule_eval"),
    benchmark:
        "results/benchmarks/rule_eval/{name}_{round}.tsv"
    log:
        "results/logs/rule_eval_{name}_round_{round}.log",
    shell:
        "{LEAKK} --threads {threads} rule-eval --data {input.data} {input.model} --name {wildcards.name} "
        "--first-round {wildcards.round} --judgments results/judgments --out-dir results/rule_eval/{wildcards.name} "
        "2> {log}"


rule rule_report:
    input:
        rounds=lambda w: [round_folder(w.name, r) for r in range(1, RULES[w.name]["rounds"] + 1)],
        evals=lambda w: expand("results/rule_eval/{name}/round_{r}.parquet", name=w.name,
                               r=range(RULES[w.name]["rounds"] + 1)),
    output:
        log="results/rule_eval/{name}/rounds.parquet",
        figure=report("results/figures/{name}_rounds.png", caption="../report/rule_rounds.rst",
                      category="5. RULE"),
    resources:
        **stage_resources(P, "rule_report"),
    benchmark:
        "results/benchmarks/rule_report/{name}.tsv"
    log:
        "results/logs/rule_{name}_report.log",
    shell:
        "{LEAKK} rule-report --rounds {input.rounds} --evals {input.evals} --out-log {output.log} "
        "--out-figure {output.figure} 2> {log}"

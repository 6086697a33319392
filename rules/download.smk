# The first node: each hub source of the params (the benchmark's dataset, each `models:`
# entry given by hub id) is fetched at its pinned revision into results/hub/<kind>/<name>.
# A source given as a local folder is used in place (no job). The synthetic benchmark needs
# nothing: its generator is the data rule.


rule download:
    output:
        directory("results/hub/{kind}/{name}"),
    wildcard_constraints:
        kind="datasets|models",
        name="|".join(map(re.escape, [k.split("/", 1)[1] for k in HUB_KEYS])) or "^$",
    params:
        reads=lambda w: stage_params(P, "download", source=source_param(f"{w.kind}/{w.name}")),
    resources:
        **stage_resources(P, "download"),
    benchmark:
        "results/benchmarks/download/{kind}_{name}.tsv"
    log:
        "results/logs/download_{kind}_{name}.log",
    shell:
        "{LEAKK} download --key {wildcards.kind}/{wildcards.name} --hub-dir results/hub > {log} 2>&1"

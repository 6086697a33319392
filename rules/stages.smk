# Every stage of the stage table (leakk.workflow.table.STAGES) as one rule: inputs, outputs,
# params (what the job reads), resources, priority and one `leakk <command>` shell line, all derived there.
# (A function, not a loop body: each rule's directives must see their own `r` when the job runs.)


def stage_rule(r):
    rule:
        name:
            r.name
        input:
            **r.input,
        output:
            **{key: output_file(out) for key, out in r.output.items()},
        params:
            **r.params,
        threads: r.threads
        priority: r.priority
        resources:
            **r.resources,
        wildcard_constraints:
            **r.wildcard_constraints,
        log:
            r.log,
        benchmark:
            r.benchmark
        shell:
            r.shell


for r in snakemake_rules(P, LEAKK):
    stage_rule(r)

"""The Snakemake rules of the stage table, for one params file (``rules/stages.smk`` loops over
:func:`rules`; ``rule all`` asks for :func:`targets`).

Each enabled stage with at least one job becomes one rule: its outputs, inputs (functions of
the job's wildcards), ``params.reads`` (what the job reads: :func:`leakk.workflow.table.stage_params`,
so editing a key re-runs exactly the jobs that read it), resources, and one shell line that
calls its ``leakk`` command with the arguments the table gives.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from leakk.core.layout import RESULTS as L
from leakk.workflow.table import COMMANDS, STAGES, Out, Stage, stage_params, stage_resources

Params = dict[str, Any]
#: wildcards whose values are counts, not names
NUMERIC = {"round", "shard"}


@dataclass
class SnakemakeRule:
    """What one ``rule:`` block of rules/stages.smk takes."""

    name: str
    input: dict[str, Any]
    output: dict[str, Out]
    params: dict[str, Any]
    threads: int
    resources: dict[str, Any]
    wildcard_constraints: dict[str, str]
    log: str
    benchmark: str
    shell: str
    priority: Any = 0


def wildcards_of(stage: Stage, p: Params) -> list[str]:
    """The wildcards of a stage's outputs, in order of first appearance."""
    out: list[str] = []
    for o in stage.snakemake.outs(p).values():
        for _, field, _, _ in string.Formatter().parse(o.path):
            if field and field not in out:
                out.append(field)
    return out


def shell(stage: Stage, leakk: str) -> str:
    """The rule's shell line: ``leakk [--threads N] <command> <arguments> 2> {log}``."""
    command = COMMANDS[stage.command]
    parts = [leakk, *(["--threads {threads}"] if stage.threads else []), command.name]
    for a in command.args:
        if a.dest not in stage.snakemake.args:
            continue
        value = stage.snakemake.args[a.dest]
        value = f"{{params.{a.dest}}}" if callable(value) else value
        parts.append(value if a.positional else f"{a.flags[0]} {value}")
    return " ".join(parts) + (" > {log} 2>&1" if command.prints else " 2> {log}")


def _bind(fn, p: Params):
    return lambda wildcards: fn(p, wildcards)


def rules(p: Params, leakk: str) -> list[SnakemakeRule]:
    """Every enabled stage's rule for params ``p``; ``leakk`` is the command prefix
    (``leakk --params <file>``)."""
    out = []
    for stage in STAGES.values():
        rule = stage.snakemake
        if rule is None or not rule.enabled(p):
            continue
        jobs = rule.jobs(p)
        if not jobs:
            continue
        wildcards = wildcards_of(stage, p)
        constraints = {w: r"\d+" if w in NUMERIC else "|".join(sorted({re.escape(str(j[w])) for j in jobs}))
                       for w in wildcards}
        names = rule.names or (lambda p_, w, keys=tuple(wildcards): {k: getattr(w, k) for k in keys})
        params: dict[str, Any] = {
            "reads": (lambda w, s=stage.name, n=names: stage_params(p, s, **n(p, w)))}
        params.update({k: _bind(v, p) for k, v in rule.args.items() if callable(v)})
        suffix = "_".join(f"{{{w}}}" for w in wildcards)
        out.append(SnakemakeRule(
            name=stage.name,
            input={k: _bind(v, p) if callable(v) else v for k, v in rule.inputs.items()},
            output=rule.outs(p), params=params, threads=max(stage.threads, 1),
            resources=stage_resources(p, stage.name), wildcard_constraints=constraints,
            log=L.log(f"{stage.name}_{suffix}" if suffix else stage.name),
            benchmark=L.benchmark_log(f"{stage.name}/{suffix}" if suffix else stage.name),
            shell=shell(stage, leakk), priority=_bind(rule.priority, p) if rule.priority else 0))
    return out


def targets(p: Params) -> list[str]:
    """Every output of every job (``rule all``), temporary files aside."""
    files = []
    for stage in STAGES.values():
        rule = stage.snakemake
        if rule is None or not rule.enabled(p):
            continue
        outs = [o.path for o in rule.outs(p).values() if o.kind != "temp"]
        for job in rule.jobs(p):
            files += [path.format(**job) for path in outs]
    return list(dict.fromkeys(files))

"""The pipeline's stages: what each reads from params.yaml and what it needs to run — declared
once, here.

Snakemake rules take their ``params:`` and ``resources:`` from :func:`stage_params` and
:func:`stage_resources`, so editing a key re-runs exactly the jobs that read it. ``dvc.yaml``
declares the same keys at DVC's granularity: :func:`dvc_params` renders them and
``tests/test_pipeline.py`` fails if any ``dvc.yaml`` stage disagrees. Two tools, one
declaration.

Keys are dotted paths into params.yaml. ``{name}``, ``{base}`` and ``{judge}`` stand for the
job's run name, its RULE base run and its judge label; ``{headline_judge}`` and
``{utility_judge}`` for the judges the estimate section selects. A Snakemake job reads the
finest keys; DVC, which cannot compute ``{headline_judge}`` and refuses a key that params.yaml
leaves to a schema default, declares the enclosing top-level section instead (coarser, so it
may re-run more, never less).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any

#: Placeholders DVC's templating can fill in a ``foreach`` stage (``${key}``, ``${item.base}``…).
DVC_PLACEHOLDERS = {"{name}": "${key}", "{base}": "${item.base}", "{judge}": "${item.judge}"}


@dataclass(frozen=True)
class Stage:
    """One stage of the DAG (a Snakemake rule, a ``dvc.yaml`` stage)."""

    reads: tuple[str, ...]
    #: keys a single Snakemake job gets through its wildcards rather than as a param (a job
    #: samples one decoding; the DVC stage samples them all)
    per_job: tuple[str, ...] = ()
    #: keys of a ``reads`` entry that a Snakemake job does not depend on
    #: (``rule.{name}.rounds``: more rounds keep the finished ones)
    ignores: tuple[str, ...] = ()
    #: runs a model, so it asks for a GPU when params put it on one ("judge": when the job's
    #: judge runs a model, e.g. nli or embedding)
    model: bool | str = False
    mem_mb: int = 2000
    runtime: int = 30  # minutes, for cluster schedulers
    dvc: tuple[str, ...] = field(default=())  # the dvc.yaml stage names that run it
    #: what the dvc.yaml stage declares where it differs from ``reads`` at DVC granularity (one
    #: DVC stage fetches every hub source; a Snakemake job fetches one)
    dvc_reads: tuple[str, ...] = ()


_SAMPLE = ("sample.backend", "sample.options", "sample.n", "sample.max_new_tokens", "sample.seed", "sample.batch_rows",
           "sample.question_column")

STAGES: dict[str, Stage] = {
    # one hub source per job: ``{source}`` is ``data.<benchmark>`` or ``models.<name>``
    # DVC: one stage fetches every source (params.yaml must then write ``models:``, ``{}`` if empty)
    "download": Stage(("{source}",), mem_mb=4000, runtime=240, dvc=("download",), dvc_reads=("data", "models")),
    "data": Stage(("seed", "data"), dvc=("data",)),
    "finetune": Stage(("seed", "device", "prompt_template", "model", "finetune", "training"), model=True,
                      mem_mb=8000, runtime=240, dvc=("finetune",)),
    # (a stop criterion's judge is part of ``unlearn.{name}.stop``, not of the judge section)
    "unlearn": Stage(("seed", "device", "prompt_template", "unlearn.{name}", "training"),
                     model=True, mem_mb=8000, runtime=240, dvc=("unlearn",)),
    "rule_round": Stage(("seed", "device", "prompt_template", "rule.{name}", "unlearn.{base}", "judge.{judge}",
                         "sample.backend", "training"),
                        ignores=("rule.{name}.rounds",), model=True, mem_mb=8000, runtime=240, dvc=("rule",)),
    "rule_eval": Stage(("device", "prompt_template", *_SAMPLE, "judge.{headline_judge}", "judge.{utility_judge}",
                        "estimate.headline_judge", "estimate.headline_decoding", "estimate.bootstrap",
                        "estimate.ci", "estimate.seed", "estimate.ci_method"),
                       model=True, mem_mb=8000, runtime=120, dvc=("rule_eval",)),
    "rule_report": Stage((), dvc=()),  # DVC runs it inside the rule_eval stage
    "sample": Stage(("device", "prompt_template", *_SAMPLE, "sample.decodings", "sample.shards"),
                    per_job=("sample.decodings", "sample.shards"), model=True, mem_mb=8000, runtime=240,
                    dvc=("sample_base", "sample_unlearn", "sample_rule")),
    "merge_samples": Stage((), dvc=()),
    "judge": Stage(("judge.{judge}",), model="judge", dvc=("judge", "judge_unlearn", "judge_rule")),
    "estimate": Stage(("estimate", "sample.n", "sample.decodings", "judge"), dvc=("estimate",)),
    "calibrate": Stage(("estimate.ks", "estimate.headline_decoding", "judge"), dvc=("calibrate",)),
    "figures": Stage(("estimate",), dvc=("figures",)),
    # numbers a reviewer trusts (rules/trust.smk)
    "bounds": Stage(("device", "prompt_template", "sample.max_new_tokens", "sample.question_column",
                     "sample.decodings"), model=True, mem_mb=8000, runtime=120,
                    dvc=("bounds", "bounds_unlearn", "bounds_rule")),
    "bounds_table": Stage(("estimate",), dvc=("bounds_table",)),
    "reliability": Stage(("estimate", "sample.n", "sample.decodings", "judge"), dvc=("reliability",)),
    "report_tables": Stage((), dvc=()),
    "decoding_heatmap": Stage(("estimate.ks",), dvc=()),
}


def _get(params: dict[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fill(key: str, names: dict[str, str]) -> str:
    for placeholder, value in names.items():
        key = key.replace("{" + placeholder + "}", str(value))
    return key


def placeholders(params: dict[str, Any], **names: str) -> dict[str, str]:
    """Values for every placeholder: the given names plus the estimate's judges."""
    from leakk.config import utility_judge

    out = {"headline_judge": params["estimate"]["headline_judge"], "utility_judge": utility_judge(params)}
    if "name" in names and names["name"] in (params.get("rule") or {}):
        run = params["rule"][names["name"]]
        out.update(base=run["base"], judge=run["judge"])
    out.update(names)
    return out


def stage_params(params: dict[str, Any], stage: str, **names: str) -> dict[str, Any]:
    """``{key: value}`` of everything one Snakemake job of ``stage`` reads (the defaults-filled
    params, so a value left to its default is tracked too)."""
    spec = STAGES[stage]
    filled = placeholders(params, **names)
    ignored = {_fill(k, filled) for k in spec.ignores}
    out = {}
    for key in spec.reads:
        if key in spec.per_job:
            continue
        key = _fill(key, filled)
        value = _get(params, key)
        if isinstance(value, dict) and ignored:
            value = {k: v for k, v in value.items() if f"{key}.{k}" not in ignored}
        out[key] = value
    return out


def dvc_params(stage: str) -> list[str]:
    """The params keys ``dvc.yaml`` must declare for ``stage`` (DVC granularity, see module doc).

    ``section.key`` stays as it is where the schema requires ``key`` (so params.yaml always
    writes it) or where ``key`` is a placeholder DVC fills; any other key becomes its section.
    """
    from leakk.config import schema

    props = schema()["properties"]
    if STAGES[stage].dvc_reads:
        return list(STAGES[stage].dvc_reads)
    keys: list[str] = []
    for key in STAGES[stage].reads:
        top, _, rest = key.partition(".")
        if rest in DVC_PLACEHOLDERS:
            keys.append(f"{top}.{DVC_PLACEHOLDERS[rest]}")
        elif rest and "." not in rest and rest in props.get(top, {}).get("required", ()):
            keys.append(key)
        else:
            keys.append(top)
    whole = set(keys)
    out: list[str] = []
    for key in keys:  # a whole section covers its sub-keys; keep the first mention's order
        if key not in out and not (key.partition(".")[2] and key.partition(".")[0] in whole):
            out.append(key)
    return out


def gpu_requested(device: str) -> int:
    """1 where a model stage will run on a GPU: ``cuda…``, or ``auto`` on a machine with an
    NVIDIA driver (checked without importing torch, so the DAG builds fast)."""
    if device.startswith("cuda"):
        return 1
    return int(device == "auto" and shutil.which("nvidia-smi") is not None)


def judge_uses_device(params: dict[str, Any], label: str) -> bool:
    """Whether judge ``label`` runs a model on the device (nli, embedding; not fact, rougeL, llm)."""
    from leakk.judges import JUDGES

    entry = params["judge"][label] or {}
    return bool(JUDGES.get(entry.get("type", label)).uses_device)


def stage_resources(params: dict[str, Any], stage: str) -> dict[str, Any]:
    """Scheduler resources of ``stage``'s jobs: memory, runtime and, for model stages on a GPU,
    ``gpu: 1`` (the SLURM executor turns it into ``--gpus=1``); for the judge stage a function
    of the job's ``{judge}`` wildcard."""
    spec = STAGES[stage]
    gpu: Any = gpu_requested(params["device"]) if spec.model else 0
    if spec.model == "judge":
        on_gpu = gpu

        def gpu(wildcards) -> int:  # noqa: F811 - per job: does this job's judge run a model?
            return on_gpu * judge_uses_device(params, wildcards.judge)
    return {"mem_mb": spec.mem_mb, "runtime": spec.runtime, "gpu": gpu}

"""dvc.yaml, generated in full from the stage table for one params file (``leakk dvc-yaml``).

Every stage with a :class:`~leakk.workflow.table.Dvc` form becomes one dvc.yaml stage: its
command line from the table's arguments, its deps and outs, its ``foreach``/``matrix`` computed
from the params (models, runs, judges), and its ``params:``, the keys the stage reads with
DVC's placeholders (``unlearn.${item}``). DVC reads params.yaml as written and refuses a
declared key that is absent, so a key left to its schema default is not declared; the file
then differs from what ``leakk dvc-yaml`` writes once an edit adds the key, and DVC's first
stage (``validate``, which runs ``leakk dvc-yaml --check``) stops with one line before anything
else runs. The same happens after a structural edit (a new run, judge or model, RULE rounds):
regenerate with ``leakk dvc-yaml``. ``tests/test_dvc_yaml.py`` fails when the committed dvc.yaml
is not the one written for params.yaml.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from leakk.config import read_params_file
from leakk.core.layout import RESULTS as L
from leakk.core.layout import model_folder
from leakk.core.params import fill, has
from leakk.workflow.table import COMMANDS, STAGES, Stage, placeholders

HEADER = """\
# Written by `leakk dvc-yaml` from the stage table (src/leakk/workflow/table.py) for params.yaml:
# do not edit by hand. The same stages as the Snakefile, for `dvc repro`; each declares the
# params keys it reads, so editing a sampling parameter re-runs sampling and what follows,
# never fine-tuning or unlearning. A finished `snakemake` run is recorded here (dvc.lock) by
# `leakk dvc-record`, so either tool continues from the other. After adding a run, a judge or
# a model, changing RULE's rounds or writing out a key left to its default, run
# `leakk dvc-yaml` again (the validate stage refuses a stale file before anything runs).
"""

#: ``dvc plots show``: leak@k per model at the headline judge and decoding
PLOTS = [{L.file("leak_curve.csv"): {"x": "k", "y": "leak_at_k", "template": "dvc_plots/leak_at_k.json",
                                     "title": "leak@k at the headline judge and decoding"}}]


def _items(stage_doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """(``${key}``, ``${item}``) of every expansion of a templated stage."""
    if "foreach" in stage_doc:
        each = stage_doc["foreach"]
        return list(each.items()) if isinstance(each, dict) else [(str(v), v) for v in each]
    if "matrix" in stage_doc:
        import itertools

        names = list(stage_doc["matrix"])
        return [("-".join(map(str, combo)), dict(zip(names, combo)))
                for combo in itertools.product(*stage_doc["matrix"].values())]
    return [("", None)]


def _expand(text: str, key: str, item: Any) -> str:
    """``text`` with DVC's ``${key}``, ``${item}`` and ``${item.x}`` filled for one expansion."""
    text = text.replace("${key}", key)
    if isinstance(item, dict):
        return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)
    return text.replace("${item}", str(item))


def dvc_params(stage: Stage, params: dict[str, Any], raw: dict[str, Any], stage_doc: dict[str, Any]) -> list[str]:
    """The keys ``stage``'s dvc.yaml entry declares: what it reads, placeholders in DVC's syntax
    or filled from params, those params.yaml leaves to their defaults left out, and a key whose
    section is declared whole dropped."""
    spec = stage.dvc
    reads = spec.reads(params) if callable(spec.reads) else (spec.reads if spec.reads is not None else stage.reads)
    names = {**placeholders(params), **spec.names}
    keys: list[str] = []
    for key in reads:
        key = fill(key, names)
        if key not in keys and all(has(raw, _expand(key, k, item)) for k, item in _items(stage_doc)):
            keys.append(key)
    return [k for k in keys if not any(k.startswith(f"{other}.") for other in keys)]


def command_line(stage: Stage) -> str:
    """``leakk [--threads N] <command> <arguments>`` with the DVC form's arguments."""
    spec = stage.dvc
    command = COMMANDS[spec.command or stage.command]
    parts = ["leakk", *([f"--threads {stage.threads}"] if stage.threads else []), command.name]
    for a in command.args:
        if a.dest in spec.args:
            value = spec.args[a.dest]
            parts.append(value if a.positional else f"{a.flags[0]} {value}")
    return " ".join(parts) + (f" && {spec.then}" if spec.then else "")


def document(params_file: str | os.PathLike, params: dict[str, Any]) -> dict[str, Any]:
    """dvc.yaml as a mapping, for ``params`` read from ``params_file``."""
    raw = read_params_file(params_file)
    stages: dict[str, Any] = {}
    for stage in STAGES.values():
        spec = stage.dvc
        if spec is None:
            continue
        enabled = spec.enabled or (stage.snakemake.enabled if stage.snakemake else None)
        if enabled is not None and not enabled(params):
            continue
        body: dict[str, Any] = {"cmd": command_line(stage)}
        expand: dict[str, Any] = {}
        if spec.foreach is not None:
            expand = {"foreach": spec.foreach(params)}
            if not expand["foreach"]:
                continue
        elif spec.matrix is not None:
            expand = {"matrix": spec.matrix(params)}
        if stage.name == "validate":  # the whole file, and a dvc.yaml that is current for it
            body["cmd"] = f"leakk dvc-yaml --check && {body['cmd']}"
            body["params"] = [{"params.yaml": None}]
        else:
            if spec.deps:
                body["deps"] = list(spec.deps)
            keys = dvc_params(stage, params, raw, expand)
            if keys:
                body["params"] = keys
        body["outs"] = list(spec.outs)
        if spec.metrics:
            body["metrics"] = list(spec.metrics)
        doc = {"foreach": expand["foreach"], "do": body} if "foreach" in expand else {**expand, **body}
        stages[spec.name or stage.name] = doc
    return {"vars": [{"full_dir": model_folder(params, "full")}], "stages": stages, "plots": PLOTS}


def render(params_file: str | os.PathLike, params: dict[str, Any]) -> str:
    """The text of dvc.yaml for ``params`` (read from ``params_file``)."""
    body = yaml.safe_dump(document(params_file, params), sort_keys=False, width=120, allow_unicode=True)
    return HEADER + body


def stale(path: str | os.PathLike, params_file: str | os.PathLike, params: dict[str, Any]) -> str:
    """What differs between ``path`` and the dvc.yaml for ``params`` ("" when it is current)."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    written = yaml.safe_load(path.read_text()) or {}
    wanted = document(params_file, params)
    for section in ("vars", "plots"):
        if written.get(section) != wanted[section]:
            return section
    have, want = written.get("stages") or {}, wanted["stages"]
    diff = [s for s in dict.fromkeys([*want, *have]) if have.get(s) != want.get(s)]
    if diff:
        return f"stage {diff[0]}" + (f" and {len(diff) - 1} more" if len(diff) > 1 else "")
    return "" if path.read_text() == render(params_file, params) else "comments"

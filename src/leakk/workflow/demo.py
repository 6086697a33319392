"""``leakk demo tofu``: the real-benchmark path, offline, on a CPU, in minutes.

What ``configs/tofu_forget10.yaml`` does on a GPU — a TOFU dataset folder and published
Llama checkpoints (``full``, ``retrain``) go through ``download`` (a local folder is used in
place), the TOFU loader (``datasets.load_dataset`` on the hub layout), chat-template prompts,
GA/GradDiff/NPO and RULE from ``full``, sampling, judging, leak@k and the report — runs here on
stand-ins built locally (:mod:`leakk.models.demo`):

- ``inputs/TOFU``: a TOFU-layout folder (forget10, forget10_perturbed, retain90, holdout10;
  20 QA per fictitious author) of the synthetic benchmark's facts;
- ``inputs/models/{full,retrain}``: tiny Llamas (random init, a BPE tokenizer with a chat
  template) fine-tuned by leakk's own finetune code, ``full`` on every QA, ``retrain`` on the
  retain authors only — the roles of the published checkpoints.

The preset is trimmed to them (:func:`demo_params`, every change listed in the params file's
header) and run with the repository's Snakefile in its own folder (``snakemake --directory
results/demo_tofu``), so it never touches the default run's ``results/``. The numbers of a
0.1M-parameter model say nothing about Llama; the point is the path.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from leakk.core.errors import LeakkError, ParamsError
from leakk.core.io import atomic_path, write_text

#: where ``leakk demo tofu`` works (its params.yaml, inputs/ and the run's results/)
ROOT = Path("results/demo_tofu")
PRESET = Path("configs/tofu_forget10.yaml")

#: the stand-ins' sizes: 2 forget authors (40 questions), 4 retain authors, 1 holdout
INPUTS = {"authors_forget": 2, "authors_retain": 4, "qa": 20, "seed": 0, "vocab_size": 400, "hidden": 64,
          "layers": 2, "positions": 128, "epochs": 60, "lr": 3.0e-3, "batch_size": 16}

#: the preset's values the demo replaces (dotted key → value), beside the data and model folders
TRIM: dict[str, Any] = {
    "device": "cpu",
    "training.precision": "fp32",  # a CPU has no bf16 speed-up; accumulation and checkpointing stay on
    **{f"unlearn.{run}.{key}": value for run in ("ga", "graddiff", "npo", "simnpo", "wga", "npo_entropy", "idknll",
                                                             "idkdpo", "rmu")
       for key, value in (("steps", 8), ("lr", 3.0e-4))},
    "unlearn.rmu.layer": 0, "unlearn.rmu.trained_layers": 1,  # the stand-in has 2 blocks (block 1's output is normed)
    "rule.rule_graddiff.rounds": 1, "rule.rule_npo.rounds": 1,
    "rule.rule_graddiff.n": 8, "rule.rule_npo.n": 8,
    "rule.rule_graddiff.steps": 4, "rule.rule_npo.steps": 4,
    "rule.rule_graddiff.max_new_tokens": 32, "rule.rule_npo.max_new_tokens": 32,
    **{f"attack.{name}.models": ["retrain", "ga"] for name in ("int8", "int4", "nf4", "relearn", "paraphrase")},
    "attack.relearn.steps": 4, "attack.relearn.lr": 3.0e-4,
    "sample.n": 16, "sample.max_new_tokens": 32,
    "estimate.ks": [1, 2, 4, 8, 16], "estimate.bootstrap": 200,
}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


def demo_params(preset: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TOFU preset trimmed to the local stand-ins: folders (relative to the demo folder,
    ``revision: null``) in place of hub ids, then :data:`TRIM`, then ``overrides`` (dotted
    key → value; the tests trim further)."""
    p = copy.deepcopy(preset)
    bench = p["data"]["benchmark"]
    p["data"][bench].update(repo="inputs/TOFU", revision=None, forget_limit=None, retain_limit=None)
    p["models"] = {name: {"repo": f"inputs/models/{name}", "revision": None} for name in ("full", "retrain")}
    for key, value in {**TRIM, **(overrides or {})}.items():
        _set(p, key, value)
    return p


def params_text(preset_file: str | os.PathLike, overrides: dict[str, Any] | None = None) -> str:
    """The demo's params.yaml: the preset file trimmed (its header names every change)."""
    from leakk.config import read_params_file

    p = demo_params(read_params_file(preset_file), overrides)
    changes = ", ".join(f"{k}: {json.dumps(v)}" for k, v in {**TRIM, **(overrides or {})}.items())
    head = (f"# written by `leakk demo tofu` from {preset_file}; edit that file, not this one.\n"
            "# Hub ids are replaced by local stand-ins (inputs/, revision: null) and the run is trimmed:\n"
            f"# {changes}\n")
    return head + yaml.safe_dump(p, sort_keys=False, allow_unicode=True)


def build_inputs(work: str | os.PathLike, spec: dict[str, Any] | None = None) -> Path:
    """``work/inputs``: the TOFU-layout folder and the fine-tuned ``full``/``retrain`` folders.
    Built once into a temporary folder and renamed into place; kept while ``spec`` (default
    :data:`INPUTS`) is unchanged, so a second demo run re-runs nothing."""
    from leakk.data import build_benchmark
    from leakk.models.demo import CHAT_TEMPLATE, tiny_llama_folder, tofu_repo
    from leakk.models.finetune import finetune

    spec = dict(INPUTS, **(spec or {}))
    inputs = Path(work) / "inputs"
    stamp = inputs / "inputs.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == spec:
        return inputs
    print(f"leakk demo: building the local stand-ins in {inputs} (TOFU layout, two tiny Llamas)",
          file=sys.stderr, flush=True)
    with atomic_path(inputs, is_dir=True) as tmp:
        tofu = tofu_repo(tmp / "TOFU", spec["authors_forget"], spec["authors_retain"], spec["qa"], seed=spec["seed"])
        data = build_benchmark("tofu", {"forget": "forget10", "holdout": True}, 0, source=tofu)
        texts = [t for r in data.iter_rows(named=True) for t in (r["question"], r["paraphrased_question"], r["answer"])]
        texts.append(CHAT_TEMPLATE)  # the template's markers get tokens of their own
        start = tiny_llama_folder(tmp / "start", texts, vocab_size=spec["vocab_size"], hidden=spec["hidden"],
                                  layers=spec["layers"], positions=spec["positions"], chat_template=CHAT_TEMPLATE,
                                  seed=spec["seed"])
        for name, splits in (("full", ["forget", "retain"]), ("retrain", ["retain"])):
            finetune(data, tmp / "models" / name, splits=splits, model_params={"base": start},
                     train_params={"epochs": spec["epochs"], "lr": spec["lr"], "batch_size": spec["batch_size"],
                                   "warmup_ratio": 0.05, "weight_decay": 0.0},
                     template="chat", seed=spec["seed"], device="cpu", name=f"demo {name}")
            (tmp / "models" / name / "train_log.parquet").unlink()  # a published checkpoint has none
        shutil.rmtree(start)
        (tmp / "inputs.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return inputs


def run(name: str = "tofu", *, root: str | os.PathLike = ROOT, snakefile: str | os.PathLike = "Snakefile",
        preset: str | os.PathLike = PRESET, cores: str = "all", report: bool = True,
        extra: Sequence[str] = (), overrides: dict[str, Any] | None = None) -> Path:
    """Build the inputs, write the params, run the DAG and its report in ``root``; return the
    report's path. Resumable: a second run is "Nothing to be done"."""
    from leakk.config import load_params
    from leakk.workflow.replicates import _env, snakemake_command

    if name != "tofu":
        raise ParamsError(f"demo: unknown demo {name!r} (known: ['tofu'])")
    snakefile, preset, root = Path(snakefile), Path(preset), Path(root)
    for path, what in ((snakefile, "Snakefile"), (preset, "preset")):
        if not path.is_file():
            raise ParamsError(f"{path}: no such {what} (run from the repository root, or pass --{what.lower()})")
    build_inputs(root)
    config = root / "params.yaml"
    text = params_text(preset, overrides)
    if not (config.is_file() and config.read_text() == text):
        write_text(text, config)
    cwd = Path.cwd()
    try:  # validate as the jobs will: from the demo folder, where the relative folders are
        os.chdir(root)
        load_params("params.yaml")
    finally:
        os.chdir(cwd)
    steps = [snakemake_command(snakefile, root, config, cores, extra)]
    if report and not ({"-n", "--dry-run"} & set(extra)):
        steps.append(snakemake_command(snakefile, root, config, "1", ["--report", str((root / "results/report.html")
                                                                                      .resolve())]))
    for cmd in steps:
        rc = subprocess.call(cmd, env=_env())
        if rc:
            raise LeakkError(f"demo {name}: snakemake exited with status {rc} (run folder {root}, log "
                             f"{root}/.snakemake/log/); rerun to resume")
    return root / "results" / "report.html"

"""Shared fixtures: a micro configuration of the whole pipeline, small enough for seconds."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

import leakk  # noqa: F401  (first: pins the CPU kernels before any test imports torch)

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]

MICRO = {
    "seed": 0,
    "device": "cpu",
    "prompt_template": "Question: {question} Answer:",
    "data": {"benchmark": "synthetic",
             "synthetic": {"authors": 10, "qa_per_author": 3, "forget_fraction": 0.2, "phrasings": 3}},
    "model": {"base": None, "vocab_size": 200,
              "arch": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48}},
    "models": {},
    "training": {},  # written out too: dvc.yaml declares it (defaults: plain fp32 training)
    "finetune": {"epochs": 3, "lr": 5e-3, "batch_size": 16},
    "unlearn": {"ga": {"method": "ga", "steps": 2, "lr": 1e-4, "batch_size": 8},
                "npo": {"method": "npo", "steps": 2, "lr": 1e-4, "batch_size": 8, "alpha": 1.0}},
    "rule": {"rule_npo": {"base": "npo", "rounds": 2, "n": 4, "steps": 2, "judge": "rougeL", "seed": 99,
                          "max_new_tokens": 12}},
    # shards and question_column written out: dvc.yaml declares them (it declares the keys a stage
    # reads that the file writes)
    "sample": {"backend": "hf", "n": 4, "max_new_tokens": 12, "seed": 5, "batch_rows": 16, "shards": 1,
               "question_column": "paraphrased_question", "decodings": [{"temperature": 1.0, "top_p": 1.0}]},
    # a low ROUGE threshold so that the micro model's completions do "leak"
    "judge": {"fact": {}, "rougeL": {"threshold": 0.3}},
    "estimate": {"ks": [1, 2, 4], "bootstrap": 50},
}


@pytest.fixture
def micro_params() -> dict:
    return copy.deepcopy(MICRO)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


#: fixtures that train a model or run RULE rounds (seconds each, not milliseconds)
_EXPENSIVE_FIXTURES = {"base", "rule_run", "rule_setup", "micro_full", "full_model"}


@pytest.fixture(scope="session")
def micro_full(tmp_path_factory):
    """The MICRO full model, fine-tuned once per session on seed-0 data: (root, data) with the
    model in ``root / "model"``."""
    from leakk.config import validate_params
    from leakk.data.synthetic import generate
    from leakk.models.finetune import finetune

    root = tmp_path_factory.mktemp("micro_full")
    p = validate_params(MICRO)
    data = generate(**p["data"]["synthetic"], seed=0)
    finetune(data, root / "model", splits=["forget", "retain"], model_params=p["model"],
             train_params=p["finetune"], template=p["prompt_template"], seed=0)
    return root, data


def pytest_collection_modifyitems(config, items):
    """Under ``make mutation`` (mutmut sets MUTANT_UNDER_TEST), run each mutant's cheap tests
    first: pytest stops at the first failure (-x), so a mutant a unit test kills never pays
    for a RULE round. Ordinary runs keep the collection order."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        items.sort(key=lambda item: bool(_EXPENSIVE_FIXTURES & set(getattr(item, "fixturenames", ()))))


def register_rule_judge(name: str, verdict) -> None:
    """Register a test judge whose verdict on each completion is ``verdict(text)`` (True =
    leaked; an exception = the judge failing), once per process."""
    import numpy as np

    from leakk.judges import JUDGES, Judge, register_judge

    if name in JUDGES:
        return

    class RuleJudge(Judge):
        def score_batch(self, completions, references, facts, questions=None):
            flags = [bool(verdict(c)) for c in completions]
            return np.array(flags, dtype=float), np.array(flags, dtype=object)

    register_judge(name)(RuleJudge)

"""One declaration of what each stage reads (leakk.pipeline.STAGES): dvc.yaml must agree with
it, and the Snakemake jobs take their params from it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from conftest import MICRO, ROOT
from leakk.config import validate_params
from leakk.pipeline import STAGES, dvc_params, gpu_requested, stage_params, stage_resources


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _declared(stage: dict) -> list[str]:
    body = stage.get("do", stage)
    keys = []
    for entry in body.get("params", []):
        keys.extend(entry if isinstance(entry, dict) else [entry])
    return keys


def test_every_dvc_stage_declares_what_the_table_says():
    dvc = _dvc_stages()
    covered = set()
    for name, spec in STAGES.items():
        for dvc_name in spec.dvc:
            assert dvc_name in dvc, f"dvc.yaml lacks stage {dvc_name!r} (leakk.pipeline.STAGES[{name!r}])"
            assert _declared(dvc[dvc_name]) == dvc_params(name), (
                f"dvc.yaml stage {dvc_name!r} declares {_declared(dvc[dvc_name])}, "
                f"leakk.pipeline.STAGES[{name!r}] says {dvc_params(name)}")
            covered.add(dvc_name)
    assert set(dvc) - covered == {"validate"}, "a dvc.yaml stage that leakk.pipeline does not declare"


def test_validate_stage_reads_the_whole_params_file_and_everything_depends_on_it():
    dvc = _dvc_stages()
    assert dvc["validate"]["params"] == [{"params.yaml": None}]
    assert "results/.params_valid" in dvc["data"]["deps"]


def test_rule_rounds_survive_a_dvc_rerun():
    outs = _dvc_stages()["rule"]["do"]["outs"]
    assert outs == [{"results/rule/${key}": {"persist": True}}]


def test_snakemake_jobs_read_the_declared_keys():
    p = validate_params(MICRO)
    sample = stage_params(p, "sample")
    assert set(sample) == {"device", "prompt_template", "sample.backend", "sample.n", "sample.max_new_tokens",
                           "sample.seed", "sample.batch_rows", "sample.question_column"}
    assert sample["sample.n"] == MICRO["sample"]["n"]
    rnd = stage_params(p, "rule_round", name="rule_npo")
    assert set(rnd) == {"seed", "device", "prompt_template", "rule.rule_npo", "unlearn.npo", "judge.rougeL",
                        "sample.backend", "training"}
    assert "rounds" not in rnd["rule.rule_npo"]  # more rounds keep the finished ones
    assert stage_params(p, "unlearn", name="ga") == {
        "seed": 0, "device": "cpu", "prompt_template": MICRO["prompt_template"], "unlearn.ga": p["unlearn"]["ga"],
        "training": {"precision": "auto", "gradient_accumulation": 1, "gradient_checkpointing": False, "lora": None}}
    ev = stage_params(p, "rule_eval")
    assert {"judge.fact", "estimate.headline_judge"} <= set(ev) and "judge.rougeL" not in ev


@pytest.mark.parametrize("device, gpu", [("cpu", 0), ("cuda", 1), ("cuda:1", 1)])
def test_gpu_only_where_params_put_a_model_on_one(device, gpu):
    p = validate_params(dict(MICRO, device=device), host=False)  # planned here, run on a GPU machine
    assert stage_resources(p, "sample")["gpu"] == gpu == gpu_requested(device)
    assert stage_resources(p, "data")["gpu"] == 0
    judge_gpu = stage_resources(p, "judge")["gpu"]  # per job: only judges that run a model
    assert judge_gpu(SimpleNamespace(judge="rougeL")) == 0 and judge_gpu(SimpleNamespace(judge="fact")) == 0


def test_model_judges_ask_for_the_gpu():
    p = validate_params(dict(MICRO, device="cuda", judge={**MICRO["judge"], "es": {"type": "nli"}}), host=False)
    judge_gpu = stage_resources(p, "judge")["gpu"]
    assert judge_gpu(SimpleNamespace(judge="es")) == 1 and judge_gpu(SimpleNamespace(judge="fact")) == 0


def test_no_stage_reads_replicates():
    """`replicates` is for `leakk replicates` only: a plain snakemake/dvc run uses `seed`, and
    adding or editing it re-runs nothing (only DVC's validate stage, whose stamp is constant)."""
    assert not [key for spec in STAGES.values() for key in (*spec.reads, *spec.dvc_reads)
                if key.split(".")[0] == "replicates"]
    with_reps = validate_params(dict(MICRO, replicates=[0, 1, 2]))
    plain = validate_params(MICRO)
    for stage in STAGES:
        names = {"name": "rule_npo", "judge": "rougeL", "source": "models.full"}
        assert stage_params(with_reps, stage, **names) == stage_params(plain, stage, **names), stage
    assert not [k for name in STAGES for k in dvc_params(name) if k.startswith("replicates")]

"""`leakk dvc-yaml`: dvc.yaml is generated in full from the stage table for a params file, so
presets whose models are published checkpoints (`models:`) run through DVC too, and the
committed file is exactly the one written for params.yaml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import MICRO, ROOT, write_params
from leakk.cli import main
from leakk.config import load_params
from leakk.workflow.dvc import document, render, stale

TEXT = (ROOT / "dvc.yaml").read_text()
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def test_the_committed_dvc_yaml_is_the_one_generated_for_params_yaml():
    p = load_params(ROOT / "params.yaml")
    assert render(ROOT / "params.yaml", p) == TEXT, "dvc.yaml is stale: run `leakk dvc-yaml` and commit it"
    assert stale(ROOT / "dvc.yaml", ROOT / "params.yaml", p) == ""


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_preset_gets_a_dvc_yaml_that_dvc_can_read(path, tmp_path):
    """Generation is a function of the params file alone: a preset's file parses, declares only
    keys the preset writes, and params.yaml's is the committed one again."""
    text = render(path, load_params(path, host=False))  # written for a GPU machine: not this one
    doc = yaml.safe_load(text)
    assert text.startswith("# Written by `leakk dvc-yaml`") and doc["stages"]["validate"]
    raw = yaml.safe_load(path.read_text())
    from leakk.core.params import has

    for name, stage in doc["stages"].items():
        for key in (stage.get("do", stage).get("params") or []):
            if isinstance(key, str) and "${" not in key:
                assert has(raw, key), (name, key)
    assert render(ROOT / "params.yaml", load_params(ROOT / "params.yaml")) == TEXT


def test_the_tofu_preset_samples_the_published_checkpoints_and_trains_nothing():
    path = ROOT / "configs" / "tofu_forget10.yaml"
    doc = document(path, load_params(path, host=False))
    stages = doc["stages"]
    assert {"full_dir": "results/hub/models/full"} in doc["vars"]
    assert "finetune" not in stages
    for stage in ("sample", "bounds"):
        assert stages[stage]["foreach"]["full"] == {"dir": "results/hub/models/full", "dep": "results/hub/models/full"}
        assert stages[stage]["foreach"]["retrain"]["dir"] == "results/hub/models/retrain"
    assert stages["judge"]["matrix"]["model"][:2] == ["full", "retrain"]
    assert "--model-dir ${full_dir}" in stages["unlearn"]["do"]["cmd"] and "${full_dir}" in stages["unlearn"]["do"]["deps"]
    # one DVC stage fetches every hub source, reading exactly their params
    assert stages["download"]["params"] == ["data.tofu", "models.full", "models.retrain"]


def test_a_local_folder_and_an_extra_model_are_sampled_where_they_are(tmp_path):
    p = dict(MICRO, models={"published": {"repo": str(tmp_path / "ckpt")}, "retrain": {"repo": "org/r",
                                                                                         "revision": "abc"}})
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")  # a model folder: validation looks for these
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"")
    path = write_params(tmp_path / "params.yaml", p)
    stages = document(path, load_params(path))["stages"]
    assert stages["finetune"]["foreach"] == ["full"]  # retrain is published, full is trained here
    dirs = {m: item["dir"] for m, item in stages["sample"]["foreach"].items()}
    assert {k: dirs[k] for k in ("full", "retrain", "published")} == {
        "full": "results/models/full", "retrain": "results/hub/models/retrain", "published": str(tmp_path / "ckpt")}


def test_check_fails_with_one_line_on_a_stale_file(tmp_path, capsys):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    preset = ROOT / "configs" / "wmdp_rmu.yaml"
    assert main(["--params", str(preset), "dvc-yaml", "--check", "--file", str(tmp_path / "dvc.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale for" in err and "(vars)" in err and "dvc-yaml" in err
    assert main(["--params", str(preset), "dvc-yaml", "--file", str(tmp_path / "dvc.yaml")]) == 0
    assert main(["--params", str(preset), "dvc-yaml", "--check", "--file", str(tmp_path / "dvc.yaml")]) == 0


def test_a_key_written_out_later_makes_the_file_stale(tmp_path):
    """A key left to its schema default is not declared (DVC refuses an absent key); writing it
    out in the params file makes dvc.yaml stale, so DVC's first stage stops before any run."""
    raw = dict(MICRO, estimate=dict(MICRO["estimate"]))
    path = write_params(tmp_path / "params.yaml", raw)
    (tmp_path / "dvc.yaml").write_text(render(path, load_params(path)))
    assert "estimate.ci_method" not in (tmp_path / "dvc.yaml").read_text()
    raw["estimate"]["ci_method"] = "percentile"
    write_params(path, raw)
    assert stale(tmp_path / "dvc.yaml", path, load_params(path)).startswith("stage")


def test_dvc_lists_the_tofu_presets_paper_dag(tmp_path):
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        pytest.skip("dvc is not installed (leakk[workflow])")
    shutil.copy(ROOT / "configs" / "tofu_forget10.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(render(tmp_path / "params.yaml", load_params(tmp_path / "params.yaml", host=False)))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout.split()
    runs, rules = ("ga", "graddiff", "npo", "simnpo", "wga", "npo_entropy", "idknll", "idkdpo", "rmu"), ("rule_graddiff", "rule_npo")
    attacked = tuple(f"{m}__{a}" for a in ("int8", "int4", "nf4", "relearn", "paraphrase")
                     for m in ("retrain", "ga", "graddiff", "npo", "simnpo"))
    models = ("full", "retrain", *runs, *rules, *attacked)
    assert set(out) == {
        "validate", "download", "data", "estimate", "calibrate", "figures@rougeL", "bounds_table", "reliability",
        "report_tables", "report_examples", "attack_figure", *(f"attack@{m}" for m in attacked),
        *(f"{stage}@{m}" for stage in ("sample", "bounds") for m in models),
        *(f"judge@{m}-rougeL" for m in models),
        *(f"unlearn@{r}" for r in runs),
        *(f"{stage}@{r}" for stage in ("rule", "rule_eval") for r in rules)}  # no finetune: full and retrain are published


def test_micro_params_get_their_own_current_dvc_yaml(tmp_path):
    """The workflow tests' params write their dvc.yaml with `leakk dvc-yaml`; it is then current."""
    path = write_params(tmp_path / "params.yaml", MICRO)
    assert main(["--params", str(path), "dvc-yaml", "--file", str(tmp_path / "dvc.yaml")]) == 0
    assert stale(tmp_path / "dvc.yaml", path, load_params(path)) == ""
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    assert list(stages["sample"]["foreach"]) == ["full", "retrain", "ga", "npo", "rule_npo"]

"""`leakk dvc-yaml`: dvc.yaml's model lists follow the params file, so presets whose models
are published checkpoints (`models:`) run through DVC too."""

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
from leakk.dvc_yaml import model_lists, render, stale

TEXT = (ROOT / "dvc.yaml").read_text()
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def test_the_checked_in_dvc_yaml_is_the_rewrite_for_params_yaml():
    p = load_params(ROOT / "params.yaml")
    assert render(TEXT, p) == TEXT
    assert stale(ROOT / "dvc.yaml", p) == []


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_a_rewrite_changes_only_the_model_lines_and_is_undone_by_the_default(path):
    preset = render(TEXT, load_params(path, host=False))
    changed = [new for old, new in zip(TEXT.splitlines(), preset.splitlines(), strict=True) if old != new]
    assert len(changed) <= len(model_lists(load_params(path, host=False)))
    assert render(preset, load_params(ROOT / "params.yaml")) == TEXT


def test_the_tofu_preset_samples_the_published_checkpoints_and_trains_nothing():
    doc = yaml.safe_load(render(TEXT, load_params(ROOT / "configs" / "tofu_forget10.yaml", host=False)))
    stages = doc["stages"]
    assert {"full_dir": "results/hub/models/full"} in doc["vars"]
    assert stages["finetune"]["foreach"] == []
    hub = {"full": {"dir": "results/hub/models/full"}, "retrain": {"dir": "results/hub/models/retrain"}}
    assert stages["sample_base"]["foreach"] == stages["bounds"]["foreach"] == hub
    assert stages["judge"]["matrix"]["model"] == ["full", "retrain"]
    assert "--model-dir ${full_dir}" in stages["unlearn"]["do"]["cmd"] and "${full_dir}" in stages["unlearn"]["do"]["deps"]


def test_a_local_folder_and_an_extra_model_are_sampled_where_they_are(tmp_path):
    p = dict(MICRO, models={"published": {"repo": str(tmp_path / "ckpt")}, "retrain": {"repo": "org/r",
                                                                                         "revision": "abc"}})
    lists = model_lists(p)
    assert lists["stages.finetune.foreach"] == ["full"]  # retrain is published, full is trained here
    assert lists["stages.sample_base.foreach"] == {"full": {"dir": "results/models/full"},
                                                   "retrain": {"dir": "results/hub/models/retrain"},
                                                   "published": {"dir": str(tmp_path / "ckpt")}}


def test_check_fails_with_one_line_on_stale_lists(tmp_path, capsys):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    preset = ROOT / "configs" / "wmdp_rmu.yaml"
    assert main(["--params", str(preset), "dvc-yaml", "--check", "--file", str(tmp_path / "dvc.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stages.finetune.foreach" in err and "dvc-yaml" in err
    assert main(["--params", str(preset), "dvc-yaml", "--file", str(tmp_path / "dvc.yaml")]) == 0
    assert main(["--params", str(preset), "dvc-yaml", "--check", "--file", str(tmp_path / "dvc.yaml")]) == 0


def test_dvc_lists_the_tofu_presets_paper_dag(tmp_path):
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        pytest.skip("dvc is not installed (leakk[workflow])")
    shutil.copy(ROOT / "configs" / "tofu_forget10.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(render(TEXT, load_params(tmp_path / "params.yaml", host=False)))
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=tmp_path, check=True, capture_output=True,
                         text=True).stdout.split()
    runs, rules = ("ga", "graddiff", "npo"), ("rule_graddiff", "rule_npo")
    assert set(out) == {
        "validate", "download", "data", "estimate", "calibrate", "figures@rougeL", "bounds_table", "reliability",
        *(f"{stage}@{m}" for stage in ("sample_base", "bounds") for m in ("full", "retrain")),
        *(f"judge@{m}-rougeL" for m in ("full", "retrain")),
        *(f"{stage}@{r}" for stage in ("unlearn", "sample_unlearn", "bounds_unlearn") for r in runs),
        *(f"judge_unlearn@{r}-rougeL" for r in runs),
        *(f"{stage}@{r}" for stage in ("rule", "rule_eval", "sample_rule", "bounds_rule") for r in rules),
        *(f"judge_rule@{r}-rougeL" for r in rules)}  # no finetune: full and retrain are published


def test_micro_params_need_no_rewrite(tmp_path):
    """The workflow tests' params (no `models:`) run with the checked-in dvc.yaml."""
    assert stale(ROOT / "dvc.yaml", load_params(write_params(tmp_path / "params.yaml", MICRO))) == []

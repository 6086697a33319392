"""The real-experiment presets under configs/: complete, valid, pinned, and the TOFU one plans
the paper's whole DAG."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import ROOT
from leakk.config import check_host, load_params
from leakk.core.errors import ParamsError
from leakk.core.layout import model_names
from leakk.data.hub import hub_sources
from test_workflow import planned_rules, snakemake

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_is_complete_and_valid_with_every_hub_source_pinned(path):
    """Valid as far as this machine can tell (host=False: the GPU presets' device and vLLM
    backend are checked where they run); with the host checks, valid exactly where its device
    and packages are here, else one line naming the key."""
    p = load_params(path, host=False)
    try:
        check_host(p, str(path))
    except ParamsError as err:
        with pytest.raises(ParamsError) as again:
            load_params(path)
        assert str(again.value) == str(err) and "(rule: available here" in str(err)
    else:
        load_params(path)
    sources = hub_sources(p)
    if p["data"]["benchmark"] == "synthetic":  # an offline preset (e.g. the decoding grid)
        assert not sources
        return
    assert sources, "a real-experiment preset names hub sources"
    for key, src in sources.items():
        rev = src["revision"]
        # a commit hash, or `main` marked TODO in the file (README lists them)
        assert re.fullmatch(r"[0-9a-f]{40}", rev) or (rev == "main" and "TODO" in path.read_text()), (key, rev)


def test_tofu_preset_plans_the_paper_dag(tmp_path):
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "tofu_forget10.yaml", tmp_path / "configs")
    # planned for the GPU machine it is written for: this machine's device is not checked
    plan = snakemake(tmp_path, "-n", "--configfile", "configs/tofu_forget10.yaml", env={"LEAKK_HOST_CHECKS": "off"})
    assert plan.returncode == 0, plan.stderr[-3000:]
    rules = planned_rules(plan)
    assert rules == {"download", "data", "unlearn", "rule_round", "rule_eval", "rule_report", "sample", "judge",
                     "estimate", "figures", "bounds", "bounds_table", "reliability", "report_tables", "report_examples",
                     "attack", "attack_figure", "all"}, rules
    out = plan.stdout
    for key in ("datasets/tofu", "models/full", "models/retrain"):
        assert f"download --key {key} " in out
    for name in ("ga", "graddiff", "npo", "simnpo", "wga", "npo_entropy", "idknll", "idkdpo", "rmu"):
        assert f"unlearn --data results/data/benchmark.parquet --name {name} --model-dir results/hub/models/full" in out
    p = load_params(tmp_path / "configs" / "tofu_forget10.yaml", host=False)
    attacked = [f"{m}__{a}" for a in ("int8", "int4", "nf4", "relearn", "paraphrase")
                for m in ("retrain", "ga", "graddiff", "npo", "simnpo")]
    assert model_names(p) == ["full", "retrain", "ga", "graddiff", "npo", "simnpo", "wga", "npo_entropy", "idknll",
                              "idkdpo", "rmu", "rule_graddiff", "rule_npo", *attacked]
    assert "attack --data results/data/benchmark.parquet --name relearn --model-dir results/models/ga" in out
    for model in model_names(p):  # every model is sampled at greedy and T = 1, top-p = 1
        for decoding in ("greedy", "t1.0_p1.0"):
            assert f"results/samples/{model}/{decoding}.parquet" in out
    assert "results/leak_at_k.parquet" in out and "results/figures/leak_at_k_rougeL.png" in out


def test_a_download_job_reads_only_its_own_source():
    from leakk.workflow.dvc import document
    from leakk.workflow.table import stage_params

    path = ROOT / "configs" / "tofu_forget10.yaml"
    p = load_params(path, host=False)
    assert stage_params(p, "download", source="models.full") == {"models.full": p["models"]["full"]}
    assert stage_params(p, "download", source="data.tofu") == {"data.tofu": p["data"]["tofu"]}
    # DVC: one stage fetches every source, reading each source's entry
    assert document(path, p)["stages"]["download"]["params"] == ["data.tofu", "models.full", "models.retrain"]

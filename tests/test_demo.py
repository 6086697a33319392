"""`leakk demo tofu`: the real-benchmark path offline (TOFU layout, Llama checkpoints given as
local folders with `revision: null`, the chat template), in its own folder."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from conftest import ROOT
from leakk.config import load_params
from leakk.workflow.demo import TRIM, demo_params

#: the demo trimmed further for the test: GA, NPO and one RULE run, 8 samples per question
SMALLER = {"unlearn.graddiff": None, "rule.rule_graddiff": None, "sample.n": 8, "estimate.ks": [1, 2, 4, 8],
           "rule.rule_npo.n": 4}


def _overrides(preset: dict) -> dict:
    p = demo_params(preset)
    out = {k: v for k, v in SMALLER.items() if v is not None}
    out["unlearn"] = {k: v for k, v in p["unlearn"].items() if k != "graddiff"}
    out["rule"] = {k: v for k, v in p["rule"].items() if k != "rule_graddiff"}
    out["rule"]["rule_npo"] = dict(out["rule"]["rule_npo"], n=4)
    del out["rule.rule_npo.n"]
    return out


def test_the_demo_params_are_the_preset_with_local_folders_and_the_listed_trims(tmp_path):
    from leakk.config import read_params_file

    preset = read_params_file(ROOT / "configs" / "tofu_forget10.yaml")
    p = demo_params(preset)
    assert p["data"]["tofu"]["repo"] == "inputs/TOFU" and p["data"]["tofu"]["revision"] is None
    assert p["models"] == {m: {"repo": f"inputs/models/{m}", "revision": None} for m in ("full", "retrain")}
    assert p["prompt_template"] == "chat" and p["judge"] == preset["judge"]
    assert p["sample"]["n"] == TRIM["sample.n"] and p["rule"]["rule_npo"]["rounds"] == 1
    assert set(p["attack"]) == set(preset["attack"]) and all(a["models"] == ["retrain", "ga"] for a in p["attack"].values())
    # everything else is the preset's
    assert p["seed"] == preset["seed"]
    for key in ("estimate", "sample"):
        assert {k: v for k, v in p[key].items() if f"{key}.{k}" not in TRIM} == \
            {k: v for k, v in preset[key].items() if f"{key}.{k}" not in TRIM}


@pytest.mark.slow  # builds two tiny Llamas and runs ~40 jobs: ~6 CPU-minutes
def test_demo_tofu_runs_the_real_path_offline_in_its_own_folder(tmp_path, monkeypatch):
    from leakk.config import read_params_file
    from leakk.workflow.demo import run

    work = tmp_path / "demo"
    overrides = _overrides(read_params_file(ROOT / "configs" / "tofu_forget10.yaml"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    report = run("tofu", root=work, snakefile=ROOT / "Snakefile", preset=ROOT / "configs" / "tofu_forget10.yaml",
                 cores="2", overrides=overrides)
    results = work / "results"
    assert report == results / "report.html" and report.is_file()
    monkeypatch.chdir(work)
    params = load_params("params.yaml")  # revision: null for the local folders, the chat template checked
    assert params["prompt_template"] == "chat"
    data = pl.read_parquet(results / "data" / "benchmark.parquet")  # read through the TOFU loader
    assert set(data["source_config"]) == {"forget10", "retain90"} and "forget10/author000" in set(data["group"])
    assert not (results / "hub").exists() and not (results / "models" / "full").exists()  # used in place
    leak = pl.read_parquet(results / "leak_at_k.parquet")
    attacked = {f"{m}__{a}" for m in ("retrain", "ga") for a in ("int8", "int4", "nf4", "relearn", "paraphrase")}
    assert set(leak["model"]) == {"full", "retrain", "ga", "npo", "simnpo", "wga", "npo_entropy", "idknll",
                                  "idkdpo", "rmu", "rule_npo"} | attacked
    assert set(leak.filter(pl.col("model") == "ga__nf4")["attack"]) == {"nf4"}
    pairs = pl.read_csv(results / "attacks.csv")
    assert set(zip(pairs["model"], pairs["base"])) == {(m, m.split("__")[0]) for m in attacked}
    held_out = pl.read_parquet(results / "samples" / "ga__relearn" / "t1.0_p1.0.parquet")["qid"].n_unique()
    assert held_out == data.filter(pl.col("split") == "forget").height // 2  # one of the two forget authors
    assert (results / "figures" / "attacks.png").is_file()
    at8 = {r["model"]: r["leak_at_k"] for r in leak.filter((pl.col("k") == 8) & (pl.col("decoding") == "t1.0_p1.0")
                                                            & (pl.col("judge") == "rougeL")).iter_rows(named=True)}
    assert at8["full"] > at8["retrain"]  # the stand-ins know their facts: full states them, retrain never saw them
    assert json.loads((results / "metrics" / "full.json").read_text())["leak@8"] == pytest.approx(at8["full"], abs=1e-3)
    assert "leakk-headline" in report.read_text() and "leakk-figure" in report.read_text()
    header = (work / "params.yaml").read_text().splitlines()[:3]
    assert header[0].startswith("# written by `leakk demo tofu`") and "sample.n" in header[2]
    assert yaml.safe_load((work / "params.yaml").read_text())["models"]["full"]["revision"] is None
    # resumable: run again, the inputs and params are kept as they are and Snakemake plans nothing
    before = {p: p.stat().st_mtime_ns for p in (work / "inputs").rglob("*")} | {work / "params.yaml": 0}
    before[work / "params.yaml"] = (work / "params.yaml").stat().st_mtime_ns
    run("tofu", root=work, snakefile=ROOT / "Snakefile", preset=ROOT / "configs" / "tofu_forget10.yaml", cores="1",
        overrides=overrides, report=False, extra=["-n"])
    assert {p: p.stat().st_mtime_ns for p in before} == before
    import subprocess

    from leakk.workflow.replicates import _env, snakemake_command

    plan = subprocess.run(snakemake_command(ROOT / "Snakefile", work, work / "params.yaml", "1", ["-n"]),
                          capture_output=True, text=True, env=_env())
    assert "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-2000:]

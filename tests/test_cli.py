"""Every CLI stage on the micro config, in DAG order, checked against the artifact contracts."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from conftest import MICRO, write_params
from leakk.cli import main
from leakk.core.io import CONTRACTS, read_parquet


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the micro pipeline once through ``leakk`` subcommands; return its folder."""
    root = tmp_path_factory.mktemp("micro")
    params = str(write_params(root / "params.yaml", MICRO))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        def leakk(*args):
            assert main(["--params", params, "--threads", "1", *args]) == 0, args

        data = "results/data/benchmark.parquet"
        leakk("data", "--out", data)
        for which in ("full", "retrain"):
            leakk("finetune", "--data", data, "--which", which, "--out", f"results/models/{which}")
        for name in MICRO["unlearn"]:
            leakk("unlearn", "--data", data, "--name", name, "--model-dir", "results/models/full",
                  "--out", f"results/models/{name}")
        leakk("rule", "--data", data, "--name", "rule_npo", "--model-dir", "results/models/npo",
              "--reference", "results/models/full", "--out", "results/rule/rule_npo")
        rounds = ["results/rule/rule_npo/round_1", "results/rule/rule_npo/round_2"]
        leakk("rule-eval", "--data", data, "results/models/npo", *rounds, "--name", "rule_npo",
              "--out-dir", "results/rule_eval/rule_npo")
        leakk("rule-report", "--rounds", *rounds, "--evals",
              *[f"results/rule_eval/rule_npo/round_{r}.parquet" for r in range(3)],
              "--out-log", "results/rule_eval/rule_npo/rounds.parquet",
              "--out-figure", "results/figures/rule_npo_rounds.png")
        dirs = {"full": "results/models/full", "retrain": "results/models/retrain", "ga": "results/models/ga",
                "npo": "results/models/npo", "rule_npo": "results/rule/rule_npo/round_2/model"}
        for model, folder in dirs.items():
            leakk("sample", "--data", data, "--model", model, "--model-dir", folder, "--decoding", "all",
                  "--out", f"results/samples/{model}")
            leakk("judge", "--data", data, "--samples", f"results/samples/{model}", "--out", f"results/judgments/{model}")
        leakk("estimate", "--data", data, "--judgments", "results/judgments", "--out-dir", "results")
        leakk("figures", "--leak", "results/leak_at_k.parquet", "--out-dir", "results/figures")
    finally:
        os.chdir(cwd)
    return root / "results"


def test_models_are_safetensors_folders(run):
    for name in ("full", "retrain", "ga", "npo"):
        folder = run / "models" / name
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        assert not list(folder.glob("*.bin"))
        log = pl.read_parquet(folder / "train_log.parquet")
        assert log.height > 0 and {"step", "loss"} <= set(log.columns)
    assert {"forget_loss", "retain_loss"} <= set(pl.read_parquet(run / "models/npo/train_log.parquet").columns)


def test_samples_contract_and_sizes(run):
    data = read_parquet(run / "data/benchmark.parquet", "data")
    n_forget = data.filter(pl.col("split") == "forget").height
    sampled = read_parquet(run / "samples/ga/t1.0_p1.0.parquet", "samples")
    assert sampled.height == n_forget * MICRO["sample"]["n"]
    assert sampled.group_by("qid").agg(pl.col("sample_idx").n_unique())["sample_idx"].unique().to_list() == [4]
    greedy = read_parquet(run / "samples/ga/greedy.parquet", "samples")
    assert greedy.height == data.height and set(greedy["split"]) == {"forget", "retain"}
    assert set(sampled["finish_reason"]) <= {"stop", "length"}


def test_artifacts_record_what_their_floats_depend_on(run):
    """Every model and sample artifact names the CPU and kernel mode it was computed with, so a
    rerun on another machine says where it ran (readme_tables.rerun_provenance reads them)."""
    from leakk.core.io import read_execution
    from leakk.determinism import cpu_name, mode

    for path in (run / "models/ga/train_log.parquet", run / "samples/ga/t1.0_p1.0.parquet"):
        execution = read_execution(path)
        assert execution["cpu"] == cpu_name() != "" and execution["cpu_kernels"] == mode()


def test_judgments_contract(run):
    for judge in ("fact", "rougeL"):  # one file per judge: results/judgments/<model>/<judge>/<decoding>.parquet
        j = read_parquet(run / f"judgments/full/{judge}/t1.0_p1.0.parquet", "judgments")
        assert set(j["judge"]) == {judge}
        assert j.height == read_parquet(run / "samples/full/t1.0_p1.0.parquet").height


def test_leak_table(run):
    leak = read_parquet(run / "leak_at_k.parquet", "leak_table")
    assert set(leak["model"]) == {"full", "retrain", "ga", "npo", "rule_npo"}
    greedy = leak.filter(pl.col("decoding") == "greedy")
    assert greedy["k"].unique().to_list() == [1]  # k > n (=1) is never reported
    assert leak["k"].max() == 4
    assert (leak.filter(pl.col("model") == "retrain")["excess_over_retrain"] == 0).all()
    assert (run / "leak_at_k.csv").is_file() and (run / "summary.md").read_text().count("|") > 10
    util = pl.read_csv(run / "utility.csv")
    assert set(util["model"]) == {"full", "retrain", "ga", "npo", "rule_npo"}
    paired = pl.read_csv(run / "rule_vs_base.csv")
    assert set(zip(paired["model"], paired["base"])) == {("rule_npo", "npo")}
    assert "| rule_npo | npo |" in (run / "summary.md").read_text()


def test_figures(run):
    for name in ("leak_at_k_fact", "greedy_vs_sampled_fact", "leak_at_k_rougeL", "rule_npo_rounds"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000


def test_rule_rounds(run):
    log = pl.read_parquet(run / "rule_eval/rule_npo/rounds.parquet")
    assert log["round"].to_list() == [0, 1, 2]  # round 0 = the base model, evaluation only
    assert {"new_leaked", "forget_size", "eval_leak_at_1", "eval_leak_at_4", "retain_accuracy", "stopped"} <= set(log.columns)
    leaked = pl.read_parquet(run / "rule/rule_npo/round_2/leaked.parquet")
    assert leaked.height == log["leaked_total"][-1]
    assert leaked.unique(["qid", "completion"]).height == leaked.height


def test_no_partial_files_left(run):
    assert not [p for p in Path(run).rglob("*.tmp")]


def test_sharded_sampling_equals_unsharded(run):
    """Each completion depends on (seed, qid, sample_idx) only: S = 4 shards merge into the
    S = 1 result."""
    from leakk.config import validate_params
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.stage import run_sampling

    p = validate_params(MICRO)
    data = read_parquet(run / "data/benchmark.parquet", "data")
    dec = Decoding(1.0, 1.0)
    kw = dict(model_name="full", params=p["sample"], template=p["prompt_template"], progress=False)
    whole = run_sampling(str(run / "models/full"), data, dec, **kw)
    shards = [run_sampling(str(run / "models/full"), data, dec, shard=i, shards=4, **kw) for i in range(4)]
    merged = pl.concat(shards).sort("qid", "sample_idx")
    assert merged.select("qid", "sample_idx").equals(whole.select("qid", "sample_idx"))
    assert (merged["text"] == whole["text"]).mean() >= 0.95


def test_one_decoding_at_a_time_equals_every_decoding_in_one_job(run, tmp_path):
    """The Snakemake sample job draws every decoding in one process (``--decoding all``); a
    job per decoding, as with sample.shards, must write the same rows."""
    root = run.parent
    params = str(root / "params.yaml")
    for decoding in ("greedy", "t1.0_p1.0"):
        out = tmp_path / f"{decoding}.parquet"
        assert main(["--params", params, "--threads", "1", "sample", "--data", str(run / "data/benchmark.parquet"),
                     "--model", "ga", "--model-dir", str(run / "models/ga"), "--decoding", decoding,
                     "--out", str(out)]) == 0
        assert pl.read_parquet(out).equals(pl.read_parquet(run / f"samples/ga/{decoding}.parquet")), decoding


def test_a_bad_shard_is_refused_before_the_model_loads(run, monkeypatch):
    from leakk import sampling
    from leakk.core.errors import ParamsError
    from leakk.stages.sample import sample
    from leakk.config import load_params

    monkeypatch.setattr(sampling, "open_backend", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ParamsError, match=r"sample shard 2 is outside \[0, 2\)"):
        sample(load_params(run.parent / "params.yaml"), data=str(run / "data/benchmark.parquet"), model="ga",
               model_dir=str(run / "models/ga"), decoding="all", shard=2, shards=2, out=str(run.parent / "unused"))

"""The micro DAG end to end through Snakemake (default suite) and DVC (slow): everything
builds, a re-run does nothing, and a sampling edit re-runs only sampling and what follows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import MICRO, ROOT, write_params

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "TQDM_DISABLE": "1"}
DOWNSTREAM_OF_SAMPLING = {"sample", "judge", "estimate", "calibrate", "figures", "rule_eval", "rule_report", "all",
                          # bounds read sample.max_new_tokens (an answer longer than it cannot be produced)
                          "bounds", "bounds_table", "reliability", "report_tables", "report_examples"}


def planned_judge_jobs(proc: subprocess.CompletedProcess) -> set[tuple[str, str, str]]:
    """(model, judge, decoding) of every judge job in a dry run."""
    return set(re.findall(r"output: results/judgments/([\w.]+)/([\w.]+)/([\w.]+)\.parquet", proc.stdout))


def assert_only_rougel_rejudged(plan: subprocess.CompletedProcess) -> None:
    """After a rougeL threshold edit: every rougeL judge job, and no other judge's — except
    for rule_npo, whose RULE rounds judge with rougeL, so its model and samples change."""
    jobs = planned_judge_jobs(plan)
    assert {j for _, j, _ in jobs} == {"rougeL", "fact"}, plan.stdout
    assert {(m, d) for m, j, d in jobs if j == "rougeL"} == {(m, d) for m in ("full", "retrain", "ga", "npo", "rule_npo")
                                                            for d in ("greedy", "t1.0_p1.0")}
    assert {m for m, j, _ in jobs if j != "rougeL"} == {"rule_npo"}, plan.stdout
    assert planned_rules(plan) <= {"judge", "estimate", "calibrate", "figures", "all", "bounds", "bounds_table",
                                   "reliability", "report_tables", "report_examples",
                                   "rule_round", "rule_eval", "rule_report", "sample"}, plan.stdout


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, env={**ENV, **(env or {})}, cwd=workdir)


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names in a dry run's job-stats table."""
    table = proc.stdout.split("Job stats:", 1)[-1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}


def test_snakemake_micro_dag(tmp_path):
    write_params(tmp_path / "params.yaml", MICRO)
    first = snakemake(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    results = tmp_path / "results"
    console = first.stdout + first.stderr
    assert "| model |" in console  # the summary is printed at the end
    # the workflow profile (profiles/default) is in effect: shell commands are printed
    assert "leakk --params params.yaml --threads 1 sample" in console
    # sampling progress reaches the console, not only results/logs/*.log
    assert "sample full t1.0_p1.0: done" in console
    leak = pl.read_parquet(results / "leak_at_k.parquet")
    assert set(leak["model"]) == {"full", "retrain", "ga", "npo", "rule_npo"}
    assert (results / "figures" / "rule_npo_rounds.png").is_file()
    assert pl.read_parquet(results / "rule_eval/rule_npo/rounds.parquet")["round"].to_list() == [0, 1, 2]
    bounds = pl.read_parquet(results / "bounds.parquet")
    assert set(bounds["model"]) == {"full", "retrain", "ga", "npo", "rule_npo"} and bounds["k"].max() == 10_000
    assert (results / "tables.html").read_text().count("<table") >= 4
    for name in ("bound_vs_sampled", "leak_rate_distribution"):
        assert (results / "figures" / f"{name}.png").is_file()

    again = snakemake(tmp_path, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # execution settings are no cache key: another device or batch size re-runs nothing
    write_params(tmp_path / "params.yaml", dict(MICRO, device="auto", sample=dict(MICRO["sample"], batch_rows=4)))
    switched = snakemake(tmp_path, "-n")
    assert switched.returncode == 0 and "Nothing to be done" in switched.stdout + switched.stderr, switched.stdout
    from leakk.core.io import read_execution

    assert read_execution(results / "samples/full/greedy.parquet")["device"] == "cpu"  # what it ran with
    assert read_execution(results / "samples/full/greedy.parquet")["cpu_kernels"] == "portable"

    edited = dict(MICRO, sample=dict(MICRO["sample"], max_new_tokens=10))
    write_params(tmp_path / "params.yaml", edited)
    plan = snakemake(tmp_path, "-n")
    rules = planned_rules(plan)
    assert "sample" in rules and rules <= DOWNSTREAM_OF_SAMPLING, plan.stdout

    # one file per judge: a rougeL threshold edit re-runs rougeL's judge jobs only
    write_params(tmp_path / "params.yaml", dict(MICRO, judge=dict(MICRO["judge"], rougeL={"threshold": 0.4})))
    plan = snakemake(tmp_path, "-n")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert_only_rougel_rejudged(plan)
    assert "calibrate" in planned_rules(plan)
    assert (results / "calibration.parquet").is_file() and (results / "figures/calibration.png").is_file()


def write_dvc_yaml(workdir: Path) -> None:
    """dvc.yaml for the params file there (`leakk dvc-yaml`)."""
    proc = subprocess.run([f"{BIN}/leakk", "dvc-yaml"], cwd=workdir, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr


DVC_DOWNSTREAM_OF_SAMPLING = {"validate", "sample", "judge", "estimate", "calibrate", "figures", "rule_eval",
                              # the exact bound reads sample.max_new_tokens
                              "bounds", "bounds_table", "reliability", "report_tables", "report_examples"}


@pytest.mark.slow
def test_dvc_repro_micro(tmp_path):
    write_params(tmp_path / "params.yaml", MICRO)
    write_dvc_yaml(tmp_path)
    run = lambda *a: subprocess.run(a, capture_output=True, text=True, env=ENV, cwd=tmp_path)  # noqa: E731
    assert run("git", "init", "-q").returncode == 0
    assert run(f"{BIN}/dvc", "init", "-q").returncode == 0
    first = run(f"{BIN}/dvc", "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert pl.read_parquet(tmp_path / "results/leak_at_k.parquet").height > 0
    assert pl.read_parquet(tmp_path / "results/bounds.parquet")["k"].max() == 10_000
    metrics = run(f"{BIN}/dvc", "metrics", "show")
    assert metrics.returncode == 0 and "leak_at_1" in metrics.stdout, metrics.stdout + metrics.stderr
    again = run(f"{BIN}/dvc", "repro")
    assert "Running stage" not in again.stdout
    edited = yaml.safe_load((tmp_path / "params.yaml").read_text())
    edited["sample"]["max_new_tokens"] = 10
    write_params(tmp_path / "params.yaml", edited)
    rerun = run(f"{BIN}/dvc", "repro")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    stages = set(re.findall(r"Running stage '([\w@.-]+)'", rerun.stdout))
    assert stages and all(s.split("@")[0] in DVC_DOWNSTREAM_OF_SAMPLING for s in stages), stages

    # one stage per (model, judge): a rougeL threshold edit touches only rougeL's judge stages
    # (+ estimate/calibrate, which read the judge section, and rule_npo, whose RULE judge is rougeL)
    edited["judge"]["rougeL"] = {"threshold": 0.4}
    write_params(tmp_path / "params.yaml", edited)
    status = run(f"{BIN}/dvc", "status")
    changed = set(re.findall(r"^([\w@.-]+):$", status.stdout, re.M))
    judges = {s for s in changed if s.startswith("judge")}
    assert judges == {f"judge@{m}-rougeL" for m in ("full", "retrain", "ga", "npo", "rule_npo")}, status.stdout
    assert changed - judges <= {"validate", "estimate", "calibrate", "rule@rule_npo", "rule_eval@rule_npo",
                                "bounds@rule_npo", "bounds_table", "reliability", "report_tables"}, status.stdout

    # execution settings are no cache key: another device or batch size changes no stage
    edited["judge"]["rougeL"] = {"threshold": 0.3}
    edited["device"], edited["sample"]["batch_rows"] = "auto", 4
    write_params(tmp_path / "params.yaml", edited)
    status = run(f"{BIN}/dvc", "status")
    assert set(re.findall(r"^([\w@.-]+):$", status.stdout, re.M)) <= {"validate"}, status.stdout

def _tree(root: Path) -> dict[str, bytes]:
    """Every file under results/ (not logs, not Snakemake's benchmarks), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "results").rglob("*"))
            if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(root).parts)}


@pytest.mark.slow
def test_dvc_continues_from_a_snakemake_run(tmp_path):
    """A finished Snakemake run is recorded in dvc.lock: `dvc status` is clean, an invalid
    `dvc exp run -S` fails before any output is removed, a sampling edit re-runs only sampling
    and what follows, and one more RULE round trains only that round."""
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    write_params(tmp_path / "params.yaml", MICRO)
    write_dvc_yaml(tmp_path)
    run = lambda *a: subprocess.run(a, capture_output=True, text=True, env=ENV, cwd=tmp_path)  # noqa: E731
    assert run("git", "init", "-q").returncode == 0
    assert run(f"{BIN}/dvc", "init", "-q").returncode == 0
    shutil.copy(ROOT / ".dvc" / "config", tmp_path / ".dvc" / "config")
    built = snakemake(tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    status = run(f"{BIN}/dvc", "status")
    assert "up to date" in status.stdout, status.stdout[-3000:]
    assert "Nothing to be done" in snakemake(tmp_path, "-n").stdout  # recording touched no mtime

    for cmd in (("git", "add", "-A"), ("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run")):
        assert run(*cmd).returncode == 0
    before = _tree(tmp_path)
    bad = run(f"{BIN}/dvc", "exp", "run", "-S", "sample.n=2")  # k = 4 > n: invalid
    assert bad.returncode != 0 and "estimate.ks" in bad.stdout + bad.stderr
    after = _tree(tmp_path)
    assert [path for path, data in before.items() if after.get(path) != data] == [], "outputs removed or changed"
    run("git", "checkout", "params.yaml")

    edited = yaml.safe_load((tmp_path / "params.yaml").read_text())
    edited["sample"]["max_new_tokens"] = 10
    write_params(tmp_path / "params.yaml", edited)
    rerun = run(f"{BIN}/dvc", "repro")
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    stages = {s.split("@")[0] for s in re.findall(r"Running stage '([\w@.-]+)'", rerun.stdout)}
    assert "sample" in stages and stages <= DVC_DOWNSTREAM_OF_SAMPLING, stages

    rounds = tmp_path / "results/rule/rule_npo"
    finished = {p: p.read_bytes() for p in rounds.rglob("*") if p.is_file()}
    edited["rule"]["rule_npo"]["rounds"] += 1
    write_params(tmp_path / "params.yaml", edited)
    stale = run(f"{BIN}/dvc", "repro", "rule@rule_npo")  # the RULE model's folder moved: dvc.yaml is stale
    assert stale.returncode != 0 and "dvc-yaml" in stale.stdout + stale.stderr
    write_dvc_yaml(tmp_path)
    more = run(f"{BIN}/dvc", "repro", "rule@rule_npo")
    assert more.returncode == 0, more.stdout[-3000:]
    assert all(p.read_bytes() == b for p, b in finished.items()), "a finished round was retrained"
    assert (rounds / "round_3" / "round.parquet").is_file()

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
DOWNSTREAM_OF_SAMPLING = {"sample", "judge", "estimate", "figures", "rule_eval", "rule_report", "all",
                          # bounds read sample.max_new_tokens (an answer longer than it cannot be produced)
                          "bounds", "bounds_table", "reliability", "report_tables"}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, env=ENV, cwd=workdir)


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names in a dry run's job-stats table."""
    table = proc.stdout.split("Job stats:", 1)[-1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}


def test_snakemake_micro_dag(tmp_path):
    write_params(tmp_path / "params.yaml", MICRO)
    first = snakemake(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    results = tmp_path / "results"
    assert "| model |" in first.stdout + first.stderr  # the summary is printed at the end
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

    edited = dict(MICRO, sample=dict(MICRO["sample"], max_new_tokens=10))
    write_params(tmp_path / "params.yaml", edited)
    plan = snakemake(tmp_path, "-n")
    rules = planned_rules(plan)
    assert "sample" in rules and rules <= DOWNSTREAM_OF_SAMPLING, plan.stdout


@pytest.mark.slow
def test_dvc_repro_micro(tmp_path):
    for name in ("dvc.yaml",):
        shutil.copy(ROOT / name, tmp_path / name)
    write_params(tmp_path / "params.yaml", MICRO)
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
    assert stages and all(s.split("@")[0] in {"sample_base", "sample_unlearn", "sample_rule", "judge",
                                              "judge_unlearn", "judge_rule", "estimate", "figures", "rule_eval",
                                              # the exact bound reads sample.max_new_tokens
                                              "bounds", "bounds_unlearn", "bounds_rule", "bounds_table",
                                              "reliability"}
                          for s in stages), stages

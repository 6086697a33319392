"""The SLURM profile on a real single-node SLURM cluster (marked ``slurm``; ``.ci/run`` starts
the cluster with ``scripts/slurm/start.sh`` and stops it afterwards).

Every job of the micro DAG goes through ``sbatch``; the leak table equals a local run's; a job
that fails ends the run with its log named (no hang); a job the scheduler kills is retried.
The dry run with the profile shows GPU resources on the model rules when params put them on a
GPU (this one needs no cluster).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import polars as pl
import pytest

from conftest import MICRO, ROOT, write_params
from test_workflow import ENV, snakemake

PROFILE = str(ROOT / "workflow" / "profiles" / "slurm")
#: a cluster without an accounting database: query squeue, and start querying early
NO_ACCOUNTING = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2"]

cluster = pytest.mark.skipif(
    not (os.environ.get("SLURM_CONF") and shutil.which("sbatch")),
    reason="no SLURM cluster (start one with scripts/slurm/start.sh and export SLURM_CONF)",
)


def on_cluster(workdir, *args, snakefile=ROOT / "Snakefile", timeout=900):
    return subprocess.run(
        ["snakemake", "-s", str(snakefile), "--directory", str(workdir), "--workflow-profile", PROFILE,
         *NO_ACCOUNTING, "--jobs", "4", *args],
        capture_output=True, text=True, env=ENV, cwd=workdir, timeout=timeout)


@pytest.mark.slurm
@cluster
def test_micro_dag_on_slurm_equals_local(tmp_path):
    remote, local = tmp_path / "slurm", tmp_path / "local"
    for folder in (remote, local):
        folder.mkdir()
        write_params(folder / "params.yaml", MICRO)
    run = on_cluster(remote)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    job_ids = set(re.findall(r"SLURM jobid (\d+)", out))
    planned = int(re.search(r"^total\s+(\d+)$", out, re.M).group(1))
    # every job but `all` (local) was submitted; small CPU jobs may share one sbatch (groups)
    assert 1 < len(job_ids) <= planned - 1, out[-3000:]
    done = snakemake(local)
    assert done.returncode == 0, done.stderr[-3000:]
    assert pl.read_parquet(remote / "results/leak_at_k.parquet").equals(
        pl.read_parquet(local / "results/leak_at_k.parquet"))


@pytest.mark.slurm
@cluster
def test_failed_job_fails_the_run_naming_its_log(tmp_path):
    run = on_cluster(tmp_path, "never.txt", snakefile=ROOT / "tests/slurm/Snakefile", timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "logs/fails.log" in out, out[-3000:]
    assert "this job fails on purpose" in out  # show-failed-logs prints it


@pytest.mark.slurm
@cluster
def test_job_killed_by_the_scheduler_is_retried(tmp_path):
    run = on_cluster(tmp_path, snakefile=ROOT / "tests/slurm/Snakefile", timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (tmp_path / "killed_once.txt").read_text().strip() == "attempt 2"


def test_slurm_profile_dry_run_shows_gpus_on_model_rules(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    params = dict(MICRO, device="cuda")
    write_params(tmp_path / "params.yaml", params)
    run = subprocess.run(
        ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--workflow-profile",
         PROFILE, "-n"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    gpu = {}
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", run.stdout):  # group jobs are indented
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        res = re.search(r"resources: (.*)", block)
        if m and res:
            gpu.setdefault(m.group(1), set()).add("gpu=1" in res.group(1))
    for rule in ("finetune", "unlearn", "rule_round", "rule_eval", "sample"):
        assert gpu.get(rule) == {True}, (rule, gpu)
    for rule in ("data", "judge", "estimate", "figures"):
        assert gpu.get(rule) == {False}, (rule, gpu)

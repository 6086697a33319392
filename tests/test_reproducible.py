"""Artifacts are byte-reproducible: no wall-clock time, host name or absolute path in them, so
a stage run twice, or killed and resumed, writes the same bytes and DVC/Snakemake see no change.

Timings go to the job's log (stderr), never into an artifact."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from conftest import MICRO, write_params
from leakk.cli import main

BIN = str(Path(sys.executable).parent)


def _params(tmp_path: Path) -> Path:
    p = copy.deepcopy(MICRO)
    # the stop criterion writes its checks into train_log.parquet: cover those columns too
    p["unlearn"]["ga"]["stop"] = {"greedy_leak": 0.0, "every": 1, "max_new_tokens": 12}
    return write_params(tmp_path / "params.yaml", p)


def _leakk(params: Path, *args) -> None:
    assert main(["--params", str(params), *map(str, args)]) == 0


def _run_stages(params: Path, out: Path) -> None:
    """data → finetune → unlearn (with its stop checks) → sample → judge → estimate → figures
    → reliability (DVC's metrics and plot files), into ``out``."""
    data = out / "data.parquet"
    _leakk(params, "data", "--out", data)
    _leakk(params, "finetune", "--data", data, "--which", "full", "--out", out / "models/full")
    _leakk(params, "unlearn", "--data", data, "--name", "ga", "--model-dir", out / "models/full",
           "--out", out / "models/ga")
    for model in ("full", "ga"):
        _leakk(params, "sample", "--data", data, "--model", model, "--model-dir", out / "models" / model,
               "--decoding", "all", "--out", out / "samples" / model)
        _leakk(params, "judge", "--data", data, "--samples", out / "samples" / model, "--out",
               out / "judgments" / model)
    p = {**MICRO, "unlearn": {"ga": MICRO["unlearn"]["ga"]}, "rule": {}}  # the models built here
    small = write_params(out / "small.yaml", p)
    _leakk(small, "estimate", "--data", data, "--judgments", out / "judgments", "--out-dir", out)
    _leakk(small, "figures", "--leak", out / "leak_at_k.parquet", "--out-dir", out / "figures")
    _leakk(small, "reliability", "--data", data, "--judgments", out / "judgments", "--leak",
           out / "leak_at_k.parquet", "--bootstrap", 20, "--out-dir", out)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _no_machine_facts(files: dict[str, bytes], root: Path) -> None:
    """No absolute path of this machine and no host name in any artifact's bytes."""
    needles = [str(root).encode(), str(Path.home()).encode(), socket.gethostname().encode()]
    for name, data in files.items():
        for needle in needles:
            if len(needle) > 3:
                assert needle not in data, f"{name} contains {needle!r}"


def test_every_stage_writes_the_same_bytes_twice(tmp_path, monkeypatch, capfd):
    params = _params(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative paths, as the workflows call the stages
    _run_stages(params, Path("a"))
    _run_stages(params, Path("b"))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name] and name != "small.yaml"] == []
    log = pl.read_parquet(tmp_path / "a/models/ga/train_log.parquet")
    assert "seconds" not in log.columns and "stop" in log.columns
    assert "seconds" not in pl.read_parquet(tmp_path / "a/models/full/train_log.parquet").columns
    _no_machine_facts(a, tmp_path)
    # the timings went to the job's log instead
    err = capfd.readouterr().err
    assert err.count("trained ") >= 4 and " s/step)" in err


def _leakk_rule(params: Path, data: Path, base: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "TQDM_DISABLE": "1"}
    return subprocess.Popen([f"{BIN}/leakk", "--params", str(params), "rule", "--data", str(data), "--name",
                             "rule_npo", "--model-dir", str(base), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # three leakk processes and RULE rounds: ~1 min on 2 shared cores
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_rule_killed_after_a_round_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    """`leakk rule` (the resumable stage: finished rounds are kept) killed with SIGKILL once
    round 1 is written, then run again, ends byte-identical to an uninterrupted run."""
    p = copy.deepcopy(MICRO)
    p["rule"]["rule_npo"]["rounds"] = 3
    params = write_params(tmp_path / "params.yaml", p)
    monkeypatch.chdir(tmp_path)
    data, models = Path("data.parquet"), Path("models")
    _leakk(params, "data", "--out", data)
    _leakk(params, "finetune", "--data", data, "--which", "full", "--out", models / "full")
    _leakk(params, "unlearn", "--data", data, "--name", "npo", "--model-dir", models / "full", "--out", models / "npo")

    whole = _leakk_rule(params, data, models / "npo", Path("whole"))
    assert whole.wait(timeout=600) == 0, whole.stderr.read()[-2000:]

    killed = _leakk_rule(params, data, models / "npo", Path("resumed"))
    deadline = time.monotonic() + 600
    while not Path("resumed/round_1/round.parquet").is_file():
        assert killed.poll() is None, killed.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "round 1 never finished"
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    finished_round_1 = _files(Path("resumed/round_1"))
    # what a kill during round 2's write leaves (the window is too short to hit by timing;
    # rounds that find no leak take milliseconds, so the kill may also have come too late)
    for later in ("round_2", "round_3"):
        shutil.rmtree(Path("resumed") / later, ignore_errors=True)
    (Path("resumed") / ".round_2.k3j9a0zq.tmp" / "model").mkdir(parents=True, exist_ok=True)
    (Path("resumed") / ".round_2.k3j9a0zq.tmp" / "model" / "model.safetensors").write_bytes(b"partial")
    resumed = _leakk_rule(params, data, models / "npo", Path("resumed"))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    assert _files(Path("resumed/round_1")) == finished_round_1  # kept, not retrained
    # the killed run's temp folder is gone too: the folder DVC hashes is the uninterrupted one
    a, b = _files(tmp_path / "whole"), _files(tmp_path / "resumed")
    assert a.keys() == b.keys() and [name for name in a if a[name] != b[name]] == []


def test_the_download_record_names_a_local_folder_as_the_params_do(tmp_path, monkeypatch, micro_params):
    """`~/…` stays `~/…` in results/hub/downloads.json (a DVC output): not this machine's home."""
    import json

    from leakk.models.demo import tofu_repo

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    tofu_repo(tmp_path / "home" / "TOFU")
    p = dict(micro_params, rule={}, judge={"rougeL": {}}, data={"benchmark": "tofu", "tofu": {"repo": "~/TOFU"}})
    p["estimate"] = dict(p["estimate"], headline_judge="rougeL")
    params = write_params(tmp_path / "params.yaml", p)
    record = tmp_path / "downloads.json"
    _leakk(params, "download", "--hub-dir", tmp_path / "hub", "--record", record)
    assert json.loads(record.read_text())["datasets/tofu"]["folder"] == "~/TOFU"
    assert str(tmp_path).encode() not in record.read_bytes()

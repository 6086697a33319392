"""SIGTERM to `dvc repro` leaves no leakk stage running (leakk.workflow.lifeline)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leakk.workflow.lifeline import _stat, ancestors_to_engine

BIN = str(Path(sys.executable).parent)


def _leakk_pids(marker: str) -> list[int]:
    """Running processes whose environment carries ``marker`` and whose command is leakk."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in env and b"leakk" in cmd and _stat(int(proc.name)):
            pids.append(int(proc.name))
    return pids


def test_ancestors_stop_at_the_first_non_shell():
    chain = ancestors_to_engine()
    assert chain and chain[0][0] == os.getppid()
    shell = subprocess.run(["sh", "-c", f"{sys.executable} -c 'from leakk.workflow.lifeline import ancestors_to_engine as a; "
                            f"print(len(a()))'; true"], capture_output=True, text=True, env=os.environ)
    assert shell.stdout.strip() == "2"  # the shell, then this test process (not a shell)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_sigterm_to_dvc_repro_stops_the_leakk_stage(tmp_path):
    marker = f"LEAKK_LIFELINE_TEST={tmp_path.name}"
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], marker.split("=")[0]: tmp_path.name}
    # a stage whose leakk command runs long (a python loop standing in for training), behind a shell
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  long:\n    cmd: true && python -c \"import time; from leakk.cli import main; "
        "import leakk.workflow.lifeline as l; l.watch_parent_engine(0.2); time.sleep(120)\" leakk-stage\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([f"{BIN}/dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    dvc = subprocess.Popen([f"{BIN}/dvc", "repro"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _leakk_pids(marker):
            assert time.monotonic() < deadline, "the stage never started"
            assert dvc.poll() is None, "dvc repro ended before the stage started"
            time.sleep(0.2)
        dvc.send_signal(signal.SIGTERM)
        dvc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _leakk_pids(marker):
            assert time.monotonic() < deadline, ("a leakk stage kept running after dvc repro was terminated", [(p, Path(f"/proc/{p}/cmdline").read_bytes()[:80], _stat(p)) for p in _leakk_pids(marker)])
            time.sleep(0.2)
    finally:
        for pid in _leakk_pids(marker):
            os.kill(pid, signal.SIGKILL)
        if dvc.poll() is None:
            dvc.kill()


def _snakemake_stage(tmp_path: Path, marker: str) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], marker.split("=")[0]: tmp_path.name}
    # a job whose leakk command runs long (a python loop standing in for training), behind a shell
    (tmp_path / "Snakefile").write_text(
        "rule long:\n    output: 'out.txt'\n    shell: \"true && python -c 'import time; from leakk.cli import main; "
        "import leakk.workflow.lifeline as l; l.watch_parent_engine(0.2); open(\\\"watching\\\", \\\"w\\\").close(); "
        "time.sleep(120)' leakk-stage\"\n")
    smk = subprocess.Popen([f"{BIN}/snakemake", "--cores", "1", "--workflow-profile", "none"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return smk, env


def _wait_for_stage(marker: str, engine: subprocess.Popen) -> int:
    """The pid of the stage's python process (not of the shell whose command line names it)."""
    deadline = time.monotonic() + 120
    while True:
        stages = [p for p in _leakk_pids(marker) if (_stat(p) or ("",))[0].startswith("python")]
        if stages:
            return stages[0]
        assert time.monotonic() < deadline, "the stage never started"
        assert engine.poll() is None, "the engine ended before the stage started"
        time.sleep(0.2)


def _assert_stage_stops(marker: str) -> None:
    deadline = time.monotonic() + 15
    while _leakk_pids(marker):
        assert time.monotonic() < deadline, "a leakk stage kept running after its engine was gone"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("victim", ["shell", "snakemake"])
def test_a_snakemake_job_whose_shell_or_engine_is_killed_stops(tmp_path, victim):
    """kill -9 of the job's shell wrapper, or of Snakemake itself: the orphaned stage stops
    within seconds instead of writing its output for nobody."""
    marker = f"LEAKK_LIFELINE_TEST={tmp_path.name}"
    smk, _ = _snakemake_stage(tmp_path, marker)
    try:
        stage = _wait_for_stage(marker, smk)
        deadline = time.monotonic() + 120  # the watchdog is running (imports take long on a loaded machine)
        while not (tmp_path / "watching").exists():
            assert time.monotonic() < deadline and smk.poll() is None, "the stage never started watching"
            time.sleep(0.2)
        shell = _stat(stage)[1]
        assert _stat(shell)[0] in ("bash", "sh"), _stat(shell)
        os.kill(shell if victim == "shell" else smk.pid, signal.SIGKILL)
        _assert_stage_stops(marker)
    finally:
        for pid in _leakk_pids(marker):
            os.kill(pid, signal.SIGKILL)
        if smk.poll() is None:
            smk.kill()
        smk.wait(timeout=30)


def test_a_stage_run_by_hand_has_no_watchdog(monkeypatch):
    """Outside DVC and Snakemake (a terminal, nohup), a stage never stops itself."""
    import leakk.workflow.lifeline as lifeline

    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert not lifeline.is_snakemake(os.getpid())
    assert lifeline.watch_parent_engine(0.2) is None

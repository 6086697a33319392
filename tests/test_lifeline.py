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


def _dvc_stage(tmp_path: Path, marker: str, script: str, then: str = "") -> subprocess.Popen:
    """``dvc repro`` of one stage whose leakk command (``script``, a python loop standing in for
    training) runs behind a shell; with a command after it (``then``), the shell stays between
    dvc and the stage (dash otherwise execs the stage in its place, bash does not)."""
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], marker.split("=")[0]: tmp_path.name}
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  long:\n    cmd: true && python -c \"{script}\" leakk-stage{then}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([f"{BIN}/dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    return subprocess.Popen([f"{BIN}/dvc", "repro"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_file(path: Path, engine: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # imports take long on a loaded machine
    while not path.exists():
        assert time.monotonic() < deadline, f"the stage never wrote {path.name}"
        assert engine.poll() is None, f"the engine ended before the stage wrote {path.name}"
        time.sleep(0.2)


def _terminate_dvc_then_assert_the_stage_stops(dvc: subprocess.Popen, marker: str, before_check=None) -> None:
    dvc.send_signal(signal.SIGTERM)
    dvc.wait(timeout=30)
    if before_check:
        before_check()
    _assert_stage_stops(marker)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_sigterm_to_dvc_repro_stops_the_leakk_stage(tmp_path):
    marker = f"LEAKK_LIFELINE_TEST={tmp_path.name}"
    dvc = _dvc_stage(tmp_path, marker, "import time; from leakk.cli import main; import leakk.workflow.lifeline as l; "
                                       "l.watch_parent_engine(0.2); open('watching', 'w').close(); time.sleep(120)")
    try:
        _wait_for_file(tmp_path / "watching", dvc)
        _terminate_dvc_then_assert_the_stage_stops(dvc, marker)
    finally:
        _kill_all(marker, dvc)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_dvc_stage_whose_engine_died_while_it_started_stops(tmp_path):
    """SIGTERM to ``dvc repro`` while the stage is still importing: when it starts watching, its
    shell has been adopted by init, and it stops at once instead of running for nobody."""
    marker = f"LEAKK_LIFELINE_TEST={tmp_path.name}"
    dvc = _dvc_stage(tmp_path, marker, "import os, time; from leakk.cli import main; import leakk.workflow.lifeline as l; "
                                       "open('started', 'w').close(); "
                                       "[time.sleep(0.1) for _ in range(1200) if not os.path.exists('dvc_gone')]; "
                                       "l.watch_parent_engine(0.2); time.sleep(120)", then="; true")
    try:
        _wait_for_file(tmp_path / "started", dvc)
        _terminate_dvc_then_assert_the_stage_stops(dvc, marker, lambda: (tmp_path / "dvc_gone").touch())
    finally:
        _kill_all(marker, dvc)


def _kill_all(marker: str, engine: subprocess.Popen) -> None:
    for pid in _leakk_pids(marker):
        os.kill(pid, signal.SIGKILL)
    if engine.poll() is None:
        engine.kill()
    engine.wait(timeout=30)


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
    deadline = time.monotonic() + 30
    while _leakk_pids(marker):
        assert time.monotonic() < deadline, ("a leakk stage kept running after its engine was gone",
                                             [(p, _stat(p)) for p in _leakk_pids(marker)])
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
        _wait_for_file(tmp_path / "watching", smk)
        shell = _stat(stage)[1]
        assert _stat(shell)[0] in ("bash", "sh"), _stat(shell)
        os.kill(shell if victim == "shell" else smk.pid, signal.SIGKILL)
        _assert_stage_stops(marker)
    finally:
        _kill_all(marker, smk)


def test_a_stage_run_by_hand_has_no_watchdog(monkeypatch):
    """Outside DVC and Snakemake (a terminal, nohup), a stage never stops itself."""
    import leakk.workflow.lifeline as lifeline

    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert not lifeline.is_snakemake(os.getpid())
    assert lifeline.watch_parent_engine(0.2) is None

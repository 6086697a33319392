"""`leakk dvc-record` (leakk.workflow.dvc_record): what Snakemake built goes into dvc.lock, and
a record after a no-op run hashes nothing again (DVC's state database), so it is quick."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("dvc")

from leakk.workflow.dvc_record import record  # noqa: E402

DVC = Path(sys.executable).parent / "dvc"


def _project(root: Path) -> None:
    """A DVC project of two stages (b reads a's output), both outputs already built."""
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=root, check=True)
    stages = {"a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
              "b": {"cmd": "cat a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]}}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("a\n")


def test_record_commits_changed_stages_only(tmp_path):
    _project(tmp_path)
    assert record(tmp_path) == ["recorded a", "recorded b"]
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"a", "b"}
    assert record(tmp_path) == ["unchanged a", "unchanged b"]  # a no-op run: nothing to hash or write
    (tmp_path / "b.txt").write_text("edited\n")
    assert record(tmp_path) == ["unchanged a", "recorded b"]
    status = subprocess.run([DVC, "status", "-q"], cwd=tmp_path)
    assert status.returncode == 0  # dvc status is clean: the lock knows the edited output


def test_a_stage_with_a_missing_output_is_left_alone(tmp_path):
    _project(tmp_path)
    (tmp_path / "b.txt").unlink()
    assert record(tmp_path) == ["recorded a", "skipped b: missing b.txt"]
    assert set(yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]) == {"a"}


def test_a_commit_keeps_modification_times(tmp_path):
    """A stage whose dependency changed but whose output bytes did not: DVC links the output to
    the cache object it already holds (made by the first run, with that run's mtime). The record
    must keep the output's own mtime, or Snakemake sees it older than its inputs and re-runs it."""
    _project(tmp_path)
    subprocess.run([DVC, "config", "cache.type", "hardlink,symlink"], cwd=tmp_path, check=True)  # as leakk's
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"weights")
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    stages["stages"]["a"]["outs"].append("d")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages))
    first = 1_000_000_000
    for path in ("a.txt", "b.txt", "d/w.bin", "d"):
        os.utime(tmp_path / path, (first, first))
    assert record(tmp_path) == ["recorded a", "recorded b"]

    for path, text in (("a.txt", "a, edited\n"), ("b.txt", "a\n")):  # a second run: new files (leakk
        (tmp_path / path).unlink()  # writes by rename), b's bytes as before
        (tmp_path / path).write_text(text)
    second = {"a.txt": 2_000_000_000, "b.txt": 2_000_000_010, "d/w.bin": 2_000_000_000, "d": 2_000_000_000}
    for path, t in second.items():
        os.utime(tmp_path / path, (t, t))
    assert record(tmp_path) == ["recorded a", "recorded b"]
    assert os.stat(tmp_path / "b.txt").st_nlink > 1  # linked to the cache object of the first run
    assert {path: os.stat(tmp_path / path).st_mtime for path in second} == second
    assert subprocess.run([DVC, "status", "-q"], cwd=tmp_path).returncode == 0


def test_kept_mtimes_restores_links_targets_folders_and_skips_what_is_gone(tmp_path):
    """The times come back per entry: a folder and the files in it, a symlink's own time on the
    link and its target's on the target (as they were, not swapped), and a removed path is skipped."""
    from leakk.workflow.dvc_record import _kept_mtimes

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("f")
    (tmp_path / "target").write_text("t")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "gone").write_text("g")
    times = {"d": 1_000_000_000, "d/f": 1_000_000_001, "target": 1_000_000_002, "gone": 1_000_000_003}
    for path, t in times.items():
        os.utime(tmp_path / path, (t, t))
    os.utime(tmp_path / "link", (1_000_000_004, 1_000_000_004), follow_symlinks=False)
    with _kept_mtimes([str(tmp_path / p) for p in ("d", "link", "gone")]):
        for path in ("d/f", "target", "d"):
            os.utime(tmp_path / path, (2_000_000_000, 2_000_000_000))
        os.utime(tmp_path / "link", (2_000_000_000, 2_000_000_000), follow_symlinks=False)
        (tmp_path / "gone").unlink()
    assert {p: os.stat(tmp_path / p).st_mtime for p in ("d", "d/f", "target")} == \
        {p: times[p] for p in ("d", "d/f", "target")}
    assert os.lstat(tmp_path / "link").st_mtime == 1_000_000_004

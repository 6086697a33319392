"""`leakk dvc-record` (leakk.workflow.dvc_record): what Snakemake built goes into dvc.lock, and
a record after a no-op run hashes nothing again (DVC's state database), so it is quick."""

from __future__ import annotations

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

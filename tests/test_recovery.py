"""Recovery as advised: a broken intermediate artifact fails its reader with one line that
names a command, and that command, run as printed, gives the whole results tree back byte for
byte (a bare re-run of `snakemake` would not: it rebuilds nothing while everything downstream
of the broken file is present)."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import MICRO, ROOT
from leakk.core.errors import ArtifactError
from leakk.core.io import read_parquet
from leakk.models.modeling import load_model

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "TQDM_DISABLE": "1"}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
                          capture_output=True, text=True, env=ENV, cwd=workdir)


def _contents(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the jobs' logs and Snakemake's benchmark timings
    left out: wall-clock time belongs there and nowhere else)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(root).parts)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("recovery")
    (root / "params.yaml").write_text(yaml.safe_dump(MICRO, sort_keys=False))
    first = snakemake(root, "--cores", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    return root, _contents(root / "results")


def _advice(root: Path, victim: str) -> str:
    """The reader's one error line for the broken ``victim``, as a stage would print it."""
    path = Path(victim)
    try:
        if path.suffix == ".parquet":
            read_parquet(root / path, "judgments" if path.parts[1] == "judgments" else "samples")
        else:
            load_model(root / path / ("model" if path.name.startswith("round_") else ""), "cpu")
    except ArtifactError as err:
        return str(err).replace(str(root) + "/", "")  # the stage ran in the project: relative paths
    raise AssertionError(f"{victim}: read without an error")


@pytest.mark.slow
@pytest.mark.parametrize("victim, broken", [
    ("results/samples/ga/t1.0_p1.0.parquet", "results/samples/ga/t1.0_p1.0.parquet"),
    ("results/judgments/ga/fact/t1.0_p1.0.parquet", "results/judgments/ga/fact/t1.0_p1.0.parquet"),
    ("results/models/ga", "results/models/ga/model.safetensors"),
    ("results/rule/rule_npo/round_1", "results/rule/rule_npo/round_1/model/model.safetensors"),
], ids=["samples", "judgments", "model", "rule-round"])
def test_the_printed_advice_rebuilds_the_tree_byte_identically(built, victim, broken):
    root, before = built
    target = root / broken
    half = target.read_bytes()[: target.stat().st_size // 2]
    target.unlink()  # a new file, as a job killed mid-write leaves it (weights may be hard links)
    target.write_bytes(half)
    line = _advice(root, victim)
    assert "\n" not in line and line.startswith(f"{victim}"), line
    command = re.search(r"`(snakemake [^`]+)`", line)
    assert command, line
    argv = shlex.split(command.group(1))
    assert argv[1:] == ["--cores", "all", "--force", victim]
    done = snakemake(root, *argv[1:])  # exactly the advice (the Snakefile of this checkout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _contents(root / "results") == before
    again = snakemake(root, "-n", "--cores", "all")  # nothing left to rebuild
    assert again.returncode == 0, again.stderr[-2000:]

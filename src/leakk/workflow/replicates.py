"""Replicate seeds: the whole DAG once per seed, then every number across seeds.

Why: an unlearning result tuned on one seed can sit next to a cliff (issue 9: the
miniature's effect held for ``seed: 0`` and failed for ``seed: 1``). ``replicates: [0, 1, 2]``
in a params file makes ``leakk replicates`` build each seed as an ordinary run in its own
folder and then report mean ± sd across seeds beside the pooled CI
(:mod:`leakk.stats.replicate_stats`).

Why one Snakemake run per seed folder, not a ``{seed}`` wildcard through every rule: a seed
run is then *exactly* a normal run (same Snakefile, same rules, same caching), with
``seed: s`` written into its own params file. Nothing in the pipeline reads ``replicates``
(``leakk.workflow.table.STAGES``), so a plain ``snakemake`` or ``dvc repro`` still runs ``seed``.

Layout, under ``results/replicates/``::

    seed_<s>/params.yaml     the params file with seed: s (replicates removed)
    seed_<s>/results/...     that seed's complete run (Snakemake --directory seed_<s>)
    leak_at_k.csv, ...       the aggregate (leakk.stats.replicate_stats.write_aggregate)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from leakk.config import read_params_file
from leakk.core.layout import is_local
from leakk.core.errors import LeakkError, ParamsError
from leakk.core.io import write_text

#: where ``leakk replicates`` puts the seed folders and the aggregate (relative to the repo)
ROOT = Path("results/replicates")


def seeds(params: dict[str, Any]) -> list[int]:
    """The replicate seeds: ``replicates``, or ``[seed]`` when absent/null (one run)."""
    return list(params.get("replicates") or [params["seed"]])


def seed_dir(root: str | os.PathLike, seed: int) -> Path:
    return Path(root) / f"seed_{seed}"


def _absolute_sources(raw: dict[str, Any], base: Path) -> None:
    """Local folders named by relative paths (``model.base``, ``models.<name>.repo``,
    ``data.<benchmark>.repo``) made absolute: the seed's run works in another folder."""

    def fix(path: str) -> str:
        if is_local(path) and not os.path.isabs(os.path.expanduser(path)):
            return str((base / path).resolve())
        return path

    model = raw.get("model") or {}
    if isinstance(model.get("base"), str):
        model["base"] = fix(model["base"])
    sources = list((raw.get("models") or {}).values())
    bench = (raw.get("data") or {}).get("benchmark")
    if bench and isinstance((raw["data"].get(bench)), dict):
        sources.append(raw["data"][bench])
    for src in sources:
        if isinstance(src, dict) and isinstance(src.get("repo"), str):
            src["repo"] = fix(src["repo"])


def seed_params_text(params_file: str | os.PathLike, seed: int, base: str | os.PathLike = ".") -> str:
    """The YAML of seed ``seed``'s params file: the raw file (not defaults-filled, so the run
    tracks what the file says) with ``seed: <seed>`` and without ``replicates``; relative local
    folders resolved against ``base`` (the folder the command runs in)."""
    raw = read_params_file(params_file)
    raw.pop("replicates", None)
    raw["seed"] = int(seed)
    _absolute_sources(raw, Path(base).resolve())
    head = (f"# written by `leakk replicates` from {params_file} with seed: {seed}; "
            "edit that file, not this one\n")
    return head + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def write_seed_params(params_file: str | os.PathLike, seed: int, root: str | os.PathLike = ROOT) -> Path:
    """Write ``<root>/seed_<seed>/params.yaml`` atomically, and only when its text changes
    (an unchanged file keeps its mtime, so Snakemake re-runs nothing)."""
    out = seed_dir(root, seed) / "params.yaml"
    text = seed_params_text(params_file, seed)
    if not (out.is_file() and out.read_text() == text):
        write_text(text, out)
    return out


def snakemake_command(snakefile: str | os.PathLike, workdir: str | os.PathLike, configfile: str | os.PathLike,
                      cores: str, extra: Sequence[str] = ()) -> list[str]:
    """The Snakemake call of one seed: the repo's Snakefile (its rules and its workflow profile
    ``profiles/default``, found next to it) run in the seed folder on the seed's params file.
    Paths are absolute: Snakemake changes into ``workdir`` before it reads the Snakefile."""
    return [sys.executable, "-m", "snakemake", "-s", str(Path(snakefile).resolve()),
            "--directory", str(Path(workdir).resolve()), "--configfile", str(Path(configfile).resolve()),
            "--cores", str(cores), *extra]


def _env() -> dict[str, str]:
    """Jobs call ``leakk``: put this interpreter's bin folder (the venv) first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def run_seeds(params_file: str | os.PathLike, params: dict[str, Any], snakefile: str | os.PathLike = "Snakefile",
              root: str | os.PathLike = ROOT, cores: str = "all", extra: Sequence[str] = ()) -> list[int]:
    """Build every seed's run, one after another (each Snakemake run uses all ``cores``);
    resumable: a finished seed is "Nothing to be done". Raises LeakkError naming the first
    seed whose run fails (its log is Snakemake's, in the seed folder)."""
    snakefile = Path(snakefile)
    if not snakefile.is_file():
        raise ParamsError(f"{snakefile}: no such Snakefile (run from the repository root, or pass --snakefile)")
    todo = seeds(params)
    for i, seed in enumerate(todo, 1):
        config = write_seed_params(params_file, seed, root)
        workdir = config.parent
        print(f"leakk replicates: seed {seed} ({i}/{len(todo)}) in {workdir}", file=sys.stderr, flush=True)
        cmd = snakemake_command(snakefile, workdir, config, cores, extra)
        proc = subprocess.Popen(cmd, env=_env())
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Snakemake got the same Ctrl-C: let it stop its jobs cleanly
            proc.wait()
            raise
        if rc:
            raise LeakkError(f"seed {seed}: snakemake exited with status {rc} (run folder {workdir}, log "
                             f"{workdir}/.snakemake/log/); the seeds before it are done, rerun to resume")
    return todo

"""The workflow's own commands: ``validate``, ``dvc-record``, ``dvc-yaml`` and ``replicates``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leakk.core.io import write_text


def validate(params: dict[str, Any], *, params_file: str, stamp: str | None) -> None:
    """The params file was valid (``load_params`` ran before): say so, and write ``stamp``."""
    if stamp:
        write_text("ok\n", stamp)  # constant: a stage that depends on it re-runs only on failure
    print(f"{params_file}: ok")


def dvc_record(params: dict[str, Any], *, params_file: str, repo: str) -> None:
    """Record a finished Snakemake run in dvc.lock and the DVC cache (no re-run)."""
    from leakk.data.hub import download
    from leakk.workflow.dvc_record import record

    # the download stage's output, as `dvc repro` writes it (the Snakemake run fetched every
    # source already, so this makes no request)
    root = Path(repo)
    if (root / "dvc.yaml").is_file():
        download(params, hub_dir=root / "results" / "hub", record=root / "results" / "hub" / "downloads.json")
    lines = record(repo, progress=True)
    for line in lines:
        if not line.startswith("unchanged "):
            print(line)
    counts = {kind: sum(line.startswith(kind + " ") for line in lines) for kind in ("recorded", "unchanged", "skipped")}
    print("dvc-record: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


def dvc_yaml(params: dict[str, Any], *, params_file: str, file: str, check: bool) -> None:
    """Write dvc.yaml for the params file, or (``check``) fail when it differs."""
    from leakk.core.errors import ParamsError
    from leakk.workflow.dvc import render, stale

    if check:
        wrong = stale(file, params_file, params)
        if wrong:
            raise ParamsError(f"{file}: stale for {params_file} ({wrong}); regenerate it with "
                              f"`leakk --params {params_file} dvc-yaml`")
        return
    write_text(render(params_file, params), file)
    print(f"{file}: written for {params_file}")


def replicates(params: dict[str, Any], *, params_file: str, cores: str, snakefile: str, out_dir: str,
               snakemake_args: list[str]) -> None:
    """Every seed's run (resumable), then the aggregate across seeds."""
    from leakk.stages.replicates import aggregate
    from leakk.workflow.replicates import run_seeds

    extra = list(snakemake_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    run_seeds(params_file, params, snakefile=snakefile, root=out_dir, cores=cores, extra=extra)
    if "-n" in extra or "--dry-run" in extra:
        return  # a plan only: nothing new to aggregate
    print(aggregate(params, out_dir))


def demo(params: None, *, name: str, cores: str, out_dir: str, snakefile: str, preset: str, no_report: bool,
         snakemake_args: list[str]) -> None:
    """A real benchmark's path offline on tiny local stand-ins (:mod:`leakk.workflow.demo`)."""
    from leakk.workflow.demo import run

    extra = list(snakemake_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    report = run(name, root=out_dir, snakefile=snakefile, preset=preset, cores=cores, report=not no_report,
                 extra=extra)
    if report.is_file():
        print(f"leakk demo {name}: done; the summary is {out_dir}/results/summary.md, the report {report}")


def dvc_plots(params: None, *, out_dir: str, targets: list[str]) -> None:
    """``dvc plots show`` with Vega inlined, so the page opens offline."""
    from leakk.workflow.dvc_plots import show

    page = show(out_dir, targets)
    print(f"{page} (Vega inlined: opens offline)")

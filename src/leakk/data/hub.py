"""The ``download`` stage: hub datasets and models, pinned to a revision, under ``results/hub``.

Each hub source of the params (``data.<benchmark>``, each ``models.<name>``; see
:func:`hub_sources`) is fetched with ``huggingface_hub.snapshot_download`` into
its own folder, ``results/hub/datasets/<benchmark>`` or ``results/hub/models/<name>`` (the
repo's file tree, as on the hub; ``huggingface_hub`` keeps its download metadata in the
folder's ``.cache/``, so an interrupted download resumes). The folder's
``.leakk_download.json`` records the repo, the revision asked for and the commit it resolved
to; a second run with the same repo and revision finds it and makes no request at all (also
under ``HF_HUB_OFFLINE=1``). A local folder given in place of a hub id is used where it is
and never copied. Benchmarks then read the folder through ``datasets.load_dataset``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from leakk.core.layout import BASE_KEY, RESULTS, is_local
from leakk.core.errors import ArtifactError, ParamsError
from leakk.core.io import atomic_path, check_model_dir, one_line

HUB_DIR = Path(RESULTS.hub_dir)
STAMP = ".leakk_download.json"
#: weights other than safetensors are never fetched (leakk loads safetensors only)
MODEL_IGNORE = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "original/*"]


def hub_sources(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"datasets/<benchmark>" | "models/<name>": source}`` of everything ``leakk download``
    fetches (hub ids and local folders alike)."""
    out = {}
    bench = p["data"]["benchmark"]
    if bench != "synthetic" and p["data"].get(bench):
        out[f"datasets/{bench}"] = p["data"][bench]
    for name, src in (p.get("models") or {}).items():
        out[f"models/{name}"] = src
    base = p["model"].get("base")
    if base and not is_local(base):  # fine-tune a hub model: fetched like the others
        out[BASE_KEY] = {"repo": base, "revision": p["model"].get("revision")}
    return out


def source_param(key: str) -> str:
    """The params key of hub source ``key``: ``data.<benchmark>``, ``models.<name>`` or ``model``."""
    kind, name = key.split("/", 1)
    if key == BASE_KEY:
        return "model"
    return f"data.{name}" if kind == "datasets" else f"models.{name}"


def base_folder(p: dict[str, Any]) -> str | None:
    """The folder ``model.base`` names: as given, or its download (None: build from ``arch``)."""
    base = p["model"].get("base")
    if not base:
        return None
    return os.path.expanduser(base) if is_local(base) else RESULTS.hub(BASE_KEY)


def target(key: str, hub_dir: str | os.PathLike = HUB_DIR) -> Path:
    """The folder of hub source ``key`` (``datasets/<benchmark>``, ``models/<name>``)."""
    return Path(hub_dir) / key


def dataset_folder(p: dict[str, Any], hub_dir: str | os.PathLike = HUB_DIR) -> Path | None:
    """The folder the benchmark reads (None for the synthetic benchmark)."""
    bench = p["data"]["benchmark"]
    if bench == "synthetic":
        return None
    repo = p["data"][bench]["repo"]
    return Path(repo).expanduser() if is_local(repo) else target(f"datasets/{bench}", hub_dir)


def _stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None


def fetch(key: str, source: dict[str, Any], hub_dir: str | os.PathLike = HUB_DIR) -> tuple[Path, str]:
    """Make source ``key`` available; return (its folder, what happened: local / cached / downloaded)."""
    repo, revision = source["repo"], source.get("revision")
    where = source_param(key)
    if is_local(repo):
        folder = Path(repo).expanduser()
        if not folder.is_dir():
            raise ParamsError(f"{where}.repo: {repo}: no such folder")
        return folder, "local"
    folder = target(key, hub_dir)
    stamp = _stamp(folder)
    if stamp and stamp.get("repo") == repo and stamp.get("revision") == revision:
        return folder, "cached"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from leakk.core.checks import hub_id_problem

    problem = hub_id_problem(repo)  # validation refuses these first; a caller may not have validated
    if problem:
        raise ParamsError(f"{where}.repo: {problem}")

    repo_type = "dataset" if key.startswith("datasets/") else "model"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = snapshot_download(repo, repo_type=repo_type, revision=revision, local_dir=folder,
                                 ignore_patterns=MODEL_IGNORE if repo_type == "model" else None)
    except RevisionNotFoundError:
        raise ArtifactError(f"{where}.revision: {revision!r} is not a revision of the {repo_type} "
                            f"{repo!r} on the hub (rule: an existing commit, tag or branch)") from None
    except RepositoryNotFoundError:
        raise ArtifactError(f"{where}.repo: no {repo_type} {repo!r} on the hub (or it is private/gated: "
                            "log in with `hf auth login`)") from None
    except HFValidationError as exc:
        raise ParamsError(f"{where}: {repo}@{revision} is not a valid hub id and revision ({one_line(exc, 120)})") from None
    except LocalEntryNotFoundError as exc:
        raise ArtifactError(f"{where}: {repo}@{revision} is not downloaded and the hub cannot be reached "
                            f"({one_line(exc, 120)})") from None
    if repo_type == "model":
        check_model_dir(path, f"{where} ({repo}@{revision})")  # safetensors only: refuse now, not at sampling
    commit = _commit_of(Path(path), revision)
    with atomic_path(folder / STAMP) as tmp:
        tmp.write_text(json.dumps({"repo": repo, "revision": revision, "commit": commit}, indent=1) + "\n")
    return folder, "downloaded"


def _commit_of(folder: Path, revision: str) -> str | None:
    """The commit ``huggingface_hub`` recorded for a local_dir download (its metadata files)."""
    meta = folder / ".cache" / "huggingface" / "download"
    for path in sorted(meta.rglob("*.metadata")) if meta.is_dir() else ():
        lines = path.read_text().splitlines()
        if lines:
            return lines[0].strip()
    return revision


def download(p: dict[str, Any], keys: list[str] | None = None,
             hub_dir: str | os.PathLike = HUB_DIR, record: str | os.PathLike | None = None) -> list[str]:
    """Fetch the params' hub sources (all, or ``keys``); return one report line each; with
    ``record``, write ``{key: {repo, revision, commit, folder}}`` there (``{}`` when there is
    nothing to fetch, as for the synthetic benchmark)."""
    sources = hub_sources(p)
    for key in keys or []:
        if key not in sources:
            raise ParamsError(f"download: {key!r} is not a hub source of the params (known: {sorted(sources)})")
    lines, fetched = [], {}
    for key in keys or list(sources):
        folder, how = fetch(key, sources[key], hub_dir)
        lines.append(f"{key}: {how} {sources[key]['repo']}@{sources[key].get('revision') or '-'} → {folder}")
        # a local folder as the params write it (``~`` unexpanded): no path of this machine in the record
        where = sources[key]["repo"] if how == "local" else str(folder)
        fetched[key] = {**(_stamp(folder) or dict(sources[key])), "folder": where}
    if record is not None:
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps(fetched, indent=1, sort_keys=True) + "\n")
    return lines

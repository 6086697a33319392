"""Record what Snakemake built in DVC's lock file and cache, without re-running anything.

Snakemake builds; DVC versions. Both run the same ``leakk`` commands on the same params, so a
stage whose outputs Snakemake has just finished is, byte for byte, what ``dvc repro`` would
have made. :func:`record` commits such stages (``dvc commit --force`` per stage: hashes of
deps, params and outs into ``dvc.lock``; outs into the cache, linked rather than copied where
``.dvc/config`` says so), so that afterwards ``dvc status`` is clean and ``dvc repro`` after a
params edit re-runs only what changed. The Snakefile calls it (``leakk dvc-record``) after a
successful full run; stages with a missing output are left alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from leakk.core.errors import ArtifactError
from leakk.core.io import write_text

#: the stage that validates params.yaml; its stamp stands for "the Snakefile validated them"
VALIDATE_STAGE = "validate"


def record(root: str | os.PathLike = ".", progress: bool = False) -> list[str]:
    """Commit every dvc.yaml stage of ``root`` whose outputs all exist and whose hashes differ
    from ``dvc.lock``'s; return a line per stage (``progress``: a counter on stderr)."""
    root = Path(root)
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return [f"{root}: no DVC project here (run `dvc init`); nothing recorded"]
    from dvc.repo import Repo, lock_repo

    import networkx as nx

    lines = []
    # DVC addresses stages relative to the working directory: work from the project's root
    with contextlib.chdir(root), Repo(".") as repo:
        # dependencies first: committing a stage writes DVC's .gitignore entries next to its
        # outputs, which changes any folder a later stage depends on (rule_eval reads the
        # judgments folders the judge stages write into)
        graph = repo.index.graph  # edges: stage → the stages it depends on
        stages = [s for s in reversed(list(nx.topological_sort(graph))) if s.cmd]
        for stage in stages:
            if stage.name == VALIDATE_STAGE:
                for out in stage.outs:  # the caller validated params.yaml before calling us
                    write_text("ok\n", out.fs_path)
        for i, stage in enumerate(stages, 1):
            if progress:
                print(f"\rdvc-record: {i}/{len(stages)} stages checked", end="", file=sys.stderr, flush=True)
            missing = [str(o) for o in stage.outs if not o.exists] + [str(d) for d in stage.deps if not d.exists]
            if missing:
                lines.append(f"skipped {stage.addressing}: missing {missing[0]}")
                continue
            try:
                # DVC's state database keeps each file's hash by inode and mtime, so a stage
                # whose files did not change since the last record costs a lookup, not a hash
                with lock_repo(repo):  # what DVC's own commands hold while they compare
                    changed = stage.changed()
                if not changed:
                    lines.append(f"unchanged {stage.addressing}")
                    continue
                repo.commit(stage.addressing, force=True)
            except Exception as exc:  # noqa: BLE001 - DVC raises many types; name the stage
                raise ArtifactError(f"dvc-record: {stage.addressing}: {type(exc).__name__}: {exc}") from None
            lines.append(f"recorded {stage.addressing}")
        if progress:
            print(file=sys.stderr)
    return lines

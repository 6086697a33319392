"""Record what Snakemake built in DVC's lock file and cache, without re-running anything.

Snakemake builds; DVC versions. Both run the same ``leakk`` commands on the same params, so a
stage whose outputs Snakemake has just finished is, byte for byte, what ``dvc repro`` would
have made. :func:`record` commits such stages (``dvc commit --force`` per stage: hashes of
deps, params and outs into ``dvc.lock``; outs into the cache, linked rather than copied where
``.dvc/config`` says so), so that afterwards ``dvc status`` is clean and ``dvc repro`` after a
params edit re-runs only what changed. The Snakefile calls it (``leakk dvc-record``) after a
successful full run; stages with a missing output are left alone.

A commit keeps every output's modification time. When a stage's hashes changed (its code, say)
but an output's bytes did not, DVC replaces the output with a link to the cache object it
already holds, which carries the mtime of the run that first made it; Snakemake would then see
that output as older than its inputs and run it again. :func:`_kept_mtimes` puts them back.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from leakk.core.errors import ArtifactError
from leakk.core.io import write_text

#: the stage that validates params.yaml; its stamp stands for "the Snakefile validated them"
VALIDATE_STAGE = "validate"


def _entries(path: str) -> Iterator[str]:
    """``path`` and, for a folder, everything under it."""
    yield path
    if os.path.isdir(path) and not os.path.islink(path):
        for top, dirs, files in os.walk(path):
            yield from (os.path.join(top, name) for name in (*dirs, *files))


@contextlib.contextmanager
def _kept_mtimes(paths: list[str]) -> Iterator[None]:
    """Put back the access and modification times that ``paths`` and everything under them had on
    entry when the block ends: a link's own times on the link, and for a file that is (or becomes,
    with DVC's ``symlink`` cache type) a symlink, the target's times on the target, which
    Snakemake reads. Best effort, entry by entry: a path the block removed, or one we may not
    touch, keeps what the block left. Outputs with identical bytes share one cache inode under
    the ``hardlink`` cache type, so they share one mtime too (folders are unaffected: Snakemake
    dates them by their ``.snakemake_timestamp``, which DVC ignores)."""
    own, target = {}, {}
    for entry in (e for path in paths if os.path.lexists(path) for e in _entries(path)):
        st = os.stat(entry, follow_symlinks=False)
        own[entry] = (st.st_atime_ns, st.st_mtime_ns)
        if os.path.islink(entry) and os.path.exists(entry):
            st = os.stat(entry)
        target[entry] = (st.st_atime_ns, st.st_mtime_ns)  # a plain file's own times
    try:
        yield
    finally:
        for entry in own:
            if os.path.islink(entry):
                with contextlib.suppress(OSError):
                    os.utime(entry, ns=target[entry])
            with contextlib.suppress(OSError):
                os.utime(entry, ns=own[entry], follow_symlinks=False)


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
                with _kept_mtimes([out.fs_path for out in stage.outs]):
                    repo.commit(stage.addressing, force=True)
            except Exception as exc:  # noqa: BLE001 - DVC raises many types; name the stage
                raise ArtifactError(f"dvc-record: {stage.addressing}: {type(exc).__name__}: {exc}") from None
            lines.append(f"recorded {stage.addressing}")
        if progress:
            print(file=sys.stderr)
    return lines

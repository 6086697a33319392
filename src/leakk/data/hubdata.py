"""Reading a hub dataset (or a local folder laid out like one) into a polars frame.

Every real benchmark reads through :func:`load_split`, i.e. ``datasets.load_dataset(folder,
config, split=...)`` on the folder ``leakk download`` filled (``results/hub/...``, see
:mod:`leakk.data.hub`) or on a local folder named in params. Such a folder is the hub repo's file
tree: a ``README.md`` whose YAML header lists the ``configs`` and their ``data_files``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.io import one_line


def load_split(source: str | os.PathLike, config: str, split: str) -> pl.DataFrame:
    """``datasets.load_dataset(source, config, split=split)`` as a polars frame (one line on failure)."""
    import datasets

    if not Path(source).is_dir():
        raise ArtifactError(f"{source}: no such dataset folder (run `leakk download` first)")
    # a private cache per call: datasets keys its cache of a local folder by file names and
    # times, which a rewritten file can share; these splits are small, so re-reading is cheap
    with tempfile.TemporaryDirectory(prefix="leakk-datasets-") as cache:
        try:
            ds = datasets.load_dataset(str(source), config, split=split, cache_dir=cache)
            return pl.from_arrow(ds.data.table)  # type: ignore[return-value]
        except Exception as exc:  # datasets raises many types; name the folder, config and split
            raise ArtifactError(f"{source}: cannot load config {config!r} split {split!r} ({one_line(exc)})") from None


def require(frame: pl.DataFrame, columns: tuple[str, ...], where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{where}: missing columns {missing} (has {frame.columns})")

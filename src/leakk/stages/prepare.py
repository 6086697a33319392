"""The first stages: fetch hub sources (``download``) and build the benchmark (``data``)."""

from __future__ import annotations

from typing import Any

from leakk.core.io import write_parquet


def download(params: dict[str, Any], *, key: list[str] | None, hub_dir: str, record: str | None) -> None:
    """Fetch the params' hub sources (all, or the ``key`` ones) at their pinned revisions."""
    from leakk.data.hub import download as fetch_all

    for line in fetch_all(params, key or None, hub_dir, record=record):
        print(line)


def data(params: dict[str, Any], *, out: str, hub_dir: str) -> None:
    """Build the benchmark Parquet (a hub benchmark reads what ``download`` fetched)."""
    from leakk.data import build_benchmark
    from leakk.data.hub import dataset_folder

    d = params["data"]
    frame = build_benchmark(d["benchmark"], d.get(d["benchmark"]) or {}, params["seed"],
                            source=dataset_folder(params, hub_dir))
    write_parquet(frame, out, "data")

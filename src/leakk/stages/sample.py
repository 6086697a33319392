"""The sample stage: n completions per forget question (one per question, forget and retain,
for greedy), and the merge of sample shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leakk.core.io import read_parquet, write_parquet


def sample(params: dict[str, Any], *, data: str, model: str, model_dir: str, decoding: str, shard: int,
           shards: int, out: str) -> None:
    """Sample one decoding into the file ``out``, or with ``decoding="all"`` every configured
    decoding into ``out/<decoding>.parquet``."""
    from leakk.attacks import evaluation_inputs
    from leakk.core.errors import ParamsError
    from leakk.core.io import check_model_dir
    from leakk.sampling import Decoding, open_backend
    from leakk.sampling.decoding import decoding_names
    from leakk.sampling.stage import check_shard, run_sampling

    check_model_dir(model_dir, "--model-dir")
    check_shard(shard, shards)
    frame, template = evaluation_inputs(params, model, read_parquet(data, "data"))
    known = decoding_names(params)
    names = known if decoding == "all" else [decoding]
    for name in names:
        if name not in known:
            raise ParamsError(f"sample.decodings: {name!r} is not configured (known: {known})")
    section = dict(params["sample"], device=params["device"])
    # one load for every decoding: bit for bit the per-decoding jobs' samples with the HF backend;
    # vLLM's prefix cache is then shared across decodings (equal up to float near-ties, as shards)
    with open_backend(section, model_dir, params["device"]) as backend:
        for dec in map(Decoding.from_name, names):
            path = Path(out) / f"{dec.name}.parquet" if decoding == "all" else Path(out)
            samples = run_sampling(backend, frame, dec, model_name=model, params=section, template=template,
                                   shard=shard, shards=shards)
            write_parquet(samples, path, "samples")


def merge(params: dict[str, Any], *, shards_in: list[str], out: str) -> None:
    """Concatenate shard files (sorted by qid, sample_idx): equal to an unsharded run."""
    import polars as pl

    frames = [read_parquet(p, "samples") for p in shards_in]
    write_parquet(pl.concat(frames).sort("qid", "sample_idx"), out, "samples")

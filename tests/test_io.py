"""Atomic writes: a failure midway leaves neither a partial file nor a temp file."""

from __future__ import annotations

import polars as pl
import pytest

from leakk.core.errors import ArtifactError
from leakk.core.io import atomic_path, read_parquet, write_parquet


def test_atomic_file_failure_leaves_nothing(tmp_path):
    target = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_path(target, is_dir=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError
    assert [p.name for p in target.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_write_removes_what_a_killed_writer_of_the_same_target_left(tmp_path):
    """SIGKILL skips atomic_path's cleanup; the next write of that target removes the temp
    file or folder, and nothing that belongs to another target or another program."""
    (tmp_path / ".x.parquet.k3j_9a0z.tmp").write_bytes(b"partial")
    (tmp_path / ".model.abcdefgh.tmp").mkdir()
    (tmp_path / ".model.abcdefgh.tmp" / "w").write_bytes(b"partial")
    keep = [".x.abcdefgh.tmp", ".x.parquet.short.tmp", ".x.parquet.abcdefgh.tmp.bak", "x.parquet.abcdefgh.tmp",
            ".model2.abcdefgh.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"other")
    write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "x.parquet")
    with atomic_path(tmp_path / "model", is_dir=True) as tmp:
        (tmp / "w").write_bytes(b"ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["x.parquet", "model"])


def test_contract_enforced(tmp_path):
    with pytest.raises(ArtifactError, match="missing required columns"):
        write_parquet(pl.DataFrame({"qid": ["a"]}), tmp_path / "s.parquet", "samples")
    with pytest.raises(ArtifactError, match="no such artifact"):
        read_parquet(tmp_path / "nope.parquet")


def test_folder_artifact_files_get_usual_permissions(tmp_path):
    import os

    target = tmp_path / "model"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "weights").write_bytes(b"w")
        os.chmod(tmp / "weights", 0o600)  # as safetensors' writer leaves it
    umask = os.umask(0)
    os.umask(umask)
    assert (target / "weights").stat().st_mode & 0o777 == 0o666 & ~umask


def test_contract_entry_may_be_a_tuple_of_columns(tmp_path, monkeypatch):
    from leakk.core import io

    monkeypatch.setitem(io.CONTRACTS, "extra", ("a", "b"))
    write_parquet(pl.DataFrame({"a": [1], "b": ["x"]}), tmp_path / "e.parquet", "extra")
    with pytest.raises(ArtifactError, match=r"missing required columns \['b'\]"):
        write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "f.parquet", "extra")


def test_contract_checks_dtype_families(tmp_path):
    ok = pl.DataFrame({"qid": ["q"], "sample_idx": pl.Series([0], dtype=pl.Int32), "judge": ["f"],
                       "score": pl.Series([1.0], dtype=pl.Float32), "leaked": [None]})
    write_parquet(ok, tmp_path / "j.parquet", "judgments")  # Int32/Float32/Null are fine
    with pytest.raises(ArtifactError, match="score is String"):
        write_parquet(ok.with_columns(score=pl.lit("high")), tmp_path / "k.parquet", "judgments")

"""`leakk download` against a local server speaking the hub protocol (no network)."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import write_params
from fake_hub import FakeHub
from hub_layout import tofu_repo
from leakk.cli import main
from leakk.models.demo import tiny_llama_folder


def tiny_model_repo(root):
    """A tiny Llama saved as an HF folder (safetensors), the shape of a published checkpoint."""
    tiny_llama_folder(root, ["a tiny model's vocabulary"] * 2, vocab_size=64)
    return root


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        import huggingface_hub.constants as c

        # huggingface_hub reads HF_ENDPOINT once, at import (transformers may have imported it)
        monkeypatch.setattr(c, "ENDPOINT", server.url)
        monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        yield server


def _params(micro_params, tmp_path, data_rev, model_rev):
    p = dict(micro_params, rule={}, judge={"rougeL": {"threshold": 0.3}},
             data={"benchmark": "tofu", "tofu": {"repo": "locuslab/TOFU", "revision": data_rev}},
             models={"published": {"repo": "org/tiny-llama", "revision": model_rev}})
    p["estimate"] = dict(p["estimate"], headline_judge="rougeL")
    return write_params(tmp_path / "params.yaml", p)


def test_download_fetches_then_makes_no_request_and_bad_revision_is_one_line(hub, tmp_path, micro_params,
                                                                            capsys, monkeypatch):
    data_commit = hub.add("dataset", "locuslab/TOFU", tofu_repo(tmp_path / "srv" / "TOFU"))
    model_commit = hub.add("model", "org/tiny-llama", tiny_model_repo(tmp_path / "srv" / "model"))
    params = _params(micro_params, tmp_path, data_commit, model_commit)
    hub_dir = tmp_path / "results" / "hub"
    record = tmp_path / "downloads.json"
    assert main(["--params", str(params), "download", "--hub-dir", str(hub_dir), "--record", str(record)]) == 0
    assert "datasets/tofu: downloaded" in capsys.readouterr().out
    import json

    fetched = json.loads(record.read_text())
    assert fetched["datasets/tofu"]["commit"] == data_commit and fetched["models/published"]["commit"] == model_commit
    assert any("/resolve/" in r for r in hub.requests)
    model = hub_dir / "models" / "published"
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()
    assert (hub_dir / "datasets" / "tofu" / "forget10.json").read_bytes() == \
        (tmp_path / "srv" / "TOFU" / "forget10.json").read_bytes()

    # a second run with the same revisions makes no request at all
    hub.requests.clear()
    assert main(["--params", str(params), "download", "--hub-dir", str(hub_dir)]) == 0
    assert hub.requests == [] and capsys.readouterr().out.count(": cached") == 2
    # … also offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--params", str(params), "download", "--hub-dir", str(hub_dir)]) == 0
    monkeypatch.delenv("HF_HUB_OFFLINE")

    # the benchmark reads the downloaded folder through datasets
    out = tmp_path / "results" / "data" / "benchmark.parquet"
    assert main(["--params", str(params), "data", "--out", str(out), "--hub-dir", str(hub_dir)]) == 0
    assert pl.read_parquet(out).filter(pl.col("split") == "forget").height == 40

    # a wrong revision: one line naming the key
    bad = _params(micro_params, tmp_path, data_commit, "0" * 40)
    assert main(["--params", str(bad), "download", "--hub-dir", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "models.published.revision: '0000000000000000000000000000000000000000' " \
        "is not a revision of the model 'org/tiny-llama'" in err, err


def test_a_model_repo_without_safetensors_is_refused_at_download(hub, tmp_path, micro_params, capsys):
    repo = tiny_model_repo(tmp_path / "srv" / "model")
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(repo / "model.safetensors"), repo / "pytorch_model.bin")  # pickled weights only
    (repo / "model.safetensors").unlink()
    data_commit = hub.add("dataset", "locuslab/TOFU", tofu_repo(tmp_path / "srv" / "TOFU"))
    params = _params(micro_params, tmp_path, data_commit, hub.add("model", "org/tiny-llama", repo))
    assert main(["--params", str(params), "download", "--key", "models/published",
                 "--hub-dir", str(tmp_path / "hub")]) == 2
    err = capsys.readouterr().err
    assert "has no safetensors weights" in err and err.count("\n") == 1, (err, hub.errors)
    assert not any("pytorch_model.bin" in r for r in hub.requests)  # never fetched


def test_local_folder_in_place_of_a_hub_id_is_used_where_it_is(tmp_path, micro_params, capsys):
    src = tofu_repo(tmp_path / "TOFU")
    p = dict(micro_params, rule={}, judge={"rougeL": {}}, data={"benchmark": "tofu", "tofu": {"repo": str(src)}})
    p["estimate"] = dict(p["estimate"], headline_judge="rougeL")
    params = write_params(tmp_path / "params.yaml", p)
    assert main(["--params", str(params), "download", "--hub-dir", str(tmp_path / "hub")]) == 0
    assert f"datasets/tofu: local {src}" in capsys.readouterr().out and not (tmp_path / "hub").exists()
    out = tmp_path / "benchmark.parquet"
    assert main(["--params", str(params), "data", "--out", str(out)]) == 0
    assert pl.read_parquet(out).height == 40 + 60


def test_a_download_cut_midway_resumes_from_where_it_stopped(hub, tmp_path, micro_params, capsys, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "DOWNLOAD_CHUNK_SIZE", 1024)  # the tiny file spans many chunks, as real weights do
    data_commit = hub.add("dataset", "locuslab/TOFU", tofu_repo(tmp_path / "srv" / "TOFU"))
    model_commit = hub.add("model", "org/tiny-llama", tiny_model_repo(tmp_path / "srv" / "model"))
    params = _params(micro_params, tmp_path, data_commit, model_commit)
    hub.cut_once.add("model.safetensors")
    assert main(["--params", str(params), "download", "--key", "models/published",
                 "--hub-dir", str(tmp_path / "hub")]) == 0, capsys.readouterr().err
    weights = [r for r in hub.requests if r.startswith("GET") and r.split()[1].endswith("model.safetensors")]
    assert len(weights) == 2 and weights[1].endswith("-"), weights  # the second asks for the rest (Range)
    assert weights[1].split("bytes=")[1] != "0-"
    got = (tmp_path / "hub" / "models" / "published" / "model.safetensors").read_bytes()
    assert got == (tmp_path / "srv" / "model" / "model.safetensors").read_bytes()


def test_dvc_record_writes_the_download_record_dvc_would(tmp_path, micro_params, monkeypatch):
    """After a Snakemake run, `leakk dvc-record` writes results/hub/downloads.json byte for
    byte as DVC's download stage does, so dvc.lock can record that stage too."""
    import shutil

    from conftest import ROOT

    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = write_params(tmp_path / "params.yaml", micro_params)
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(params), "dvc-record"]) == 0
    made = (tmp_path / "results/hub/downloads.json").read_bytes()
    assert main(["--params", str(params), "download", "--hub-dir", "results/hub",
                 "--record", "results/hub/downloads.json"]) == 0
    assert (tmp_path / "results/hub/downloads.json").read_bytes() == made == b"{}\n"

"""`models:` entries (hub ids or folders) are evaluated as they are: no training, yet sampled,
judged and in the leak table; `full`/`retrain` there replace fine-tuning."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import MICRO, write_params
from leakk.config import model_folder, model_names, validate_params
from test_workflow import planned_rules, snakemake


def tiny_llama_folder(path, texts, *, vocab_size=120, hidden=16, layers=1, positions=64):
    """A tiny Llama (random weights) with a tokenizer trained on ``texts``, saved as a folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from leakk.modeling import build_tokenizer

    tok = build_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _params(tmp_path):
    texts = ["Question: who wrote the book? Answer: an author wrote it."] * 4
    folders = {m: tiny_llama_folder(tmp_path / "ckpt" / m, texts) for m in ("full", "retrain", "published")}
    p = dict(MICRO, unlearn={}, rule={}, models={m: {"repo": f} for m, f in folders.items()},
             sample=dict(MICRO["sample"], n=4, max_new_tokens=6))
    return p, folders


def test_models_entries_are_model_names_with_their_folders(tmp_path):
    p, folders = _params(tmp_path)
    p = validate_params(p)
    assert model_names(p) == ["full", "retrain", "published"]
    assert model_folder(p, "published") == folders["published"]
    hub = validate_params(dict(p, models={"x": {"repo": "org/x", "revision": "abc"}}))
    assert model_folder(hub, "x") == "results/hub/models/x" and model_folder(hub, "ga") == "results/models/ga"


def test_models_entries_plan_no_training(tmp_path):
    p, _ = _params(tmp_path)
    write_params(tmp_path / "params.yaml", p)
    plan = snakemake(tmp_path, "-n")
    assert plan.returncode == 0, plan.stderr[-2000:]
    rules = planned_rules(plan)
    assert "finetune" not in rules and "unlearn" not in rules and "download" not in rules, rules
    assert {"sample", "judge", "estimate"} <= rules


@pytest.mark.slow  # ~50 s of CPU (3 min on the shared 2 cores)
def test_a_models_entry_reaches_the_leak_table_without_training(tmp_path):
    p, _ = _params(tmp_path)
    write_params(tmp_path / "params.yaml", p)
    run = snakemake(tmp_path, "results/leak_at_k.parquet")
    assert run.returncode == 0, run.stderr[-3000:]
    leak = pl.read_parquet(tmp_path / "results" / "leak_at_k.parquet")
    assert set(leak["model"]) == {"full", "retrain", "published"}
    assert not (tmp_path / "results" / "models").exists()


def test_model_base_as_a_hub_id_is_downloaded_before_finetuning(tmp_path):
    from leakk.config import base_folder, hub_sources
    from leakk.errors import ParamsError

    p = dict(MICRO, model={"base": "org/tiny-llama"})
    with pytest.raises(ParamsError, match=r"model.revision: 'org/tiny-llama' is no folder here, so it names a hub id: pin its revision"):
        validate_params(p)
    p["model"]["revision"] = "a" * 40
    v = validate_params(p)
    assert hub_sources(v) == {"models/_base": {"repo": "org/tiny-llama", "revision": "a" * 40}}
    assert base_folder(v) == "results/hub/models/_base"
    write_params(tmp_path / "params.yaml", p)
    plan = snakemake(tmp_path, "-n")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "download --key models/_base --hub-dir results/hub" in plan.stdout
    assert "finetune" in planned_rules(plan)

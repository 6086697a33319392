"""`models:` entries (hub ids or folders) are evaluated as they are: no training, yet sampled,
judged and in the leak table; `full`/`retrain` there replace fine-tuning."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import MICRO, write_params
from leakk.config import validate_params
from leakk.core.layout import model_folder, model_names
from leakk.models.demo import tiny_llama_folder
from test_workflow import planned_rules, snakemake


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
    from leakk.data.hub import base_folder, hub_sources
    from leakk.core.errors import ParamsError

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


def test_revision_null_is_a_local_folder_and_refused_for_a_hub_id(tmp_path):
    from leakk.core.errors import ParamsError

    p, folders = _params(tmp_path)
    p["models"] = {m: {"repo": f, "revision": None} for m, f in folders.items()}
    assert model_folder(validate_params(p), "full") == folders["full"]
    p["models"]["published"] = {"repo": "org/published", "revision": None}
    with pytest.raises(ParamsError, match=r"^params.yaml: models.published.revision: 'org/published' is no folder "
                                          r"here, so it names a hub id: pin its revision"):
        validate_params(p)


def test_chat_prompt_template_is_checked_against_each_tokenizer_on_disk(tmp_path, monkeypatch):
    """`prompt_template: chat` with a local model whose tokenizer has no chat template fails at
    validation with one line naming the key and the model (not a traceback at sampling)."""
    from leakk.models.demo import CHAT_TEMPLATE
    from leakk.core.errors import ParamsError

    p, folders = _params(tmp_path)
    p["prompt_template"] = "chat"
    with pytest.raises(ParamsError) as err:
        validate_params(p)
    line = str(err.value)
    assert "\n" not in line and line.startswith("params.yaml: prompt_template: ")
    assert f"models.full ({folders['full']}) has none" in line
    texts = ["Question: who wrote the book? Answer: an author wrote it."] * 4
    for m in folders:
        tiny_llama_folder(folders[m], texts, chat_template=CHAT_TEMPLATE)
    validate_params(p)
    # a hub model is checked once its download is on disk (every job validates again)
    monkeypatch.chdir(tmp_path)
    p["models"]["published"] = {"repo": "org/published", "revision": "a" * 40}
    validate_params(p)
    tiny_llama_folder(tmp_path / "results/hub/models/published", texts)
    with pytest.raises(ParamsError, match=r"models.published \(results/hub/models/published\) has none"):
        validate_params(p)
    # and model.base, the model fine-tuned from
    base = dict(p, models={}, model={"base": folders["full"]})
    validate_params(base)
    tiny_llama_folder(tmp_path / "plain", texts)
    with pytest.raises(ParamsError, match=r"model.base \(.*plain\) has none"):
        validate_params(dict(base, model={"base": str(tmp_path / "plain")}))

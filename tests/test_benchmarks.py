"""Real-benchmark loaders on tiny folders laid out like the hub repos."""

from __future__ import annotations

import polars as pl
import pytest

from hub_layout import muse_repo, tofu_repo, wmdp_repo
from leakk.config import validate_params
from leakk.data import BENCHMARKS, build_benchmark
from leakk.data.wmdp import chance_leak_at_k
from leakk.core.errors import ArtifactError, ParamsError
from leakk.core.io import check_contract


def test_tofu_groups_authors_of_20_rows_and_takes_paraphrases(tmp_path):
    df = build_benchmark("tofu", {"forget": "forget10", "holdout": True}, 0, source=tofu_repo(tmp_path / "TOFU"))
    check_contract(df, "data")
    assert set(BENCHMARKS.get("tofu").columns) <= set(df.columns) and "fact" not in df.columns
    forget = df.filter(pl.col("split") == "forget")
    assert forget.height == 40 and forget["group"].n_unique() == 2
    assert forget.group_by("group").len()["len"].to_list() == [20, 20]
    # row 20 starts the second author: its question names author 1
    assert forget.filter(pl.col("group") == "forget10/author001")["question"][0] == "F author 1 question 0?"
    assert forget["paraphrased_question"][3] == "Tell me, F author 0 question 3?"
    retain = df.filter(pl.col("split") == "retain")
    assert retain.height == 60 and (retain["paraphrased_question"] == retain["question"]).all()
    assert not retain["paraphrased"].any() and df.filter(pl.col("split") == "holdout").height == 20
    assert df["qid"].n_unique() == df.height


def test_tofu_paper_subset_is_the_first_forget_rows(tmp_path):
    src = tofu_repo(tmp_path / "TOFU")
    df = build_benchmark("tofu", {"forget_limit": 25, "retain_limit": 5}, 0, source=src)
    forget = df.filter(pl.col("split") == "forget")
    assert forget["question"].to_list() == [f"F author {i // 20} question {i % 20}?" for i in range(25)]
    assert df.filter(pl.col("split") == "retain").height == 5


def test_tofu_without_the_paraphrase_config_fails_in_one_line(tmp_path):
    src = tofu_repo(tmp_path / "TOFU")
    (src / "forget10_perturbed.json").write_text('{"question": "other?", "paraphrased_question": "p"}\n')
    with pytest.raises(ArtifactError, match="no paraphrase for 40 forget question"):
        build_benchmark("tofu", {}, 0, source=src)


def test_muse_knowmem_and_verbmem(tmp_path):
    src = muse_repo(tmp_path / "MUSE-News")
    know = build_benchmark("muse", {"task": "knowmem"}, 0, source=src)
    check_contract(know, "data")
    assert know.group_by("split").len().sort("split")["len"].to_list() == [3, 3]
    assert know.filter(pl.col("split") == "forget")["answer"].to_list() == ["kf a0", "kf a1", "kf a2"]
    verb = build_benchmark("muse", {"task": "verbmem", "limit": 2}, 0, source=src)
    assert verb["question"].to_list() == ["Once upon 0", "Once upon 1"]
    assert verb["answer"].to_list() == ["a time there was 0", "a time there was 1"]
    assert (verb["split"] == "forget").all()


def test_wmdp_answer_is_the_correct_choice_text(tmp_path):
    df = build_benchmark("wmdp", {}, 0, source=wmdp_repo(tmp_path / "wmdp"))
    check_contract(df, "data")
    row = df.filter(pl.col("qid") == "wmdp-cyber_0002")
    assert row["answer"][0] == "wmdp-cyber choice 2C" and row["question"][0] == "wmdp-cyber stem 2?"
    assert (df["n_choices"] == 4).all() and df.height == 6


def test_wmdp_chance_baseline_against_enumeration():
    # a guesser picks uniformly among 4 letters k times; P(at least one right) by enumeration
    from itertools import product
    for k in (1, 2, 3):
        hits = sum(any(g == 0 for g in guess) for guess in product(range(4), repeat=k))
        assert chance_leak_at_k(4, k) == pytest.approx(hits / 4 ** k, abs=1e-12)


def test_fact_judge_is_refused_for_tofu_at_validation(micro_params):
    p = dict(micro_params, data={"benchmark": "tofu", "tofu": {"repo": "locuslab/TOFU", "revision": "main"}},
             rule={}, judge={"fact": {}, "rougeL": {}}, estimate=dict(micro_params["estimate"], headline_judge="rougeL"))
    with pytest.raises(ParamsError, match=r"judge.fact: the 'fact' judge needs a fact column.*'tofu'"):
        validate_params(p)
    p["judge"] = {"rougeL": {}}
    validate_params(p)

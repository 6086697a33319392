"""The data contract's ``fact`` column is optional: judges that need it refuse clearly."""

from __future__ import annotations

import polars as pl
import pytest

from leakk.config import validate_params
from leakk.judges.run import utility_judge
from leakk.core.errors import ArtifactError
from leakk.core.io import CONTRACTS, check_contract
from leakk.judges import judge_samples

DATA = pl.DataFrame({"qid": ["q1", "q2"], "group": ["a", "a"], "question": ["Q1?", "Q2?"],
                     "answer": ["The cat sat on the mat.", "Blue whales are large."],
                     "split": ["forget", "forget"]})
SAMPLES = pl.DataFrame({"qid": ["q1", "q2"], "sample_idx": [0, 0],
                        "text": ["the cat sat on the mat", "no idea"]})


def test_contract_has_no_fact_and_data_without_it_is_on_contract():
    assert "fact" not in CONTRACTS["data"]
    check_contract(DATA, "data")


def test_rouge_judges_data_without_facts():
    out = judge_samples(SAMPLES, DATA, {"rougeL": {"threshold": 0.9}})
    assert out["leaked"].to_list() == [True, False]


def test_fact_judge_refuses_data_without_facts_in_one_line():
    with pytest.raises(ArtifactError) as e:
        judge_samples(SAMPLES, DATA, {"truth": {"type": "fact"}})
    assert "'truth' (fact) needs the data's fact column" in str(e.value) and "\n" not in str(e.value)


def test_fact_column_is_used_where_present():
    out = judge_samples(SAMPLES, DATA.with_columns(fact=pl.Series(["the mat", "whales"])), {"fact": {}})
    assert out["leaked"].to_list() == [True, False]


def test_utility_judge_is_chosen_by_type_not_label(micro_params):
    p = dict(micro_params, judge={"truth": {"type": "fact"}, "rougeL": {"threshold": 0.3}},
             rule={}, estimate=dict(micro_params["estimate"], headline_judge="rougeL"))
    assert utility_judge(validate_params(p)) == "truth"
    p["judge"] = {"fact_lookalike": {"type": "rougeL"}, "rougeL": {}}
    assert utility_judge(validate_params(p)) == "rougeL"  # the headline judge

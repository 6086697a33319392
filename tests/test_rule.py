"""RULE: leaked-pair selection, early stop, and the forget set holding only judged leaks."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conftest import MICRO, register_rule_judge
from leakk.config import validate_params
from leakk.core.errors import ArtifactError
from leakk.data.synthetic import generate
from leakk.models.finetune import finetune
from leakk.unlearn.rule import LEAKED_SCHEMA, run_round, select_leaked

QUESTIONS = pl.DataFrame({"qid": ["a", "a", "b"], "phrasing": [0, 1, 0], "prompt_question": ["Qa?", "Qa'?", "Qb?"]})


def test_select_leaked_only_true_and_deduplicated():
    judged = pl.DataFrame({
        "qid": ["a", "a", "a", "a", "b", "b", "b"],
        "sample_idx": [0, 1, 2, 3, 0, 1, 2],
        "phrasing": [0, 0, 0, 1, 0, 0, 0],
        "text": ["x", "x", "y", "u", "z", "w", "v"],
        "leaked": [True, True, False, True, None, True, True],
    })
    known = pl.DataFrame({"qid": ["b"], "question": ["Qb?"], "completion": ["v"], "round": [1]}, schema=LEAKED_SCHEMA)
    new = select_leaked(judged, QUESTIONS, known, round_idx=2)
    # each pair keeps the phrasing its completion was sampled from
    assert new.select("qid", "question", "completion").rows() == [("a", "Qa'?", "u"), ("a", "Qa?", "x"), ("b", "Qb?", "w")]
    assert new["round"].to_list() == [2, 2, 2]


register_rule_judge("never_leaks", lambda text: False)
register_rule_judge("leaks_if_long", lambda text: len(text.split()) >= 4)  # some leak, some do not


def _judge_down(text):
    raise RuntimeError("judge endpoint down")


register_rule_judge("rule_judge_down", _judge_down)


@pytest.fixture(scope="module")
def base(micro_full):
    return micro_full


def _params(judge):
    p = dict(MICRO, judge={"fact": {}, judge: {}})
    p["rule"] = {"rule_npo": dict(MICRO["rule"]["rule_npo"], judge=judge)}
    return validate_params(p)


def test_round_without_leaks_stops_early(base, tmp_path):
    root, data = base
    p = _params("never_leaks")
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    log = pl.read_parquet(tmp_path / "r1/round.parquet")
    assert log["stopped"][0] and not log["trained"][0] and log["new_leaked"][0] == 0
    assert (tmp_path / "r1/model/model.safetensors").read_bytes() == (root / "model/model.safetensors").read_bytes()
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=tmp_path / "r1", out_dir=tmp_path / "r2")
    assert pl.read_parquet(tmp_path / "r2/round.parquet")["stopped"][0]


def test_forget_set_holds_only_judged_leaks(base, tmp_path):
    root, data = base
    p = _params("leaks_if_long")
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    leaked = pl.read_parquet(tmp_path / "r1/leaked.parquet")
    log = pl.read_parquet(tmp_path / "r1/round.parquet")
    assert leaked.height == log["new_leaked"][0] > 0
    assert all(len(c.split()) >= 4 for c in leaked["completion"])
    assert log["trained"][0] and not log["stopped"][0]
    assert log["train_seed"][0] != p["sample"]["seed"]
    # RULE sampled the training phrasings only, never the held-out evaluation phrasing
    forget = data.filter(pl.col("split") == "forget")
    trained_on = {q for qs in forget["train_questions"] for q in qs}
    assert set(leaked["question"]) <= trained_on
    assert not set(leaked["question"]) & set(forget["paraphrased_question"])
    n_pairs = sum(len(q) for q in data.filter(pl.col("split") == "forget")["train_questions"])
    assert log["forget_size"][0] == n_pairs + leaked.height
    assert (tmp_path / "r1/model/model.safetensors").read_bytes() != (root / "model/model.safetensors").read_bytes()


def _stop_params(judge, stop):
    p = dict(MICRO, judge={"fact": {}, judge: {}})
    p["rule"] = {"rule_npo": dict(MICRO["rule"]["rule_npo"], judge=judge, stop=stop)}
    return validate_params(p)


def test_rule_stops_once_the_training_phrasings_leak_reaches_its_target(base, tmp_path):
    root, data = base
    p = _stop_params("leaks_if_long", {"leak": 1.0})  # any leak@n is <= 1: stop at the first round
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    log = pl.read_parquet(tmp_path / "r1/round.parquet").row(0, named=True)
    assert log["stopped"] and not log["trained"] and log["stop_reason"] == "leak target"
    assert log["new_leaked"] > 0 and log[f"train_leak_at_{p['rule']['rule_npo']['n']}"] > 0  # it did sample
    assert (tmp_path / "r1/model/model.safetensors").read_bytes() == (root / "model/model.safetensors").read_bytes()
    p = _stop_params("leaks_if_long", {"leak": 0.0})  # never reached while something leaks: it trains
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "t1",
              reference_dir=root / "model")
    log = pl.read_parquet(tmp_path / "t1/round.parquet").row(0, named=True)
    assert log["trained"] and log["stop_reason"] is None


def test_the_retain_guard_stops_and_backs_off_to_the_previous_rounds_start(base, tmp_path, monkeypatch):
    import leakk.unlearn.rule as rule

    root, data = base
    measured = iter([0.90, 0.70])  # the base model's retain accuracy, then round 1's model's
    monkeypatch.setattr(rule, "retain_accuracy", lambda *a, **kw: next(measured))
    p = _stop_params("leaks_if_long", {"retain_drop": 0.1})
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    first = pl.read_parquet(tmp_path / "r1/round.parquet").row(0, named=True)
    assert first["trained"] and (first["retain_start"], first["retain_ref"]) == (0.90, 0.90)
    assert not Path(first["start_dir"]).is_absolute()  # the same bytes wherever the run lives
    assert (tmp_path / "r1/model/model.safetensors").read_bytes() != (root / "model/model.safetensors").read_bytes()
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=tmp_path / "r1", out_dir=tmp_path / "r2",
              reference_dir=root / "model")
    second = pl.read_parquet(tmp_path / "r2/round.parquet").row(0, named=True)
    assert second["stopped"] and not second["trained"] and second["stop_reason"] == "retain guard"
    assert (second["retain_start"], second["retain_ref"]) == (0.70, 0.90) and second["new_leaked"] == 0
    # backed off: round 2's model is round 1's start (the base model), not round 1's update
    assert (tmp_path / "r2/model/model.safetensors").read_bytes() == (root / "model/model.safetensors").read_bytes()
    run_round(data, p, name="rule_npo", round_idx=3, prev_dir=tmp_path / "r2", out_dir=tmp_path / "r3")
    third = pl.read_parquet(tmp_path / "r3/round.parquet").row(0, named=True)
    assert third["stopped"] and third["stop_reason"] == "retain guard"  # passed through, the reason kept
    assert (tmp_path / "r3/model/model.safetensors").read_bytes() == (root / "model/model.safetensors").read_bytes()


@pytest.mark.parametrize("stop", [None, {"leak": 0.5}, {"retain_drop": 0.1}])
def test_a_judge_that_fails_on_every_sample_never_reads_as_no_leak(base, tmp_path, stop):
    """No verdict is not "forgotten": the round fails with the judge named (and the retain guard
    too, which would otherwise pass silently) instead of stopping RULE as if nothing leaked."""
    from leakk.core.errors import ArtifactError

    root, data = base
    p = _stop_params("rule_judge_down", stop) if stop else _params("rule_judge_down")
    with pytest.raises(ArtifactError, match=r"rule_npo round 1: .*'rule_judge_down'"):
        run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
                  reference_dir=root / "model")
    assert not (tmp_path / "r1").exists()  # nothing half-written


def test_select_keeps_the_lowest_training_leak_within_the_retain_drop_and_never_trains(base, tmp_path, monkeypatch):
    import leakk.unlearn.rule as rule

    root, data = base
    measured = iter([0.90, 0.70, 0.85])  # the base model's retain accuracy, then rounds 2's and 3's starts
    monkeypatch.setattr(rule, "retain_accuracy", lambda *a, **kw: next(measured))
    p = dict(MICRO, judge={"fact": {}, "leaks_if_long": {}})
    p["rule"] = {"rule_npo": dict(MICRO["rule"]["rule_npo"], judge="leaks_if_long", rounds=3,
                                  select={"retain_drop": 0.1})}
    p = validate_params(p)
    prev = root / "model"
    for r in (1, 2, 3):
        run_round(data, p, name="rule_npo", round_idx=r, prev_dir=prev, out_dir=tmp_path / f"r{r}",
                  reference_dir=root / "model")
        prev = tmp_path / f"r{r}"
    logs = [pl.read_parquet(tmp_path / f"r{r}/round.parquet").row(0, named=True) for r in (1, 2, 3)]
    assert [log["trained"] for log in logs] == [True, True, False]  # the last round only measures
    assert [log["retain_start"] for log in logs] == [0.90, 0.70, 0.85] and logs[2]["retain_ref"] == 0.90
    leak = f"train_leak_at_{p['rule']['rule_npo']['n']}"
    eligible = [(log[leak], log["round"]) for log in logs if log["retain_start"] >= 0.8]  # round 2 is 20 points down
    want = min(eligible)[1]
    assert logs[2]["selected_round"] == want and logs[2]["stop_reason"] == "selected"
    start = {1: root / "model", 3: tmp_path / "r2/model"}[want]  # round r's starting model
    assert (tmp_path / "r3/model/model.safetensors").read_bytes() == (start / "model.safetensors").read_bytes()
    with pytest.raises(ArtifactError, match="selected RULE's final model"):  # rounds grew: round 3 must run again
        run_round(data, p, name="rule_npo", round_idx=4, prev_dir=tmp_path / "r3", out_dir=tmp_path / "r4")
    assert rule._finished(tmp_path / "r3", logs[2]["fingerprint"], selects=True)
    assert not rule._finished(tmp_path / "r3", logs[2]["fingerprint"], selects=False)  # no longer the last
    assert not rule._finished(tmp_path / "r2", logs[1]["fingerprint"], selects=True)  # now the last: must select


def test_select_round_by_hand():
    from leakk.unlearn.rule import select_round

    cfg = {"n": 8, "select": {"retain_drop": 0.03}}

    def row(r, leak, retain):
        return ({"round": r, "train_leak_at_8": leak, "retain_start": retain}, Path(f"m{r}"))

    history = [row(1, 0.5, 0.90), row(2, 0.1, 0.85), row(3, 0.2, 0.88), row(4, 0.2, 0.87), row(5, None, None)]
    assert select_round(history, cfg, ref=0.90, name="x") == (3, Path("m3"))  # 2 is 5 points down; 3 ties 4, earlier
    assert select_round(history, dict(cfg, select={"retain_drop": 0.05}), ref=0.90, name="x") == (2, Path("m2"))
    with pytest.raises(ArtifactError, match=r"rule\.x\.select"):
        select_round([row(5, None, None)], cfg, ref=0.90, name="x")


def test_the_evidence_stop_rule_and_its_params():
    from leakk.core.errors import ParamsError
    from leakk.unlearn.rule import evidence_stop

    cfg = {"n": 8, "stop": {"leak": 0.05, "retain_drop": 0.03}}
    assert evidence_stop({"train_leak_at_8": 0.05, "retain_start": 0.9, "retain_ref": 0.9}, cfg) == "leak target"
    assert evidence_stop({"train_leak_at_8": 0.06, "retain_start": 0.87, "retain_ref": 0.9}, cfg) is None  # 3 pts: allowed
    assert evidence_stop({"train_leak_at_8": 0.0, "retain_start": 0.86, "retain_ref": 0.9}, cfg) == "retain guard"
    assert evidence_stop({"train_leak_at_8": None, "retain_start": None, "retain_ref": 0.9}, cfg) is None
    assert evidence_stop({"train_leak_at_8": 0.0}, {"n": 8}) is None  # no stop: the round budget
    with pytest.raises(ParamsError, match=r"rule\.rule_npo\.select: cannot be combined with rule\.rule_npo\.stop"):
        p = dict(MICRO)
        p["rule"] = {"rule_npo": dict(MICRO["rule"]["rule_npo"], stop={"leak": 0.1}, select={"retain_drop": 0.03})}
        validate_params(p)
    with pytest.raises(ParamsError, match=r"rule\.rule_npo\.select"):
        p["rule"] = {"rule_npo": dict(MICRO["rule"]["rule_npo"], select={})}
        validate_params(p)
    for stop, key in (({}, "stop"), ({"leak": 1.5}, "leak"), ({"retain_drop": -0.1}, "retain_drop"), ({"lek": 0.1}, "stop")):
        with pytest.raises(ParamsError, match=rf"rule\.rule_npo\.{'stop' if key == 'stop' else 'stop.' + key}"):
            _stop_params("never_leaks", stop)

"""Issue 9: training vs held-out phrasings, the greedy stop criterion, RULE's loss options
(span-restricted forget loss, NPO's frozen reference) and RULE's evaluation reusing the main
pipeline's judgments — each against an independent computation."""

from __future__ import annotations

import copy
import math

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import MICRO, register_rule_judge
from leakk.config import validate_params
from leakk.data.synthetic import generate
from leakk.core.errors import ArtifactError, ParamsError
from leakk.models.finetune import corpus_texts, finetune, training_pairs
from leakk.judges.fact import fact_span, normalize_text
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.models.prompting import collate, encode_example
from leakk.sampling.backend import Backend, Completion, SamplingRequest, sample_texts
from leakk.sampling.decoding import GREEDY, Decoding
from leakk.sampling.stage import (ROW_SCHEMA, TRAINING_PHRASINGS, questions_for, sample_phrasings,
                                  shard_questions)
from leakk.unlearn.loop import reference_logprobs, unlearn_loop
from leakk.unlearn.methods import make_method

T = "Question: {question} Answer:"


def fact_in_text(fact: str, text: str) -> bool:
    """The fact judge's verdict on one completion (the match the span finder must agree with)."""
    from leakk.judges import make_judge

    return bool(make_judge("fact").score_batch([text], [""], [fact])[1][0])



@pytest.fixture(scope="module")
def data():
    return generate(8, 3, forget_fraction=0.25, phrasings=4)


# --- phrasings ------------------------------------------------------------------------------

def test_training_phrasings_are_the_trained_ones_never_the_held_out(data):
    q = questions_for(data, ["forget"], TRAINING_PHRASINGS)
    forget = data.filter(pl.col("split") == "forget")
    expected = [(qid, j, p) for qid, ps in forget.select("qid", "train_questions").sort("qid").iter_rows()
                for j, p in enumerate(ps)]
    assert q.select("qid", "phrasing", "prompt_question").rows() == expected
    assert not set(q["prompt_question"]) & set(forget["paraphrased_question"])
    held = questions_for(data, ["forget"], "paraphrased_question")
    assert held["phrasing"].to_list() == [0] * forget.height and held["qid"].is_unique().all()
    # TOFU-style data (no train_questions): the training phrasing is `question`
    tofu = questions_for(data.drop("train_questions"), ["forget"], TRAINING_PHRASINGS)
    assert tofu.select("qid", "prompt_question").rows() == forget.select("qid", "question").sort("qid").rows()


def test_validation_phrasing_never_trained_and_refused_where_empty(data):
    val = generate(8, 3, forget_fraction=0.25, phrasings=4, validation_phrasing=True)
    trained = set(questions_for(val, ["forget", "retain"], TRAINING_PHRASINGS)["prompt_question"])
    asked = questions_for(val, ["forget"], "validation_question")
    assert asked.height == val.filter(pl.col("split") == "forget").height and not set(asked["prompt_question"]) & trained
    with pytest.raises(ArtifactError, match="validation_phrasing: true"):
        questions_for(data, ["forget"], "validation_question")  # built without it: null, never asked as ""


class _TextTokenizer:
    """A stand-in tokenizer whose one "token" is the whole text."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [text]}

    def batch_decode(self, seqs, skip_special_tokens=True):
        return ["".join(s) for s in seqs]


class _FakeBackend(Backend):
    """A backend stand-in recording its calls; text = prompt#sample_idx@seed."""

    def __init__(self, calls):
        self.calls, self.tokenizer = calls, _TextTokenizer()

    def generate(self, qids, prompts, request, **kw):
        self.calls.append((list(qids), request.n, request.seed))
        return [Completion(q, i, [f"{p[0]}#{i}@{request.seed}"], "stop")
                for q, p in zip(qids, prompts) for i in range(request.n)]


def _phrasings(backend, questions, decoding, n, seed, **kw):
    return sample_phrasings(backend, questions, SamplingRequest.build(decoding, n=n, max_new_tokens=4, seed=seed),
                            template="{question}", **kw)


@given(n=st.integers(1, 40), counts=st.lists(st.integers(1, 5), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_sample_phrasings_spreads_n_evenly(n, counts):
    rows = [(f"q{i}", j, f"q{i}p{j}") for i, c in enumerate(counts) for j in range(c)]
    questions = pl.DataFrame(rows, schema=["qid", "phrasing", "prompt_question"], orient="row")
    calls = []
    out = _phrasings(_FakeBackend(calls), questions, Decoding(1.0, 1.0), n=n, seed=10)
    for i, c in enumerate(counts):
        mine = out.filter(pl.col("qid") == f"q{i}")
        assert mine["sample_idx"].to_list() == list(range(n))  # n per qid, numbered 0..n-1
        per = mine.group_by("phrasing").len().sort("phrasing")["len"].to_list()
        assert max(per) - min(per) <= 1 and sum(per) == n  # as even as possible
        assert all(t.startswith(f"q{i}p{j}#") for t, j in mine.select("text", "phrasing").iter_rows())
    # phrasing j draws with seed + j, so phrasings never share random streams
    assert {s - 10 for _, _, s in calls} <= set(range(max(counts)))


def test_one_phrasing_is_exactly_one_backend_call(data):
    questions = questions_for(data, ["forget"], "paraphrased_question")
    calls = []
    out = _phrasings(_FakeBackend(calls), questions, Decoding(1.0, 1.0), n=5, seed=3)
    assert calls == [(questions["qid"].to_list(), 5, 3)]
    direct = pl.DataFrame(sample_texts(_FakeBackend([]), questions["qid"].to_list(),
                                       questions["prompt_question"].to_list(),
                                       SamplingRequest.build(Decoding(1.0, 1.0), n=5, max_new_tokens=4, seed=3),
                                       template="{question}"), schema=ROW_SCHEMA, orient="row")
    assert out.drop("phrasing").sort("qid", "sample_idx").equals(direct.sort("qid", "sample_idx"))


def test_greedy_draws_one_per_phrasing(data):
    questions = questions_for(data, ["forget"], TRAINING_PHRASINGS)
    out = _phrasings(_FakeBackend([]), questions, GREEDY, n=7, seed=0, every_phrasing=True)
    assert out.height == questions.height
    assert out.select("qid", "phrasing").rows() == questions.select("qid", "phrasing").rows()


def test_shards_keep_a_questions_phrasings_together(data):
    questions = questions_for(data, ["forget", "retain"], TRAINING_PHRASINGS)
    shards = [shard_questions(questions, s, 3) for s in range(3)]
    assert sum(s.height for s in shards) == questions.height
    qid_sets = [set(s["qid"]) for s in shards]
    assert not (qid_sets[0] & qid_sets[1]) and not (qid_sets[1] & qid_sets[2])


# --- span-restricted forget loss --------------------------------------------------------------

@given(st.text(alphabet="abc XY-.", max_size=30), st.text(alphabet="abc XY", min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_fact_span_finds_exactly_what_the_fact_judge_finds(text, fact):
    assume(normalize_text(fact))  # the judge has no verdict for an empty fact
    span = fact_span(fact, text)
    assert (span is not None) == fact_in_text(fact, text)
    if span is not None:
        assert fact_in_text(fact, text[span[0]:span[1]])


@pytest.fixture(scope="module")
def tiny(data):
    tok = build_tokenizer(corpus_texts(data, T), 200)
    model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}, seed=0)
    return model, tok


def test_span_labels_cover_the_fact_tokens_only(data, tiny):
    _, tok = tiny
    for q, answer, fact in data.select("question", "answer", "fact").head(12).iter_rows():
        span = fact_span(fact, answer)
        ids, labels = encode_example(q, answer, tok, T, span=span)
        full_ids, full_labels = encode_example(q, answer, tok, T)
        assert ids == full_ids  # same input, only the loss mask differs
        kept = [t for t, lab in zip(ids, labels) if lab != -100]
        assert kept and tok.eos_token_id not in kept
        assert set(np.flatnonzero(np.array(labels) != -100)) <= set(np.flatnonzero(np.array(full_labels) != -100))
        assert fact_in_text(fact, tok.decode(kept))  # the kept tokens spell the fact
    with pytest.raises(ValueError, match="covers no token"):
        encode_example("Q?", "abc", tok, T, span=(10, 12))


# --- NPO's reference ---------------------------------------------------------------------------

def test_npo_loss_uses_the_reference_models_logprobs(data, tiny):
    model, tok = tiny
    other = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}, seed=1)
    forget = training_pairs(data.filter(pl.col("split") == "forget"))[:4]
    examples = [encode_example(q, a, tok, T) for q, a in forget]
    batch = collate(examples, tok.pad_token_id)
    beta = 0.5
    ref = reference_logprobs(other, examples, tok.pad_token_id, "cpu")
    cur = reference_logprobs(model, examples, tok.pad_token_id, "cpu")
    # by hand: −(2/β)·mean log σ(−β(log πθ − log πref))
    manual = -(2 / beta) * torch.nn.functional.logsigmoid(-beta * (cur - ref)).mean().item()
    assert make_method("npo", beta=beta).forget_loss(model, batch, ref).item() == pytest.approx(manual, rel=1e-5)
    # the loop takes its reference from `reference`, not from the starting model: the first
    # logged forget loss is the formula above, not (2/β)·log 2
    m = copy.deepcopy(model)
    for mod in m.modules():  # the loop trains in train mode: no dropout, so the numbers compare
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    log = unlearn_loop(m, tok, make_method("npo", beta=beta), forget, [], template=T, steps=1, lr=1e-9,
                       batch_size=4, seed=0, device="cpu", alpha=0.0, reference=other)
    assert log[0]["forget_loss"] == pytest.approx(manual, rel=1e-4)
    assert log[0]["forget_loss"] != pytest.approx(2 / beta * math.log(2), rel=1e-3)


# --- the greedy stop criterion ----------------------------------------------------------------

def _judge_down(text):
    raise RuntimeError("judge endpoint down")


register_rule_judge("always_leaks", lambda text: True)
register_rule_judge("broken", _judge_down)
register_rule_judge("parity", lambda text: len(text) % 2 == 0)  # leaks on some pairs, not all


@pytest.fixture(scope="module")
def full_model(micro_full):
    """(folder of the MICRO full model, data)."""
    root, data = micro_full
    return root / "model", data


def _stop_params(judge: str, greedy_leak: float, steps: int = 6, every: int = 2) -> dict:
    p = copy.deepcopy(MICRO)
    p["unlearn"] = {"ga": {"method": "ga", "steps": steps, "lr": 1e-4, "batch_size": 8,
                           "stop": {"greedy_leak": greedy_leak, "every": every, "judge": judge,
                                    "max_new_tokens": 12}}}
    p["rule"] = {}
    return validate_params(p)


@pytest.mark.parametrize("judge, greedy_leak, last_step, stopped", [
    ("fact", 1.0, 2, True),          # any model looks forgotten at leak ≤ 1: stops at the first check
    ("always_leaks", 0.5, 6, False),  # never looks forgotten: runs to the cap
    ("broken", 0.99, 6, False),      # a failing judge counts as leaked, never as forgotten
])
def test_stop_criterion(full_model, tmp_path, judge, greedy_leak, last_step, stopped):
    from leakk.unlearn.run import run_unlearning

    root, d = full_model
    p = _stop_params(judge, greedy_leak)
    reason = run_unlearning(d, root, tmp_path / "ga", name="ga", params=p)
    log = pl.read_parquet(tmp_path / "ga/train_log.parquet")
    assert log["step"].max() == last_step
    checks = log.filter(pl.col("greedy_leak").is_not_null())
    assert checks["step"].to_list() == list(range(2, last_step + 1, 2))  # every 2 steps
    assert checks["stop"].to_list()[-1] is stopped
    assert reason.startswith("stopped at step 2" if stopped else "reached the step cap (6)")
    if judge == "broken":
        assert checks["greedy_missing"].to_list()[0] > 0


def test_an_unlearn_runs_own_seed_replaces_the_top_level_one(full_model, tmp_path):
    """`unlearn.<name>.loop_seed` is the loop's seed: the same value as the top-level seed gives the
    same weights bit for bit, another value other weights (the unlearn_seeds preset's premise)."""
    from safetensors.torch import load_file

    from leakk.unlearn.run import run_unlearning

    root, d = full_model
    weights = {}
    for label, seed in (("top", None), ("same", MICRO["seed"]), ("other", MICRO["seed"] + 1)):
        p = copy.deepcopy(MICRO)
        p["unlearn"] = {"ga": {"method": "ga", "steps": 3, "lr": 1e-3, "batch_size": 4,
                               **({} if seed is None else {"loop_seed": seed})}}
        p["rule"] = {}
        run_unlearning(d, root, tmp_path / label, name="ga", params=validate_params(p))
        weights[label] = load_file(tmp_path / label / "model.safetensors")
    same = [torch.equal(weights["top"][k], weights["same"][k]) for k in weights["top"]]
    moved = [not torch.equal(weights["top"][k], weights["other"][k]) for k in weights["top"]]
    assert all(same) and any(moved)


def test_an_unlearn_seed_out_of_range_is_refused_by_name():
    p = copy.deepcopy(MICRO)
    p["unlearn"] = {"ga": {"method": "ga", "steps": 3, "lr": 1e-3, "batch_size": 4, "loop_seed": -1}}
    p["rule"] = {}
    with pytest.raises(ParamsError, match=r"unlearn\.ga\.loop_seed"):
        validate_params(p)


def test_stop_checks_the_training_phrasings_with_the_fact_judge(full_model):
    """The check's greedy leak equals an independent greedy pass over the training phrasings."""
    from leakk.models.modeling import load_model
    from leakk.sampling.hf_backend import sample_model
    from leakk.unlearn.stopping import GreedyStop

    root, d = full_model
    p = _stop_params("fact", 0.5)
    model, tok = load_model(root, "cpu")
    check = GreedyStop(model, tok, d, p, name="ga", stop=p["unlearn"]["ga"]["stop"])
    result = check.greedy_leak()
    rate, missing = result["greedy_leak"], result["greedy_missing"]
    assert result["greedy_judged"] == check.questions.height  # threshold 0.5 above this model's rate: every pair
    fact = dict(d.select("qid", "fact").iter_rows())
    hits = []
    for qid, qs in d.filter(pl.col("split") == "forget").select("qid", "train_questions").iter_rows():
        for q in qs:  # one prompt at a time: no batching shared with the check
            rows = sample_model(model, tok, [qid], [q], GREEDY, n=1, max_new_tokens=12, seed=0,
                                template=p["prompt_template"], progress=False)
            hits.append(fact_in_text(fact[qid], rows[0][2]))
    assert missing == 0 and rate == pytest.approx(np.mean(hits))


def test_a_check_cut_short_makes_the_decision_a_full_check_makes(full_model):
    """The check stops drawing phrasings once the leaks found already exceed the threshold: for
    every threshold its stop decision is the full rate's (rate ≤ threshold), and a check cut short
    judged fewer pairs only where the leaks it had found were over the threshold already."""
    from leakk.models.modeling import load_model
    from leakk.unlearn.stopping import GreedyStop

    root, d = full_model
    p = _stop_params("parity", 1.0)
    model, tok = load_model(root, "cpu")

    def check(threshold: float) -> dict:
        stop = dict(p["unlearn"]["ga"]["stop"], greedy_leak=threshold)
        return GreedyStop(model, tok, d, p, name="ga", stop=stop)(4)

    result = check(1.0)
    total = questions_for(d, ["forget"], TRAINING_PHRASINGS).height
    assert result["greedy_judged"] == total and result["stop"]
    rate = result["greedy_leak"]
    assert 0.2 < rate < 0.8, "the judge must leak on some pairs and not others for the cut to be exercised"
    for threshold in (0.0, rate / 4, rate - 1e-9, rate, rate + 1e-9, 1.0):
        r = check(threshold)
        assert r["stop"] is (rate <= threshold)
        if r["greedy_judged"] < total:  # cut short: the leaks found alone exceed the threshold
            assert r["greedy_leak"] * r["greedy_judged"] / total > threshold and not r["stop"]
        else:
            assert r["greedy_leak"] == rate
    assert check(0.0)["greedy_judged"] < total  # far above the threshold: fewer phrasings drawn


def test_stop_params_are_validated():
    p = copy.deepcopy(MICRO)
    p["unlearn"]["ga"] = dict(p["unlearn"]["ga"], stop={"greedy_leak": 0.1, "judge": "nope"})
    with pytest.raises(ParamsError, match=r"unlearn\.ga\.stop\.judge: unknown judge 'nope'"):
        validate_params(p)
    p["unlearn"]["ga"]["stop"] = {"greedy_leak": 0.1, "judge": {"type": "rougeL", "treshold": 0.5}}
    with pytest.raises(ParamsError, match=r"unlearn\.ga\.stop\.judge\.treshold"):
        validate_params(p)
    p["unlearn"]["ga"]["stop"] = {"greedy_leak": 0.1, "judge": {"type": "rougeL", "threshold": 0.5}}
    validate_params(p)  # its own judge: the judge section need not list it
    p["unlearn"]["ga"]["stop"] = {"greedy_leak": 1.5}
    with pytest.raises(ParamsError, match=r"unlearn\.ga\.stop\.greedy_leak"):
        validate_params(p)
    p["unlearn"]["ga"]["stop"] = {"every": 2}
    with pytest.raises(ParamsError, match="greedy_leak"):
        validate_params(p)


def test_span_needs_a_fact_column():
    p = copy.deepcopy(MICRO)
    p["rule"]["rule_npo"] = dict(p["rule"]["rule_npo"], forget_tokens="span")
    validate_params(p)  # the synthetic benchmark has facts
    p["rule"]["rule_npo"]["forget_tokens"] = "tokens"
    with pytest.raises(ParamsError, match=r"rule\.rule_npo\.forget_tokens"):
        validate_params(p)


# --- RULE's evaluation reuses the main judgments ----------------------------------------------

def test_round_evaluation_reads_the_main_judgments_and_matches_sampling(full_model, tmp_path):
    """Round 0's evaluation from the main pipeline's judgments equals the one that samples the
    same model itself (same backend, seed and judge): the reuse changes nothing but the cost."""
    from leakk.judges import judge_samples
    from leakk.core.layout import judgment_path
    from leakk.unlearn.rule import evaluate_round
    from leakk.sampling.stage import run_sampling

    root, d = full_model
    p = validate_params(copy.deepcopy(MICRO))
    name = next(iter(p["rule"]))
    base = p["rule"][name]["base"]
    model_dir = root
    est = p["estimate"]
    for dec, judge in ((Decoding.from_name(est["headline_decoding"]), est["headline_judge"]), (GREEDY, "fact")):
        samples = run_sampling(str(model_dir), d, dec, model_name=base, params=dict(p["sample"], device="cpu"),
                               template=p["prompt_template"], progress=False)
        out = judgment_path(tmp_path / "judgments", base, dec.name, judge)
        out.parent.mkdir(parents=True, exist_ok=True)
        judge_samples(samples, d, {judge: p["judge"][judge]}, progress=False).write_parquet(out)
    evaluate_round(d, p, name=name, round_idx=0, round_dir=model_dir, out=tmp_path / "reused.parquet",
                   judgments=tmp_path / "judgments")
    evaluate_round(d, p, name=name, round_idx=0, round_dir=model_dir, out=tmp_path / "sampled.parquet")
    reused, sampled = pl.read_parquet(tmp_path / "reused.parquet"), pl.read_parquet(tmp_path / "sampled.parquet")
    assert reused.equals(sampled)
    assert reused["eval_leak_at_1"][0] is not None and reused["retain_accuracy"][0] is not None
    with pytest.raises(ArtifactError):  # a declared input that is missing is an error, not a re-sample
        evaluate_round(d, p, name=name, round_idx=0, round_dir=model_dir, out=tmp_path / "x.parquet",
                       judgments=tmp_path / "nowhere")


def test_augmented_forget_examples_follow_training_pairs(data):
    from leakk.unlearn.rule import LEAKED_SCHEMA, forget_examples

    leaked = pl.DataFrame({"qid": [data.filter(pl.col("split") == "forget")["qid"][0]], "question": ["Q?"],
                           "completion": ["nothing here"], "round": [1]}, schema=LEAKED_SCHEMA)
    cfg = {"forget_set": "augmented", "forget_tokens": "answer"}
    ex = forget_examples(data, leaked, cfg)
    assert ex == training_pairs(data.filter(pl.col("split") == "forget")) + [("Q?", "nothing here")]
    spans = forget_examples(data, leaked, dict(cfg, forget_tokens="span"))
    facts = dict(data.select("answer", "fact").iter_rows())
    for (q, a, span), (q2, a2) in zip(spans[:-1], ex[:-1]):
        assert (q, a) == (q2, a2) and a.strip()[span[0]:span[1]] == facts[a]
    assert spans[-1] == ("Q?", "nothing here", None)  # no fact in it: the whole completion

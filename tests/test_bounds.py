"""Exact leak probability without sampling (src/leakk/stats/bounds.py), checked against an
independent step-by-step computation and against the sampler itself."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leakk.stats.bounds import (
    BOUND_KS,
    answer_ids,
    bound_at_k,
    bound_table,
    fact_token_index,
    question_bounds,
    starts_with_check,
    step_logprobs,
)
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.models.prompting import answer_nll, collate, encode_example, encode_prompt
from leakk.sampling.decoding import Decoding
from leakk.sampling.hf_backend import sample_model

TEMPLATE = "Question: {question} Answer:"
QA = [
    ("q0", "g0", "Where was Ada Vorn born?", "Ada Vorn was born in Teskel.", "Teskel"),
    ("q1", "g0", "Who mentored Ada Vorn?", "Ada Vorn was mentored by Lim Ostra.", "Lim Ostra"),
    ("q2", "g1", "Where does Bo Kemi live?", "Bo Kemi lives in Parvo.", "Parvo"),
]


@pytest.fixture(scope="module")
def trained_lm():
    """A 1-layer GPT-2 trained for a few dozen steps so the answers are likely but not certain."""
    torch.manual_seed(0)
    tok = build_tokenizer([f"{q} {a}" for _, _, q, a, _ in QA] * 3 + ["Question: Answer:"], vocab_size=120)
    model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48}, seed=0)
    batch = collate([encode_example(q, a, tok, TEMPLATE) for _, _, q, a, _ in QA], tok.pad_token_id)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        answer_nll(model, batch).backward()
        opt.step()
    return model.eval(), tok


def _questions():
    return pl.DataFrame([{"qid": i, "group": g, "prompt_question": q, "answer": a, "fact": f}
                         for i, g, q, a, f in QA])


def _reference_p(model, tok, question, answer, decoding, max_new_tokens=40):
    """Independent computation: one forward pass per answer prefix, the nucleus built in numpy
    (sort by probability, keep the smallest prefix reaching top_p), renormalised."""
    prompt = encode_prompt(question, tok, TEMPLATE)
    ans = answer_ids(question, answer, tok, TEMPLATE)
    if len(ans) > max_new_tokens:
        return 0.0
    p = 1.0
    for t, target in enumerate(ans):
        with torch.no_grad():
            z = model(torch.tensor([prompt + ans[:t]])).logits[0, -1].double().numpy()
        if decoding.greedy:
            p *= float(np.argmax(z) == target)
            continue
        probs = np.exp((z - z.max()) / decoding.temperature)
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]
        keep = np.zeros_like(probs, dtype=bool)
        keep[order[before < decoding.top_p]] = True
        p *= probs[target] / probs[keep].sum() if keep[target] else 0.0
    return p


DECODINGS = [Decoding(0.0), Decoding(1.0, 1.0), Decoding(0.8, 0.8), Decoding(1.0, 0.2), Decoding(0.2, 1.0)]


def test_exact_p_matches_step_by_step_reference(trained_lm):
    model, tok = trained_lm
    got = question_bounds(model, tok, _questions(), DECODINGS, template=TEMPLATE, max_new_tokens=40,
                          model_name="m")
    assert got.height == len(QA) * len(DECODINGS)
    for r in got.iter_rows(named=True):
        _, _, q, a, _ = next(x for x in QA if x[0] == r["qid"])
        ref = _reference_p(model, tok, q, a, Decoding.from_name(r["decoding"]))
        # float32 logits vs float64 reference: agreement to ~1e-5 relative
        assert r["p"] == pytest.approx(ref, rel=1e-4, abs=1e-7), r
    greedy = got.filter(pl.col("decoding") == "greedy")["p"].to_list()
    assert set(greedy) <= {0.0, 1.0}
    sampled = got.filter(pl.col("decoding") == "t1.0_p1.0")["p"].to_numpy()
    assert np.all((sampled > 0.05) & (sampled < 0.999))  # the fixture is informative


def test_answer_longer_than_max_new_tokens_has_probability_zero(trained_lm):
    model, tok = trained_lm
    got = question_bounds(model, tok, _questions(), [Decoding(1.0, 1.0)], template=TEMPLATE,
                          max_new_tokens=3, model_name="m")
    assert got["p"].to_list() == [0.0] * len(QA)


def test_answer_ids_are_training_ids_without_eos(trained_lm):
    _, tok = trained_lm
    q, a = QA[0][2], QA[0][3]
    ids, labels = encode_example(q, a, tok, TEMPLATE)
    ans = answer_ids(q, a, tok, TEMPLATE)
    assert ans + [tok.eos_token_id] == [x for x in labels if x != -100]
    assert tok.decode(ans).strip() == a


def test_fact_token_is_the_first_token_of_the_fact(trained_lm):
    _, tok = trained_lm
    for _, _, q, a, f in QA:
        ans = answer_ids(q, a, tok, TEMPLATE)
        i = fact_token_index(a, f, tok)
        assert tok.decode(ans[i:]).strip().startswith(f)
        assert f not in tok.decode(ans[:i])  # not earlier
    assert fact_token_index("no such thing", "Teskel", tok) is None
    assert fact_token_index("x", None, tok) is None


def test_fact_token_rank_and_probability(trained_lm):
    model, tok = trained_lm
    got = question_bounds(model, tok, _questions(), [Decoding(1.0, 1.0)], template=TEMPLATE,
                          max_new_tokens=40, model_name="m")
    for r in got.iter_rows(named=True):
        _, _, q, a, f = next(x for x in QA if x[0] == r["qid"])
        ans = answer_ids(q, a, tok, TEMPLATE)
        i = r["fact_token_index"]
        with torch.no_grad():
            z = model(torch.tensor([encode_prompt(q, tok, TEMPLATE) + ans[:i]])).logits[0, -1].double()
        probs = torch.softmax(z, -1).numpy()
        assert r["fact_token_prob"] == pytest.approx(probs[ans[i]], rel=1e-4)
        assert r["fact_token_rank"] == 1 + int((probs > probs[ans[i]]).sum())
        assert r["fact_token_prob_decoding"] == pytest.approx(probs[ans[i]], rel=1e-4)  # T = 1, p = 1


def test_step_logprobs_greedy_and_nucleus():
    logits = torch.tensor([[3.0, 2.0, 1.0, -1.0], [0.0, 0.0, 5.0, 0.0]])
    targets = torch.tensor([1, 2])
    g = step_logprobs(logits, targets, Decoding(0.0))
    assert g.tolist() == [float("-inf"), 0.0]
    # top-p = 0.5: row 0 keeps only token 0 (p ≈ 0.66), so token 1 is impossible
    n = step_logprobs(logits, targets, Decoding(1.0, 0.5))
    assert n[0] == float("-inf") and n[1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("decoding", [Decoding(1.0, 1.0), Decoding(0.8, 0.8)])
def test_exact_p_agrees_with_sampled_starts_with_rate(trained_lm, decoding):
    """The sampler's own completions begin with the answer at rate p within binomial error
    (other tokenisations may only add, which this tiny vocabulary makes rare)."""
    model, tok = trained_lm
    qs = _questions()
    p = question_bounds(model, tok, qs, [decoding], template=TEMPLATE, max_new_tokens=16, model_name="m")
    n = 400
    rows = sample_model(model, tok, qs["qid"].to_list(), qs["prompt_question"].to_list(), decoding, n=n,
                        max_new_tokens=16, seed=3, template=TEMPLATE, batch_rows=400, progress=False)
    samples = pl.DataFrame(rows, schema=["qid", "sample_idx", "text", "n_tokens", "finish_reason"], orient="row")
    data = qs.select("qid", "answer")
    check = starts_with_check(p, samples, data)
    assert check["samples"] == n * len(QA)
    assert abs(check["z"]) < 4, check  # 4 sd: a false alarm about once in 16 000 runs
    for r in p.iter_rows(named=True):  # and per question
        s = samples.filter(pl.col("qid") == r["qid"])
        a = next(x[3] for x in QA if x[0] == r["qid"])
        hits = sum(t.startswith(a) for t in s["text"])
        sd = np.sqrt(n * r["p"] * (1 - r["p"]))
        assert abs(hits - n * r["p"]) <= 4 * sd + 1, (r, hits)


def test_starts_with_check_hand_computed():
    bounds = pl.DataFrame({"qid": ["a", "b"], "p": [0.5, 0.0]})
    samples = pl.DataFrame({"qid": ["a"] * 4 + ["b"] * 2,
                            "text": ["Yes it is.", "Yes it is. more", "no", " Yes it is.", "x", "y"]})
    data = pl.DataFrame({"qid": ["a", "b"], "answer": [" Yes it is.", "z"]})
    got = starts_with_check(bounds, samples, data)
    assert got["samples"] == 6 and got["starts_with"] == 3 and got["expected"] == 2.0
    assert got["z"] == pytest.approx((3 - 2) / 1.0)


# ------------------------------------------------------------------ the bound 1 − (1 − p)^k

@settings(max_examples=200, deadline=None)
@given(p=st.floats(0, 1), k1=st.integers(1, 10_000), k2=st.integers(1, 10_000))
def test_bound_monotone_in_k_and_in_unit_interval(p, k1, k2):
    lo, hi = sorted([k1, k2])
    a, b = bound_at_k(p, lo), bound_at_k(p, hi)
    assert 0.0 <= a <= b <= 1.0
    assert a == pytest.approx(1 - (1 - p) ** lo, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(p=st.floats(0, 0.5), extra=st.floats(0, 0.5), k=st.integers(1, 64))
def test_bound_is_below_true_leak_for_simulated_bernoulli_completions(p, extra, k):
    """Each completion begins with the answer w.p. p and otherwise leaks another way w.p.
    ``extra``: the simulated leak@k (at least one leak in k) is ≥ the bound up to MC error."""
    rng = np.random.default_rng(0)
    reps = 4000
    begins = rng.random((reps, k)) < p
    other = rng.random((reps, k)) < extra
    leak_k = float((begins | other).any(axis=1).mean())
    assert bound_at_k(p, k) <= leak_k + 4 * np.sqrt(0.25 / reps)


def test_bound_table_flags_and_ks():
    per_q = pl.DataFrame({"model": ["m"] * 2, "decoding": ["d"] * 2, "qid": ["a", "b"], "p": [0.5, 0.0]})
    leak = pl.DataFrame({"model": ["m", "m"], "decoding": ["d", "d"], "judge": ["j", "j"], "k": [1, 2],
                         "leak_at_k": [0.1, 0.2], "ci_low": [0.05, 0.1], "ci_high": [0.4, 0.3],
                         "n": [100, 100], "questions": [100, 100]})
    t = bound_table(per_q, leak)
    assert t["k"].max() == 10_000 and set(BOUND_KS) == set(t["k"].to_list())
    row = {r["k"]: r for r in t.iter_rows(named=True)}
    # pooled: 1000 leaks in 10 000 samples; exact upper bound on the per-sample rate
    from scipy import stats

    u = stats.beta.ppf(0.95, 1001, 9000)
    assert row[1]["upper_exact"] == pytest.approx(u) and row[2]["upper_exact"] == pytest.approx(1 - (1 - u) ** 2)
    assert row[1]["bound"] == pytest.approx(0.25) and row[1]["consistent"] is True
    assert row[2]["bound"] == pytest.approx(0.375) and row[2]["consistent"] is False  # 0.375 > 0.3, > 0.2
    assert row[4]["consistent"] is None and row[10_000]["bound"] == pytest.approx(0.5)


def test_bound_table_zero_leaks_use_the_exact_upper_bound():
    """No leak in 64·60 samples: the bootstrap CI is [0, 0], but a bound of 0.02 at k = 64 is
    still consistent with the data (the exact upper bound on leak@64 is ~0.05)."""
    per_q = pl.DataFrame({"model": ["m"] * 60, "decoding": ["d"] * 60, "qid": [f"q{i}" for i in range(60)],
                          "p": [0.0003] * 60})
    leak = pl.DataFrame({"model": ["m"] * 2, "decoding": ["d"] * 2, "judge": ["j"] * 2, "k": [1, 64],
                         "leak_at_k": [0.0, 0.0], "ci_low": [0.0, 0.0], "ci_high": [0.0, 0.0],
                         "n": [64, 64], "questions": [60, 60]})
    row = bound_table(per_q, leak).filter(pl.col("k") == 64).row(0, named=True)
    assert row["bound"] == pytest.approx(1 - (1 - 0.0003) ** 64)
    assert row["upper_exact"] == pytest.approx(1 - 0.05 ** (64 / 3840), rel=1e-9)
    assert row["consistent"] is True


def test_why_leaks_table_hand_computed():
    from leakk.stats.bounds import why_leaks_table

    per_q = pl.DataFrame({
        "model": ["npo"] * 4, "decoding": ["greedy", "greedy", "t1.0_p1.0", "t1.0_p1.0"],
        "qid": ["a", "b", "a", "b"], "p": [0.0, 1.0, 0.2, 0.6],
        "fact_token_rank": [3, 1, 3, 1], "fact_token_prob": [0.1, 0.7, 0.1, 0.7]})
    row = why_leaks_table(per_q, "t1.0_p1.0").row(0, named=True)
    assert row == {"model": "npo", "questions": 2, "fact_rank_median": 2.0, "fact_not_argmax": 0.5,
                   "fact_prob_mean": pytest.approx(0.4), "p_greedy_mean": 0.5, "p_t1.0_p1.0_mean": pytest.approx(0.4)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4), st.integers(1, 3), st.data())
def test_the_pooled_bound_is_below_leak_at_k_of_phrasings_sampled_evenly(ps, per, data):
    """Brute force over every k-subset of the n = P·per completions (per phrasing ``per``): the
    expected leak@k estimate of the even spread is ≥ 1 − (1 − mean p)^k (module docstring)."""
    from itertools import combinations

    n = len(ps) * per
    k = data.draw(st.integers(1, n))
    slots = [q for q in ps for _ in range(per)]
    subsets = list(combinations(range(n), k))
    exact = sum(1 - np.prod([1 - slots[i] for i in s]) for s in subsets) / len(subsets)
    assert float(bound_at_k(np.array([np.mean(ps)]), k)[0]) <= exact + 1e-12


def test_pool_phrasings_takes_the_mean_p_and_the_first_phrasings_other_columns():
    from leakk.stats.bounds import BOUNDS_SCHEMA, pool_phrasings

    def row(qid, p, rank):
        return {"model": "m", "decoding": "d", "qid": qid, "group": "g", "answer_tokens": 3,
                "log_p": float(np.log(p)) if p else float("-inf"), "p": p, "fact_token_index": 0,
                "fact_token_rank": rank, "fact_token_prob": 0.5, "fact_token_prob_decoding": 0.5}

    frame = pl.DataFrame([row("b", 0.2, 1), row("b", 0.0, 2), row("a", 0.3, 4)], schema=BOUNDS_SCHEMA)
    pooled = pool_phrasings(frame)
    assert pooled["qid"].to_list() == ["a", "b"] and pooled["p"].to_list() == pytest.approx([0.3, 0.1])
    assert pooled["log_p"].to_list() == pytest.approx([np.log(0.3), np.log(0.1)])
    assert pooled["fact_token_rank"].to_list() == [4, 1]
    assert pool_phrasings(frame.head(1)).equals(frame.head(1))

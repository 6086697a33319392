"""Unlearning losses against independent computations."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from leakk.data.synthetic import generate
from leakk.core.errors import ParamsError
from leakk.models.finetune import corpus_texts, training_pairs
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.models.prompting import answer_nll, collate, encode_example
from leakk.unlearn.loop import reference_logprobs, unlearn_loop
from leakk.unlearn.methods import METHODS, make_method

T = "Question: {question} Answer:"


@pytest.fixture(scope="module")
def setup():
    data = generate(8, 3, forget_fraction=0.25, phrasings=3)
    tok = build_tokenizer(corpus_texts(data, T), 200)
    model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48}, seed=0)
    forget = training_pairs(data.filter(pl.col("split") == "forget"))
    retain = training_pairs(data.filter(pl.col("split") == "retain"))
    return model, tok, forget, retain


def _batch(tok, pairs):
    return collate([encode_example(q, a, tok, T) for q, a in pairs], tok.pad_token_id)


def test_registry():
    assert {"ga", "graddiff", "npo"} <= set(METHODS)
    with pytest.raises(ParamsError, match="unknown method"):
        make_method("sgd")


def test_npo_loss_is_2_over_beta_log2_at_reference(setup):
    model, tok, forget, _ = setup
    batch = _batch(tok, forget[:6])
    for beta in (0.1, 0.5, 2.0):
        ref = reference_logprobs(model, [encode_example(q, a, tok, T) for q, a in forget[:6]], tok.pad_token_id, "cpu")
        loss = make_method("npo", beta=beta).forget_loss(model, batch, ref)
        assert loss.item() == pytest.approx(2 / beta * math.log(2), rel=1e-5)


def test_answer_logprob_matches_manual_sum(setup):
    model, tok, forget, _ = setup
    ids, labels = encode_example(*forget[0], tok, T)
    ref = reference_logprobs(model, [(ids, labels)], tok.pad_token_id, "cpu")[0].item()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    manual = sum(logp[i - 1, ids[i]].item() for i in range(len(ids)) if labels[i] != -100)
    assert ref == pytest.approx(manual, abs=1e-4)
    assert answer_nll(model, _batch(tok, forget[:1])).item() == pytest.approx(
        -manual / sum(lab != -100 for lab in labels), rel=1e-4)


def test_ga_raises_forget_nll(setup):
    model, tok, forget, retain = setup
    model = type(model)(model.config)
    model.load_state_dict(setup[0].state_dict())
    batch = _batch(tok, forget)
    with torch.no_grad():
        before = answer_nll(model, batch).item()
    log = unlearn_loop(model, tok, make_method("ga"), forget, retain, template=T, steps=5, lr=1e-3,
                       batch_size=4, seed=0, device="cpu")
    with torch.no_grad():
        after = answer_nll(model, batch).item()
    assert after > before + 0.1
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert all(math.isnan(r["retain_loss"]) for r in log)  # GA has no retain term


def test_graddiff_logs_retain_term(setup):
    model, tok, forget, retain = setup
    model = type(model)(model.config)
    model.load_state_dict(setup[0].state_dict())
    log = unlearn_loop(model, tok, make_method("graddiff"), forget, retain, template=T, steps=2, lr=1e-4,
                       batch_size=4, seed=0, device="cpu", alpha=0.5)
    assert all(r["loss"] == pytest.approx(r["forget_loss"] + 0.5 * r["retain_loss"], rel=1e-5) for r in log)

"""Retain terms (leakk.unlearn.retain): KL to the frozen starting model against a brute-force
sum over positions and vocabulary, NLL as before, the key validated in params, and a run with
``retain_loss: kl`` through the shared loop (its retain term starts at 0 and the frozen copy
never moves)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import MICRO
from leakk.config import validate_params
from leakk.core.errors import ParamsError
from leakk.models.prompting import answer_nll
from leakk.unlearn.loop import unlearn_loop
from leakk.unlearn.methods import make_method
from leakk.unlearn.retain import RETAIN_LOSSES, make_retain_loss
from test_methods_new import T, _answer_tokens, _batch, tiny  # noqa: F401  (the fixture)


def _perturbed(model, scale=0.05, seed=1):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return other


def test_kl_is_the_mean_over_answer_positions_of_the_full_vocabulary_sum(tiny):  # noqa: F811
    _, tok, model, _, retain = tiny
    batch = _batch(tok, retain[:4])
    current = _perturbed(model)
    ref_rows, cur_rows = _answer_tokens(model, batch), _answer_tokens(current, batch)
    terms = []
    for ref_ex, cur_ex in zip(ref_rows, cur_rows):
        for (ref_lp, _), (cur_lp, _) in zip(ref_ex, cur_ex):
            terms.append(sum(math.exp(float(ref_lp[v])) * float(ref_lp[v] - cur_lp[v]) for v in range(ref_lp.shape[0])))
    expected = sum(terms) / len(terms)
    with torch.no_grad():
        got = float(make_retain_loss("kl")(current, batch, model))
    assert expected > 1e-4 and got == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():  # KL of a model to itself is 0, and the NLL term is answer_nll
        assert float(make_retain_loss("kl")(model, batch, model)) == pytest.approx(0.0, abs=1e-6)
        assert float(make_retain_loss("nll")(current, batch)) == float(answer_nll(current, batch))
    with pytest.raises(ValueError, match="needs the frozen reference"):
        make_retain_loss("kl")(current, batch, None)


def test_retain_loss_is_validated_by_name():
    p = copy.deepcopy(MICRO)
    p["unlearn"]["npo"]["retain_loss"] = "kl"
    assert validate_params(p)["unlearn"]["npo"]["retain_loss"] == "kl"
    assert "retain_loss" not in validate_params(MICRO)["unlearn"]["npo"]  # nll, and the params unchanged
    p["unlearn"]["npo"]["retain_loss"] = "kll"
    with pytest.raises(ParamsError, match=r"unlearn\.npo\.retain_loss: unknown retain loss 'kll' "
                                          r"\(known: \[.activation., .kl., .nll.\]\)"):
        validate_params(p)
    assert set(RETAIN_LOSSES.names()) == {"activation", "kl", "nll"}


def test_a_kl_retain_run_trains_through_the_loop_against_a_frozen_copy(tiny):  # noqa: F811
    _, tok, model, forget, retain = tiny
    start = copy.deepcopy(model)
    trained = copy.deepcopy(model).train()
    log = unlearn_loop(trained, tok, make_method("graddiff"), forget, retain, template=T, steps=3, lr=1e-3,
                       batch_size=4, seed=0, device="cpu", retain_loss="kl", alpha=1.0)
    assert len(log) == 3 and all(math.isfinite(r["retain_loss"]) for r in log)
    assert abs(log[0]["retain_loss"]) < 1e-3  # the frozen copy is the model at step 0 (no dropout here)
    assert log[-1]["retain_loss"] > log[0]["retain_loss"]  # ascent on the forget set moves retain answers too
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), start.parameters()))
    # the same run with the default retain term is the NLL one
    nll = unlearn_loop(copy.deepcopy(model).train(), tok, make_method("graddiff"), forget, retain, template=T,
                       steps=1, lr=1e-3, batch_size=4, seed=0, device="cpu", alpha=1.0)
    assert nll[0]["retain_loss"] > 1.0

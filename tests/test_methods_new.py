"""The unlearning methods of their own modules (SimNPO, WGA, NPO + entropy, IdkNLL): each loss
equals its published formula computed by hand (explicit loops over examples and tokens on a
tiny GPT-2's logits), each validates its own keys, and each trains through the shared loop."""

from __future__ import annotations

import copy
import math

import polars as pl
import pytest
import torch

from conftest import MICRO
from leakk.config import validate_params
from leakk.core.errors import ParamsError
from leakk.data.synthetic import generate
from leakk.models.finetune import corpus_texts, training_pairs
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.models.prompting import collate, encode_example
from leakk.unlearn.idk import REFUSALS, refusal_for
from leakk.unlearn.loop import reference_logprobs, unlearn_loop
from leakk.unlearn.methods import METHODS, make_method

T = "Question: {question} Answer:"
NEW = ("simnpo", "wga", "npo_entropy", "idknll", "idkdpo")


@pytest.fixture(scope="module")
def tiny():
    data = generate(8, 3, forget_fraction=0.25, phrasings=3)
    tok = build_tokenizer(corpus_texts(data, T), 200)
    model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}, seed=0).eval()
    forget = training_pairs(data.filter(pl.col("split") == "forget"))
    retain = training_pairs(data.filter(pl.col("split") == "retain"))
    return data, tok, model, forget, retain


def _batch(tok, pairs):
    return collate([encode_example(q, a, tok, T) for q, a, *_ in pairs], tok.pad_token_id)


def _answer_tokens(model, batch):
    """Per example: [(log-softmax row, label)] at each answer position, by explicit loops."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    out = []
    for i in range(batch["input_ids"].shape[0]):
        rows = []
        for t in range(1, batch["input_ids"].shape[1]):
            label = int(batch["labels"][i, t])
            if label != -100:
                rows.append((torch.log_softmax(logits[i, t - 1], -1), label))
        out.append(rows)
    return out


def _loss(method, model, batch, ref=None):
    with torch.no_grad():
        return float(method.forget_loss(model, batch, ref))


def test_simnpo_is_the_length_normalised_reference_free_npo(tiny):
    _, tok, model, forget, _ = tiny
    batch = _batch(tok, forget[:5])
    beta, delta = 2.0, 0.5
    want = 0.0
    for rows in _answer_tokens(model, batch):
        logp = sum(float(lp[y]) for lp, y in rows) / len(rows)
        want += -(2 / beta) * math.log(1 / (1 + math.exp(beta * logp + delta)))  # log σ(−β·logp/|y| − δ)
    want /= 5
    assert _loss(make_method("simnpo", beta=beta, delta=delta), model, batch) == pytest.approx(want, rel=1e-5)
    m = make_method("simnpo")  # the schema's defaults
    assert (m.beta, m.delta, m.averages, m.needs_reference) == (4.5, 0.0, "examples", False)


def test_wga_weights_each_tokens_ascent_by_its_probability(tiny):
    _, tok, model, forget, _ = tiny
    batch = _batch(tok, forget[:5])
    for beta in (0.0, 1.0, 2.5):
        terms = [math.exp(float(lp[y])) ** beta * float(lp[y]) for rows in _answer_tokens(model, batch)
                 for lp, y in rows]
        assert _loss(make_method("wga", beta=beta), model, batch) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    ga = make_method("ga")  # β = 0 is plain gradient ascent
    assert _loss(make_method("wga", beta=0.0), model, batch) == pytest.approx(_loss(ga, model, batch), rel=1e-5)


def test_wga_weights_carry_no_gradient(tiny):
    """∂L/∂θ = mean w_t ∂log p_t/∂θ with w_t fixed: the gradient equals GA's on weighted tokens."""
    _, tok, model, forget, _ = tiny
    m = copy.deepcopy(model)
    batch = _batch(tok, forget[:2])
    loss = make_method("wga", beta=1.0).forget_loss(m, batch, None)
    loss.backward()
    got = m.transformer.wte.weight.grad.clone()
    m.zero_grad()
    rows = _answer_tokens(m, batch)
    weights = [math.exp(float(lp[y])) for r in rows for lp, y in r]
    logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lps = [torch.log_softmax(logits[i, t - 1], -1)[int(batch["labels"][i, t])]
           for i in range(batch["input_ids"].shape[0]) for t in range(1, batch["input_ids"].shape[1])
           if int(batch["labels"][i, t]) != -100]
    (sum(w * lp for w, lp in zip(weights, lps)) / len(lps)).backward()
    torch.testing.assert_close(got, m.transformer.wte.weight.grad, rtol=1e-4, atol=1e-7)


def test_npo_entropy_adds_the_mean_token_entropy_to_npo(tiny):
    _, tok, model, forget, _ = tiny
    batch = _batch(tok, forget[:5])
    ref = reference_logprobs(model, [encode_example(q, a, tok, T) for q, a in forget[:5]], tok.pad_token_id, "cpu")
    ref = ref - 0.3  # a reference that differs from the model: NPO's term is not its constant
    beta, weight = 0.1, 0.7
    npo = make_method("npo", beta=beta)
    entropies = []
    for rows in _answer_tokens(model, batch):
        entropies.append(sum(-float((lp.exp() * lp).sum()) for lp, _ in rows) / len(rows))
    want = _loss(npo, model, batch, ref) + weight * sum(entropies) / len(entropies)
    got = _loss(make_method("npo_entropy", beta=beta, weight=weight), model, batch, ref)
    assert got == pytest.approx(want, rel=1e-5)
    assert make_method("npo_entropy").needs_reference and make_method("npo_entropy", weight=0.0).weight == 0.0


def test_idknll_trains_toward_a_fixed_refusal(tiny):
    _, tok, model, forget, _ = tiny
    m = make_method("idknll")
    targets = m.forget_targets([(q, a, (0, 3)) for q, a in forget[:6]])
    assert [q for q, _ in targets] == [q for q, _ in forget[:6]]
    assert all(r in REFUSALS for _, r in targets) and targets == m.forget_targets(forget[:6])  # same every run
    assert refusal_for(forget[0][0]) == refusal_for(forget[0][0])
    assert len({refusal_for(q) for q, _ in forget}) > 1  # spread over the set, not one string
    batch = _batch(tok, targets)
    rows = _answer_tokens(model, batch)
    nll = -sum(float(lp[y]) for r in rows for lp, y in r) / sum(len(r) for r in rows)
    assert _loss(m, model, batch) == pytest.approx(nll, rel=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_each_method_trains_through_the_shared_loop(tiny, name):
    _, tok, model, forget, retain = tiny
    log = unlearn_loop(copy.deepcopy(model).train(), tok, make_method(name), forget, retain, template=T, steps=3,
                       lr=1e-3, batch_size=4, seed=0, device="cpu", alpha=1.0)
    assert len(log) == 3 and all(math.isfinite(r["loss"]) and math.isfinite(r["retain_loss"]) for r in log)


@pytest.mark.parametrize("name, bad, key", [("simnpo", {"beta": 0}, "beta"), ("simnpo", {"delta": -1}, "delta"),
                                            ("wga", {"beta": "x"}, "beta"), ("npo_entropy", {"weight": -0.5}, "weight"),
                                            ("idknll", {"beta": 1.0}, "beta")])
def test_a_methods_own_keys_are_validated_in_params(name, bad, key):
    p = copy.deepcopy(MICRO)
    p["unlearn"]["ga"] = {"method": name, "steps": 2, "lr": 1e-4, "batch_size": 8, **bad}
    with pytest.raises(ParamsError, match=rf"unlearn\.ga\.{key}"):
        validate_params(p, host=False)
    p["unlearn"]["ga"] = {"method": name, "steps": 2, "lr": 1e-4, "batch_size": 8}
    filled = validate_params(p, host=False)["unlearn"]["ga"]
    assert set(METHODS.get(name).params_schema["properties"]) <= set(filled)  # defaults filled in


def test_every_new_method_is_registered_without_importing_torch_first():
    import subprocess
    import sys

    code = ("import sys; from leakk.unlearn.methods import METHODS; names = METHODS.names(); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(' '.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {*NEW, "rmu"} <= set(out)

"""RMU and IdkDPO against their published formulas, computed independently: RMU's block output
from a forward hook on the block module (not ``output_hidden_states``) and explicit loops over
positions; IdkDPO's log-probabilities by explicit loops over answer tokens. Then what each
changes in the shared loop: RMU trains only its layers' MLPs, IdkDPO moves preference toward
the refusal."""

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
from leakk.unlearn.idk import refusal_for
from leakk.unlearn.loop import unlearn_loop
from leakk.unlearn.methods import make_method
from leakk.unlearn.retain import make_retain_loss

T = "Question: {question} Answer:"


@pytest.fixture(scope="module")
def tiny():
    data = generate(8, 3, forget_fraction=0.25, phrasings=3)
    tok = build_tokenizer(corpus_texts(data, T), 200)
    arch = {"n_layer": 3, "n_embd": 32, "n_head": 2, "n_positions": 64,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    model = build_gpt2(tok, arch, seed=0).eval()
    forget = training_pairs(data.filter(pl.col("split") == "forget"))
    retain = training_pairs(data.filter(pl.col("split") == "retain"))
    return data, tok, model, forget, retain


def _batch(tok, pairs):
    return collate([encode_example(q, a, tok, T) for q, a, *_ in pairs], tok.pad_token_id)


def _block_output_by_hook(model, batch, layer):
    """The output of ``model.transformer.h[layer]``, caught by a forward hook."""
    caught = {}
    handle = model.transformer.h[layer].register_forward_hook(lambda mod, inp, out: caught.update(h=out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    return caught["h"].double()


def _rmu_by_hand(states, target, batch):
    """mean_i [ mean over positions t with labels[t+1] ≠ −100 of mean_d (h[i,t,d] − target[i,t,d])² ]."""
    per_example = []
    for i in range(states.shape[0]):
        terms = [float(((states[i, t] - target[i, t]) ** 2).mean()) for t in range(states.shape[1] - 1)
                 if int(batch["labels"][i, t + 1]) != -100]
        per_example.append(sum(terms) / len(terms))
    return sum(per_example) / len(per_example)


def test_rmu_forget_loss_is_the_distance_to_the_scaled_random_direction(tiny):
    _, tok, model, forget, _ = tiny
    batch = _batch(tok, forget[:5])
    m = make_method("rmu", layer=1, steering_coef=7.0, seed=3)
    states = _block_output_by_hook(model, batch, 1)
    u = torch.rand(states.shape[-1], generator=torch.Generator().manual_seed(3)).double()
    control = (7.0 * u / u.norm()).expand_as(states)
    with torch.no_grad():
        got = float(m.forget_loss(model, batch, None))
    assert got == pytest.approx(_rmu_by_hand(states, control, batch), rel=1e-5)
    assert float(m.control(32, "cpu").norm()) == pytest.approx(7.0, rel=1e-6)  # ‖c·u‖ = c
    assert torch.equal(m.control(32, "cpu"), make_method("rmu", steering_coef=7.0, seed=3).control(32, "cpu"))
    assert not torch.equal(m.control(32, "cpu"), make_method("rmu", steering_coef=7.0, seed=4).control(32, "cpu"))


def test_rmu_retain_term_is_the_distance_to_the_frozen_models_activations(tiny):
    _, tok, model, _, retain = tiny
    batch = _batch(tok, retain[:6])
    m = make_method("rmu", layer=1)
    term = make_retain_loss(None, m)  # rmu's default: activation
    assert term.name == "activation" and term.needs_reference and term.averages == "examples"
    with torch.no_grad():
        assert float(term(model, batch, copy.deepcopy(model))) == 0.0
        moved = copy.deepcopy(model)
        for p in moved.transformer.h[0].mlp.parameters():
            p.add_(0.05)
        want = _rmu_by_hand(_block_output_by_hook(moved, batch, 1), _block_output_by_hook(model, batch, 1), batch)
        assert float(term(moved, batch, model)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="frozen reference"):
        term(model, batch, None)


def test_rmu_trains_only_the_mlps_of_its_blocks_and_restores_requires_grad(tiny):
    _, tok, model, forget, retain = tiny
    trained = copy.deepcopy(model).train()
    log = unlearn_loop(trained, tok, make_method("rmu", layer=1, trained_layers=1, steering_coef=20.0), forget,
                       retain, template=T, steps=4, lr=1e-2, batch_size=4, seed=0, device="cpu", alpha=1.0)
    changed = {n for (n, a), b in zip(trained.named_parameters(), model.parameters()) if not torch.equal(a, b)}
    assert changed == {n for n, _ in model.named_parameters() if n.startswith("transformer.h.1.mlp.")}
    assert all(p.requires_grad for p in trained.parameters())
    assert log[0]["retain_loss"] == pytest.approx(0.0, abs=1e-12)  # the frozen copy is the start
    assert log[-1]["forget_loss"] < log[0]["forget_loss"]  # steered toward c·u
    two = make_method("rmu", layer=2, trained_layers=2)
    assert [n for n, _ in model.named_parameters() if two.trains(n)] == [
        n for n, _ in model.named_parameters() if n.startswith(("transformer.h.1.mlp.", "transformer.h.2.mlp."))]


def test_rmu_refuses_a_layer_it_cannot_steer_and_lora(tiny):
    _, tok, model, forget, retain = tiny
    batch = _batch(tok, forget[:2])
    with pytest.raises(ParamsError, match=r"layer: 2 is not a steerable block .*0 … 1"):
        make_method("rmu", layer=2).forget_loss(model, batch, None)  # block 2's output is ln_f-normalised
    with pytest.raises(ParamsError, match="trains no parameter"):
        unlearn_loop(copy.deepcopy(model), tok, make_method("rmu", layer=40), forget, retain, template=T, steps=1,
                     lr=1e-3, batch_size=4, seed=0, device="cpu")
    pytest.importorskip("peft")
    with pytest.raises(ParamsError, match=r"training\.lora: method 'rmu'"):
        unlearn_loop(copy.deepcopy(model), tok, make_method("rmu", layer=1), forget, retain, template=T, steps=1,
                     lr=1e-3, batch_size=4, seed=0, device="cpu", training={"lora": {"r": 2}})


def _logprob_by_hand(model, tok, pairs):
    batch = _batch(tok, pairs)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    out = []
    for i in range(len(pairs)):
        out.append(sum(float(torch.log_softmax(logits[i, t - 1], -1)[int(batch["labels"][i, t])])
                       for t in range(1, batch["input_ids"].shape[1]) if int(batch["labels"][i, t]) != -100))
    return out


def test_idkdpo_is_dpo_with_the_refusal_preferred_over_the_answer(tiny):
    _, tok, model, forget, _ = tiny
    pairs = forget[:5]
    m = make_method("idkdpo", beta=0.5)
    chosen_pairs, rejected_pairs = m.forget_targets(pairs), m.rejected_targets(pairs)
    assert chosen_pairs == [(q, refusal_for(q)) for q, _ in pairs] and rejected_pairs == pairs
    ref_model = copy.deepcopy(model)
    with torch.no_grad():  # a different current model, so the log-ratios are not zero
        for p in model.transformer.h[0].parameters():
            p.add_(0.02)
    w, l = _logprob_by_hand(model, tok, chosen_pairs), _logprob_by_hand(model, tok, rejected_pairs)
    w0, l0 = _logprob_by_hand(ref_model, tok, chosen_pairs), _logprob_by_hand(ref_model, tok, rejected_pairs)
    want = sum(-(2 / 0.5) * math.log(1 / (1 + math.exp(-0.5 * ((a - a0) - (b - b0)))))
               for a, a0, b, b0 in zip(w, w0, l, l0)) / 5
    with torch.no_grad():
        got = float(m.forget_loss(model, _batch(tok, chosen_pairs), torch.tensor(w0),
                                  rejected=(_batch(tok, rejected_pairs), torch.tensor(l0))))
    assert got == pytest.approx(want, rel=1e-5)
    with torch.no_grad():  # at the reference: (2/β)·log 2
        at_ref = float(m.forget_loss(ref_model, _batch(tok, chosen_pairs), torch.tensor(w0),
                                     rejected=(_batch(tok, rejected_pairs), torch.tensor(l0))))
    assert at_ref == pytest.approx(4 * math.log(2), rel=1e-5)
    with pytest.raises(ValueError, match="rejected"):
        m.forget_loss(model, _batch(tok, chosen_pairs), None)
    assert make_method("idkdpo").beta == 0.1 and make_method("idkdpo").needs_reference


def test_idkdpo_trains_through_the_loop_toward_the_refusal(tiny):
    _, tok, model, forget, retain = tiny
    trained = copy.deepcopy(model).train()
    m = make_method("idkdpo", beta=0.5)
    log = unlearn_loop(trained, tok, m, forget, retain, template=T, steps=6, lr=3e-3, batch_size=4, seed=0,
                       device="cpu", alpha=1.0, training={"gradient_accumulation": 2})
    assert log[0]["forget_loss"] == pytest.approx(4 * math.log(2), rel=1e-4)  # starts at the reference
    assert log[-1]["forget_loss"] < log[0]["forget_loss"]
    margin = [a - b for a, b in zip(_logprob_by_hand(trained, tok, m.forget_targets(forget)),
                                    _logprob_by_hand(trained, tok, forget))]
    start = [a - b for a, b in zip(_logprob_by_hand(model, tok, m.forget_targets(forget)),
                                   _logprob_by_hand(model, tok, forget))]
    assert sum(margin) > sum(start)  # the refusal gained on the answer


@pytest.mark.parametrize("run, match", [
    ({"method": "graddiff", "retain_loss": "activation"}, r"unlearn\.ga\.retain_loss: 'activation' reads the method's \['layer'\]"),
    ({"method": "rmu", "steering_coef": 0}, r"unlearn\.ga\.steering_coef"),
    ({"method": "rmu", "layer": -1}, r"unlearn\.ga\.layer"),
    ({"method": "idkdpo", "beta": 0}, r"unlearn\.ga\.beta"),
])
def test_params_name_the_bad_key(run, match):
    p = copy.deepcopy(MICRO)
    p["unlearn"]["ga"] = {"steps": 2, "lr": 1e-4, "batch_size": 8, **run}
    with pytest.raises(ParamsError, match=match):
        validate_params(p, host=False)


def test_rmu_params_fill_its_defaults_and_may_take_another_retain_term():
    p = copy.deepcopy(MICRO)
    p["unlearn"]["ga"] = {"method": "rmu", "steps": 2, "lr": 1e-4, "batch_size": 8}
    run = validate_params(p, host=False)["unlearn"]["ga"]
    assert (run["layer"], run["trained_layers"], run["seed"]) == (2, 3, 0)
    p["unlearn"]["ga"]["retain_loss"] = "nll"
    assert validate_params(p, host=False)["unlearn"]["ga"]["retain_loss"] == "nll"
    assert make_retain_loss("nll", make_method("rmu")).name == "nll"


def test_the_methods_preset_is_the_earlier_default_with_every_method_of_its_own_module():
    """configs/methods.yaml is the earlier default its report seeds ran on (docs/tuning.yaml,
    ``earlier``; the attack preset is the same default) with every method of its own module."""
    from pathlib import Path

    import yaml

    from leakk.config import read_params_file
    from leakk.unlearn.methods import METHODS

    root = Path(__file__).resolve().parents[1]
    earlier = yaml.safe_load((root / "docs" / "tuning.yaml").read_text())["earlier"]["default_60x10"]
    preset = read_params_file(root / "configs" / "methods.yaml")
    attacks = read_params_file(root / "configs" / "attacks.yaml")
    runs = preset.pop("unlearn")
    assert preset.pop("replicates") == earlier["report_seeds"]
    stop = attacks.pop("unlearn")["graddiff"]["stop"]
    attacks.pop("attack"), attacks.pop("replicates"), attacks.pop("rule")
    assert preset == attacks, "configs/methods.yaml and configs/attacks.yaml are not the same earlier default"
    assert preset["data"]["synthetic"] == earlier["data"]
    own_module = {n for n in METHODS.names() if n not in ("ga", "graddiff", "npo")}
    assert {r["method"] for r in runs.values()} == own_module  # a new method joins the preset
    assert all(r["stop"] == stop and r["steps"] == 300 for r in runs.values())  # that default's stop rule
    validate_params(read_params_file(root / "configs" / "methods.yaml"), host=False)

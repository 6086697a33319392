"""Tests that kill the seven bugs the default suite missed (issue 13).

Each test asserts a behaviour, computed independently of the code under test, and each was
checked by re-planting its bug by hand (see benchmarks/MUTATION.md):

1. NPO's sign: NPO steps raise the forget NLL; the loss matches the closed form for a
   reference that is *not* the current model.
2. NPO's reference is the starting model, fixed across steps.
3. The sampler's random stream depends on the question id, not only on sample_idx.
4. Params validation refuses a RULE seed whose *last* round's training seed is sample.seed.
5. ``write_parquet`` is atomic: a write that fails midway leaves the old file intact.
6. RULE's round statistics exist for k = n (every question has exactly k samples, spread
   over its training phrasings).
7. RULE round r trains and samples with seed ``rule.<name>.seed + 1000·r``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import polars as pl
import pytest
import torch

from conftest import MICRO
from leakk.config import validate_params
from leakk.data.synthetic import generate
from leakk.core.errors import ParamsError
from leakk.models.finetune import corpus_texts, finetune, training_pairs
from leakk.core.io import read_parquet, write_parquet
from leakk.models.modeling import build_gpt2, build_tokenizer, load_model
from leakk.models.prompting import answer_nll, collate, encode_example
from leakk.sampling.decoding import Decoding
from leakk.sampling.hf import sample_hf
from leakk.unlearn.loop import unlearn_loop
from leakk.unlearn.methods import make_method

T = "Question: {question} Answer:"
# no dropout: the loop's logged losses are then a deterministic function of the weights
ARCH = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


# ---------------------------------------------------------------------------- NPO (1, 2)

@pytest.fixture(scope="module")
def lm():
    data = generate(8, 3, forget_fraction=0.25, phrasings=3)
    tok = build_tokenizer(corpus_texts(data, T), 200)
    model = build_gpt2(tok, ARCH, seed=0)
    forget = training_pairs(data.filter(pl.col("split") == "forget"))[:6]
    retain = training_pairs(data.filter(pl.col("split") == "retain"))[:6]
    return model, tok, forget, retain


def _copy(model):
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def _manual_logprobs(model, tok, pairs) -> list[float]:
    """log π(answer | prompt) of each pair, one unpadded sequence at a time, summed by hand
    (independent of ``answer_logprob``'s batching and masking)."""
    out = []
    for q, a in pairs:
        ids, labels = encode_example(q, a, tok, T)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        out.append(sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)) if labels[i] != -100))
    return out


def _npo_closed_form(logp: list[float], ref: list[float], beta: float) -> float:
    """−(2/β)·mean log σ(−β·(log πθ − log πref)), in plain floats."""
    def log_sigmoid(x):
        return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
    return -(2.0 / beta) * sum(log_sigmoid(-beta * (p - r)) for p, r in zip(logp, ref)) / len(logp)


def test_npo_loss_matches_closed_form_for_shifted_reference(lm):
    model, tok, forget, _ = lm
    batch = collate([encode_example(q, a, tok, T) for q, a in forget], tok.pad_token_id)
    logp = _manual_logprobs(model, tok, forget)
    # the reference differs from the current model by ±several nats, in both directions
    shifts = [30.0, -20.0, 5.0, -70.0, 100.0, -2.5]
    ref = [p + s for p, s in zip(logp, shifts)]
    for beta in (0.1, 0.5, 2.0):
        loss = make_method("npo", beta=beta).forget_loss(model, batch, torch.tensor(ref))
        expected = _npo_closed_form(logp, ref, beta)
        # float32 forward pass vs float64 by hand: ~1e-6 relative on log-probs of ~-50 nats
        assert loss.item() == pytest.approx(expected, rel=1e-4)
        assert abs(expected - 2 / beta * math.log(2)) > 0.1  # far from the at-reference value


def test_npo_steps_raise_forget_nll(lm):
    model, tok, forget, retain = lm
    model = _copy(model)
    batch = collate([encode_example(q, a, tok, T) for q, a in forget], tok.pad_token_id)
    with torch.no_grad():
        before = answer_nll(model, batch).item()
    log = unlearn_loop(model, tok, make_method("npo", beta=0.1), forget, retain, template=T, steps=5,
                       lr=1e-3, batch_size=len(forget), seed=0, device="cpu", alpha=0.0)
    with torch.no_grad():
        after = answer_nll(model, batch).item()
    assert after > before + 0.1
    # NPO's loss is ≥ 0 and starts at (2/β)·log 2; it falls as πθ drops below πref
    assert log[0]["forget_loss"] == pytest.approx(2 / 0.1 * math.log(2), rel=1e-5)
    assert all(r["forget_loss"] >= 0 for r in log)
    assert log[-1]["forget_loss"] < log[0]["forget_loss"] - 0.1


def test_npo_reference_is_the_starting_model_across_steps(lm):
    """The loss logged at step s+1 is the closed form with the weights after s steps and the
    *pre-training* log-probs as reference (a reference re-taken from the current model
    would give (2/β)·log 2 at every step)."""
    model, tok, forget, retain = lm
    beta, steps = 0.5, 3
    start_logp = _manual_logprobs(model, tok, forget)
    kw = dict(template=T, lr=2e-3, batch_size=len(forget), seed=3, device="cpu", alpha=0.0)
    after_s = _copy(model)
    unlearn_loop(after_s, tok, make_method("npo", beta=beta), forget, retain, steps=steps, **kw)
    longer = _copy(model)
    log = unlearn_loop(longer, tok, make_method("npo", beta=beta), forget, retain, steps=steps + 1, **kw)
    # full batches: step s+1 sees every forget pair, so its loss is the mean over all of them
    expected = _npo_closed_form(_manual_logprobs(after_s, tok, forget), start_logp, beta)
    assert log[steps]["forget_loss"] == pytest.approx(expected, rel=1e-4)
    assert abs(expected - 2 / beta * math.log(2)) > 0.05


# ---------------------------------------------------------------------------- sampler (3)

def test_sampler_stream_depends_on_question_id():
    """Two questions with the same prompt and the same sample_idx draw different streams."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_layer=1, n_embd=16, n_head=2, n_positions=32,
                                       eos_token_id=1, pad_token_id=0, bos_token_id=1)).eval()
    prompt = [5, 6, 7]
    dec = Decoding(1.0, 1.0)
    out = sample_hf(model, tok, ["qa", "qb"], [prompt, prompt], dec, 6, 12, seed=1, batch_rows=12, progress=False)
    by = {(c.qid, c.sample_idx): c.token_ids for c in out}
    # a near-uniform 32-token model: 12-token streams coincide by chance with probability ~0
    assert sum(by[("qa", i)] != by[("qb", i)] for i in range(6)) >= 5
    # ...and each question's streams are reproducible alone (a function of (seed, qid, idx))
    alone = sample_hf(model, tok, ["qb"], [prompt], dec, 6, 12, seed=1, batch_rows=12, progress=False)
    assert {(c.qid, c.sample_idx): c.token_ids for c in alone} == {k: v for k, v in by.items() if k[0] == "qb"}
    # a different seed gives other streams for the same (qid, sample_idx)
    other = sample_hf(model, tok, ["qb"], [prompt], dec, 6, 12, seed=2, batch_rows=12, progress=False)
    assert sum(c.token_ids != by[("qb", c.sample_idx)] for c in other) >= 5


# ---------------------------------------------------------------------------- config (4)

@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_rule_seed_check_covers_every_training_round(rounds):
    p = copy.deepcopy(MICRO)
    p["rule"]["rule_npo"]["rounds"] = rounds
    seed = p["rule"]["rule_npo"]["seed"]
    for r in range(1, rounds + 1):  # round r trains with seed + 1000·r, the last one included
        p["sample"]["seed"] = seed + 1000 * r
        with pytest.raises(ParamsError, match=r"rule\.rule_npo\.seed: equals sample\.seed"):
            validate_params(p)
    # a seed no round trains with is fine
    p["sample"]["seed"] = seed + 1000 * (rounds + 1)
    validate_params(p)
    p["sample"]["seed"] = seed + 1
    validate_params(p)


# ---------------------------------------------------------------------------- io (5)

def test_write_parquet_failing_midway_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "judgments.parquet"
    old = pl.DataFrame({"qid": ["a"], "sample_idx": [0], "judge": ["fact"], "score": [1.0], "leaked": [True]})
    write_parquet(old, target, "judgments")
    before = target.read_bytes()

    def write_then_die(self, file, *args, **kwargs):
        with open(file, "wb") as fh:
            fh.write(b"PAR1 half a parquet")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_then_die)
    new = old.with_columns(score=pl.lit(0.0), leaked=pl.lit(False))
    with pytest.raises(OSError, match="disk full"):
        write_parquet(new, target, "judgments")
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert read_parquet(target, "judgments").equals(old)
    assert [p.name for p in tmp_path.iterdir()] == ["judgments.parquet"]  # no temp file left
    fresh = tmp_path / "fresh.parquet"
    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_then_die)
    with pytest.raises(OSError):
        write_parquet(new, fresh)
    assert not fresh.exists()


# ---------------------------------------------------------------------------- RULE (6, 7)

def _leak_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.fixture(scope="module")
def rule_run(tmp_path_factory):
    """Two RULE rounds on the micro model; a ROUGE-L threshold of 0.1 makes a few of the
    barely trained model's completions leak, so round 1 trains and round 2 samples."""
    from leakk.unlearn.rule import run_all_rounds

    root = tmp_path_factory.mktemp("rule_survivors")
    p = validate_params(dict(MICRO, judge={"fact": {}, "rougeL": {"threshold": 0.1}}))
    data = generate(**p["data"]["synthetic"], seed=0)
    finetune(data, root / "model", splits=["forget", "retain"], model_params=p["model"],
             train_params=p["finetune"], template=p["prompt_template"], seed=0)
    run_all_rounds(data, p, name="rule_npo", base_model=root / "model", out_root=root / "rule",
                   reference_dir=root / "model")
    return root, data, p


def test_rule_rounds_train_with_seed_plus_1000_r(rule_run):
    root, _, p = rule_run
    cfg = p["rule"]["rule_npo"]
    logs = [read_parquet(root / f"rule/round_{r}/round.parquet") for r in (1, 2)]
    assert [log["train_seed"][0] for log in logs] == [cfg["seed"] + 1000, cfg["seed"] + 2000]
    assert logs[0]["trained"][0], "round 1 must find leaks for round 2 to sample"


def test_rule_round_stats_reproduce_from_the_round_seed(rule_run):
    """Each round's training leak@1 and leak@n (k = n: every question has exactly k samples)
    equal an independent recomputation: sample the model entering round r in its training
    phrasings (n spread over them, phrasing j with seed ``seed + 1000·r + j``), judge, and
    average 1 − C(n−c, k)/C(n, k) over questions."""
    from leakk.judges import judge_samples
    from leakk.sampling.backend import SamplingRequest
    from leakk.sampling.hf_backend import HFBackend
    from leakk.sampling.stage import questions_for, sample_phrasings

    root, data, p = rule_run
    cfg = p["rule"]["rule_npo"]
    n = cfg["n"]
    assert cfg["question_column"] == "training"
    forget_q = questions_for(data, ["forget"], "training")
    assert forget_q.group_by("qid").len()["len"].max() > 1  # several phrasings per question
    entering = {1: root / "model", 2: root / "rule/round_1/model"}
    for r, model_dir in entering.items():
        log = read_parquet(root / f"rule/round_{r}/round.parquet")
        model, tok = load_model(model_dir)
        request = SamplingRequest.build(Decoding(**cfg["decoding"]), n=n, seed=cfg["seed"] + 1000 * r,
                                       max_new_tokens=cfg["max_new_tokens"])
        samples = sample_phrasings(HFBackend(model, tok, 16), forget_q, request, template=p["prompt_template"])
        judged = judge_samples(samples, data, {cfg["judge"]: p["judge"][cfg["judge"]]}, progress=False)
        counts = judged.group_by("qid").agg(c=pl.col("leaked").sum(), n=pl.len())
        assert set(counts["n"]) == {n}
        for k in (1, n):
            value = log[f"train_leak_at_{k}"][0]
            assert value is not None, f"round {r}: leak@{k} is null with {n} samples per question"
            expected = float(np.mean([_leak_at_k(n, c, k) for c in counts["c"]]))
            assert value == pytest.approx(expected, abs=1e-12)
            assert log[f"train_leak_at_{k}_ci_low"][0] <= value <= log[f"train_leak_at_{k}_ci_high"][0]
        assert log["leaked_samples"][0] == counts["c"].sum()

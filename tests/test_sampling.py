"""The sampler: exact draws, HF-equivalent top-p, reproducible per (seed, qid, sample_idx)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.generation.logits_process import TopPLogitsWarper

from leakk.sampling.decoding import GREEDY, Decoding
from leakk.sampling.hf import _plan_batches, next_tokens, sample_hf
from leakk.sampling.rng import _mix_np, _mix_t, gumbel, keys_tensor, row_keys


def test_decoding_names_roundtrip():
    for d in (Decoding(1.0, 1.0), Decoding(0.8, 0.8), Decoding(0.2, 1.0), GREEDY):
        assert Decoding.from_name(d.name) == d
    assert Decoding(1, 1).name == "t1.0_p1.0"


def test_torch_hash_is_bit_identical_to_numpy():
    x = np.random.default_rng(0).integers(0, 2**63, size=1000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    ours = _mix_t(torch.from_numpy(x.view(np.int64))).numpy().view(np.uint64)
    assert np.array_equal(ours, _mix_np(x))


def test_gumbel_noise_is_always_finite():
    import leakk.sampling.rng as rng

    # the largest 23-bit draw stays strictly below 1 in float32, so -log(-log(u)) is finite
    top = (torch.tensor([2**23 - 1], dtype=torch.int64).float() + 0.5) * (1.0 / (1 << 23))
    assert top.item() < 1.0 and torch.isfinite(-torch.log(-torch.log(top))).all()
    keys = keys_tensor(row_keys(0, ["q"] * 512, np.arange(512)), "cpu")
    assert torch.isfinite(rng.gumbel(keys, 0, 0, torch.arange(4096).expand(512, -1))).all()


def test_gumbel_depends_only_on_seed_qid_idx_and_is_gumbel():
    k1 = keys_tensor(row_keys(7, ["a", "b", "c"], np.array([0, 1, 2])), "cpu")
    k2 = keys_tensor(row_keys(7, ["c", "a"], np.array([2, 0])), "cpu")
    idx = torch.arange(5).expand(3, -1)
    g1, g2 = gumbel(k1, 3, 0, idx), gumbel(k2, 3, 0, idx[:2])
    assert torch.equal(g1[2], g2[0]) and torch.equal(g1[0], g2[1])
    assert not torch.equal(gumbel(k1, 4, 0, idx), g1) and not torch.equal(gumbel(k1, 3, 1, idx), g1)
    big = gumbel(keys_tensor(row_keys(1, ["q"] * 2000, np.arange(2000)), "cpu"), 0, 0,
                 torch.arange(100).expand(2000, -1)).double().ravel()
    assert abs(big.mean().item() - 0.5772) < 0.01 and abs(big.var().item() - np.pi**2 / 6) < 0.03


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8), (0.8, 0.5)])
def test_next_tokens_matches_target_distribution(temperature, top_p):
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 2
    dec = Decoding(temperature, top_p)
    # target: HF's temperature + top-p warpers, then softmax
    warped = TopPLogitsWarper(top_p)(None, logits / temperature) if top_p < 1 else logits / temperature
    target = torch.softmax(warped, -1)[0].double().numpy()
    draws = 40000
    keys = keys_tensor(row_keys(3, ["q"] * draws, np.arange(draws)), "cpu")
    toks = next_tokens(logits.expand(draws, -1), dec, keys, step=0).numpy()
    freq = np.bincount(toks, minlength=12) / draws
    assert np.all(freq[target == 0] == 0), "sampled a token top-p removed"
    se = np.sqrt(target * (1 - target) / draws)
    assert np.all(np.abs(freq - target) <= 5 * se + 1e-9)


def test_next_tokens_large_vocab_blocks():
    """Two-level draw over a vocabulary that is not a multiple of the block size."""
    torch.manual_seed(1)
    logits = torch.randn(1, 1003) * 3
    draws = 20000
    keys = keys_tensor(row_keys(9, ["q"] * draws, np.arange(draws)), "cpu")
    toks = next_tokens(logits.expand(draws, -1), Decoding(1.0, 1.0), keys, step=2).numpy()
    target = torch.softmax(logits, -1)[0].double().numpy()
    top = np.argsort(-target)[:5]
    freq = np.bincount(toks, minlength=1003) / draws
    se = np.sqrt(target[top] * (1 - target[top]) / draws)
    assert toks.max() < 1003 and np.all(np.abs(freq[top] - target[top]) <= 5 * se)


def test_plan_batches_cover_each_sample_once():
    batches = _plan_batches([5, 9, 3], n=10, max_rows=8)
    seen = [(q, s + i) for b in batches for q, s, c in b for i in range(c)]
    assert sorted(seen) == [(q, s) for q in range(3) for s in range(10)]
    assert all(sum(c for _, _, c in b) <= 8 for b in batches)


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_layer=2, n_embd=32, n_head=2, n_positions=64,
                                       eos_token_id=1, pad_token_id=0, bos_token_id=1)).eval()
    with torch.no_grad():  # make EOS likely so sequences finish at different lengths
        model.lm_head.weight[1] += 0.3
    return model, tokenizer


def _prompts():
    rng = np.random.default_rng(0)
    return [f"q{i}" for i in range(6)], [list(rng.integers(3, 32, size=rng.integers(2, 9))) for _ in range(6)]


def test_sampler_independent_of_batching(tiny_lm):
    model, tokenizer = tiny_lm
    qids, prompts = _prompts()
    dec = Decoding(1.0, 1.0)
    a = sample_hf(model, tokenizer, qids, prompts, dec, 8, 20, seed=1, batch_rows=48, progress=False)
    b = sample_hf(model, tokenizer, qids, prompts, dec, 8, 20, seed=1, batch_rows=5, progress=False)
    key = lambda c: (c.qid, c.sample_idx)  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    same = np.mean([x.token_ids == y.token_ids for x, y in zip(a, b)])
    assert same >= 0.95
    assert {c.finish_reason for c in a} == {"stop", "length"}
    assert all(c.token_ids[-1] == 1 for c in a if c.finish_reason == "stop")
    assert all(len(c.token_ids) == 20 for c in a if c.finish_reason == "length")


def test_greedy_matches_hf_generate(tiny_lm):
    model, tokenizer = tiny_lm
    qids, prompts = _prompts()
    ours = sample_hf(model, tokenizer, qids, prompts, GREEDY, 1, 15, seed=0, batch_rows=4, progress=False)
    by_q = {c.qid: c.token_ids for c in ours}
    for q, p in zip(qids, prompts):
        out = model.generate(torch.tensor([p]), max_new_tokens=15, do_sample=False, eos_token_id=1, pad_token_id=0)
        ref = out[0, len(p):].tolist()
        ref = ref[: ref.index(1) + 1] if 1 in ref else ref
        assert by_q[q] == ref


def test_sampler_matches_per_question_reference(tiny_lm):
    """Left padding, KV expansion and early drop change nothing: each sampled row equals
    the same draws replayed one sequence at a time without a cache."""
    model, tokenizer = tiny_lm
    qids, prompts = _prompts()
    dec = Decoding(0.9, 0.9)
    ours = sample_hf(model, tokenizer, qids, prompts, dec, 3, 10, seed=4, batch_rows=7, progress=False)
    for c in ours[:9]:
        p = prompts[qids.index(c.qid)]
        key = keys_tensor(row_keys(4, [c.qid], np.array([c.sample_idx])), "cpu")
        seq, out = list(p), []
        for t in range(10):
            with torch.no_grad():
                logits = model(torch.tensor([seq])).logits[:, -1]
            tok = next_tokens(logits, dec, key, t).item()
            out.append(tok)
            seq.append(tok)
            if tok == 1:
                break
        assert c.token_ids == out


def test_vllm_backend_without_vllm_is_one_clear_error(tmp_path, tiny_lm):
    import importlib.util

    from leakk.core.errors import ParamsError
    from leakk.sampling import open_backend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    with pytest.raises(ParamsError, match="pip install 'leakk\\[gpu\\]'"):
        open_backend({"backend": "vllm"}, str(tmp_path))


def test_backend_options_are_checked_against_the_backends_schema(micro_params):
    from leakk.config import validate_params
    from leakk.core.errors import ParamsError

    micro_params["sample"].update(backend="vllm", options={"batch_invariant": "yes"})
    with pytest.raises(ParamsError, match="sample.options.batch_invariant"):
        validate_params(micro_params)
    micro_params["sample"]["options"] = {"tensor_parallel": 2}
    with pytest.raises(ParamsError, match="tensor_parallel"):
        validate_params(micro_params)
    micro_params["sample"]["options"] = {"batch_invariant": True}
    # host=False: vLLM need not be installed where the params are checked for another machine
    assert validate_params(micro_params, host=False)["sample"]["options"]["batch_invariant"] is True


def test_unknown_backend():
    from leakk.core.errors import ParamsError
    from leakk.sampling import load_backend

    with pytest.raises(ParamsError, match="unknown backend"):
        load_backend("tgi")


@pytest.mark.parametrize("force", ["version", "switch"])
def test_preallocated_cache_fallback_is_loud_and_identical(tiny_lm, monkeypatch, caplog, force):
    """An untested transformers (or preallocation off) uses HF's own cache: a warning, once,
    and exactly the same greedy and sampled tokens as the preallocated path."""
    import leakk.sampling.hf as hf

    model, tokenizer = tiny_lm
    qids, prompts = _prompts()
    run = lambda dec: sample_hf(model, tokenizer, qids, prompts, dec, 3, 12, seed=2, batch_rows=7,  # noqa: E731
                                progress=False)
    fast = {d: run(d) for d in (GREEDY, Decoding(1.0, 1.0))}
    monkeypatch.setattr(hf, "_warned", set())
    if force == "version":
        monkeypatch.setattr(hf, "TESTED_TRANSFORMERS", ("0.1", "0.2"))
    else:
        monkeypatch.setattr(hf.PreallocatedKV, "__init__", lambda *a, **k: pytest.fail("not a fallback"))
        monkeypatch.setattr(hf.PreallocatedKV, "unsupported", staticmethod(lambda cache: "forced by the test"))
    with caplog.at_level("WARNING", logger="leakk.sampling.hf"):
        slow = {d: run(d) for d in fast}
    for d in fast:
        assert [(c.qid, c.sample_idx, c.token_ids, c.finish_reason) for c in slow[d]] == \
               [(c.qid, c.sample_idx, c.token_ids, c.finish_reason) for c in fast[d]]
    warnings = [r for r in caplog.records if "own KV cache" in r.getMessage()]
    assert len(warnings) == 1, caplog.text


def test_preallocated_cache_used_on_the_tested_transformers(tiny_lm, monkeypatch):
    import leakk.sampling.hf as hf

    model, tokenizer = tiny_lm
    made = []
    real = hf.PreallocatedKV.__init__
    monkeypatch.setattr(hf.PreallocatedKV, "__init__", lambda self, *a, **k: (made.append(1), real(self, *a, **k))[1])
    qids, prompts = _prompts()
    sample_hf(model, tokenizer, qids, prompts, GREEDY, 1, 5, seed=0, batch_rows=8, progress=False)
    assert made


def _padded_next_tokens(logits, decoding, keys, step):
    """The sampling step as it was written before the GPU work: the last, partial block padded
    with −inf by copying the logits (an independent statement of the same draw)."""
    import math

    from leakk.sampling.hf import nucleus_logprobs

    logp = nucleus_logprobs(logits, decoding)
    rows, vocab = logp.shape
    block = max(1, math.isqrt(vocab - 1) + 1)
    blocks = -(-vocab // block)
    logp = torch.nn.functional.pad(logp, (0, blocks * block - vocab), value=float("-inf")).view(rows, blocks, block)
    chosen = (torch.logsumexp(logp, -1) + gumbel(keys, step, 0, torch.arange(blocks).expand(rows, -1))).argmax(-1)
    within = logp[torch.arange(rows), chosen]
    token_ids = chosen.unsqueeze(-1) * block + torch.arange(block)
    return chosen * block + (within + gumbel(keys, step, 1, token_ids)).argmax(-1)


@pytest.mark.parametrize("vocab", [50, 1000, 1024, 32000])
@pytest.mark.parametrize("decoding", [Decoding(1.0, 1.0), Decoding(0.7, 0.9)])
def test_sampling_step_without_the_padding_copy_draws_the_same_tokens(vocab, decoding):
    gen = torch.Generator().manual_seed(vocab)
    keys = keys_tensor(row_keys(3, [f"q{i}" for i in range(64)], np.arange(64)), "cpu")
    for step in range(4):
        logits = torch.randn(64, vocab, generator=gen) * 3
        assert torch.equal(next_tokens(logits, decoding, keys, step), _padded_next_tokens(logits, decoding, keys, step))


def test_grouped_decoding_attention_equals_expanded_heads():
    """grouped_sdpa (the G query heads of a group as G queries of one key-value head) against
    SDPA on K/V expanded to every query head, with a left-padding mask: fp32 rounding."""
    from types import SimpleNamespace

    from leakk.sampling.attention import grouped_sdpa

    gen = torch.Generator().manual_seed(0)
    b, h, kv, length, d = 5, 8, 2, 11, 16
    q = torch.randn(b, h, 1, d, generator=gen)
    k, v = torch.randn(b, kv, length, d, generator=gen), torch.randn(b, kv, length, d, generator=gen)
    mask = torch.ones(b, 1, 1, length, dtype=torch.bool)
    mask[1, ..., :4] = False
    mask[3, ..., :7] = False
    out, _ = grouped_sdpa(SimpleNamespace(num_key_value_groups=h // kv), q, k, v, mask, scaling=d ** -0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(h // kv, 1), v.repeat_interleave(h // kv, 1), attn_mask=mask, scale=d ** -0.5)
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_a_gqa_model_samples_the_same_with_grouped_decoding():
    """A grouped-query Llama: the sampler (through grouped_sdpa) draws the same tokens as with
    transformers' own attention, and greedy equals model.generate."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import leakk.sampling.hf as hf

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (int(torch.randint(2, 9, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(6)]
    qids = [f"q{i}" for i in range(6)]
    tok = type("T", (), {"pad_token_id": 0, "eos_token_id": 2})
    run = lambda dec, n: [(c.qid, c.sample_idx, c.token_ids)  # noqa: E731
                          for c in sample_hf(model, tok, qids, prompts, dec, n, 10, 4, batch_rows=16, progress=False)]
    grouped = {d: run(d, n) for d, n in ((GREEDY, 1), (Decoding(1.0, 1.0), 4))}
    import contextlib

    plain = contextlib.contextmanager(lambda m: (yield False))
    saved, hf.grouped_decoding = hf.grouped_decoding, plain
    try:
        assert {d: run(d, n) for d, n in ((GREEDY, 1), (Decoding(1.0, 1.0), 4))} == grouped
    finally:
        hf.grouped_decoding = saved
    greedy = {q: ids for q, _, ids in grouped[GREEDY]}
    for q, p in zip(qids, prompts):
        ids = greedy[q]
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                             max_new_tokens=10, eos_token_id=2, pad_token_id=0)[0, len(p):].tolist()
        assert ids == (ref[: ref.index(2) + 1] if 2 in ref else ref)

"""Training that scales (leakk.models.training): accumulation gives the full batch's gradient, the
memory estimate matches a hand computation, a tiny Llama goes through finetune (accumulation
+ checkpointing), unlearn (full and LoRA, merged on save), sampling and judging on CPU — and
the defaults leave the offline miniature's numbers bit-identical."""

from __future__ import annotations

import copy
import json

import polars as pl
import pytest
import torch
import yaml

from conftest import MICRO
from leakk import determinism
from leakk.cli import main
from leakk.models.demo import tiny_llama_folder
from leakk.data.synthetic import generate
from leakk.core.errors import ParamsError
from leakk.models.finetune import corpus_texts, train_loop, training_pairs
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.models.prompting import answer_nll, collate, encode_example
from leakk.models.training import (Term, Trainer, TrainingSpec, cosine_with_warmup, memory_estimate, memory_line,
                                   micro_slices, model_memory)
from leakk.unlearn.loop import reference_logprobs, unlearn_loop
from leakk.unlearn.methods import make_method

T = "Question: {question} Answer:"


# The loss of each step (float.hex()) of the script below, run in LEAKK_CPU_KERNELS=compatible
# (ATen's AVX2 kernels, MKL's COMPATIBLE branch, one thread). Recorded from main at 8b69f64,
# before leakk.training existed (its train_loop without `training=`; the script otherwise
# unchanged), and equal to what this commit gives. MKL's COMPATIBLE branch gives the same
# results on Intel and AMD CPUs alike (MKL's conditional numerical reproducibility), unlike
# its AVX2 branch (the `portable` mode), which MKL keeps identical on Intel CPUs only.
BEFORE = {
    "finetune": ["0x1.52c2be0000000p+2", "0x1.49e14a0000000p+2", "0x1.425b880000000p+2"],
    "graddiff": ["0x1.ef48000000000p-6", "0x1.2290000000000p-6", "0x1.34dc000000000p-5"],
    "npo": ["0x1.29bd2e0000000p+4", "0x1.18d3000000000p+4", "0x1.099e9c0000000p+4"],
}
TRAJECTORIES = r"""
import copy, json, leakk, torch
import polars as pl
from leakk.data.synthetic import generate
from leakk.models.finetune import corpus_texts, train_loop, training_pairs
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.models.training import TrainingSpec
from leakk.unlearn.loop import unlearn_loop
from leakk.unlearn.methods import make_method
torch.set_num_threads(1)
T = "Question: {question} Answer:"
data = generate(8, 3, forget_fraction=0.25, phrasings=3)
tok = build_tokenizer(corpus_texts(data, T), 200)
model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48}, seed=0)
log = train_loop(model, tok, training_pairs(data), template=T, epochs=1, lr=5e-3, batch_size=16,
                 warmup_ratio=0.05, weight_decay=0.0, seed=0, device="cpu", desc="ft",
                 training=TrainingSpec())  # the defaults: fp32 on CPU, no accumulation
got = {"finetune": [r["loss"].hex() for r in log]}
forget = training_pairs(data.filter(pl.col("split") == "forget"))
retain = training_pairs(data.filter(pl.col("split") == "retain"))
for name in ("graddiff", "npo"):
    ul = unlearn_loop(copy.deepcopy(model), tok, make_method(name), forget, retain, template=T, steps=3,
                      lr=1e-3, batch_size=8, seed=0, device="cpu", alpha=1.0)
    got[name] = [r["loss"].hex() for r in ul]
print(json.dumps(got))
"""


@pytest.mark.skipif(not determinism._has_avx2(), reason="the compatible mode pins ATen's AVX2 kernels: "
                                                        "needs an x86-64 CPU with AVX2 and FMA")
def test_defaults_leave_the_miniatures_loss_trajectories_unchanged():
    """Run in a fresh process in the `compatible` kernel mode, meant to give the same bits on
    every x86-64 CPU with AVX2. It did on the Intel machines the record was made and checked
    on, but on an AMD EPYC with AVX-512 NPO's second loss came out 2 fp32 ulps away
    (docs/workflow.md), so the comparison allows 1e-6 relative: a few ulps, while anything
    that changes what a step computes moves a loss by orders of magnitude more."""
    import os
    import subprocess
    import sys

    pinned = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
    env = {k: v for k, v in os.environ.items() if k not in pinned}  # this process's pins are portable's
    out = subprocess.run([sys.executable, "-c", TRAJECTORIES], capture_output=True, text=True, check=True,
                         env={**env, determinism.ENV: "compatible", "TQDM_DISABLE": "1"}, timeout=600)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got.keys() == BEFORE.keys()
    for name, losses in BEFORE.items():
        assert [float.fromhex(x) for x in got[name]] == pytest.approx([float.fromhex(x) for x in losses],
                                                                     rel=1e-6, abs=0), name


def _tiny_llama(tmp_path, data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_llama_folder(tmp_path / "llama", corpus_texts(data, T), vocab_size=200, hidden=32,
                               layers=2, positions=128)
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), folder


@pytest.mark.parametrize("warmup, total", [(0, 1), (0, 7), (3, 10), (39, 798), (10, 10), (12, 10)])
def test_the_cosine_schedule_is_transformers_to_the_bit(warmup, total):
    """Fine-tuning's schedule (cosine_with_warmup) gives exactly the learning rates of
    transformers' get_cosine_schedule_with_warmup at every step, one past the end included."""
    from transformers import get_cosine_schedule_with_warmup

    def lrs(make) -> list[float]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-3)
        sched, out = make(opt), []
        for _ in range(total + 2):
            out.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        return out

    assert lrs(lambda o: cosine_with_warmup(o, warmup, total)) == lrs(
        lambda o: get_cosine_schedule_with_warmup(o, warmup, total))


def test_micro_slices_cover_the_batch_evenly():
    assert micro_slices(10, 3) == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert micro_slices(2, 3) == [slice(0, 1), slice(1, 2), slice(2, 2)]
    assert micro_slices(8, 1) == [slice(0, 8)]


@pytest.mark.parametrize("method", ["graddiff", "npo"])
def test_an_accumulated_step_has_the_full_batchs_gradient(tmp_path, method):
    """γ·forget + α·retain over 7 forget and 9 retain examples of unequal answer lengths, in 3
    micro-batches, against one direct full-batch backward (fp32; tolerance: summation order)."""
    data = generate(8, 3, forget_fraction=0.25, phrasings=3)
    model, tok, _ = _tiny_llama(tmp_path, data)
    forget = [encode_example(q, a, tok, T) for q, a in training_pairs(data.filter(pl.col("split") == "forget"))[:7]]
    retain = [encode_example(q, a, tok, T) for q, a in training_pairs(data.filter(pl.col("split") == "retain"))[:9]]
    m = make_method(method)
    ref = reference_logprobs(model, forget, tok.pad_token_id, "cpu") if m.needs_reference else None
    gamma, alpha = 1.0, 0.7

    direct = copy.deepcopy(model).train()
    fb, rb = collate(forget, tok.pad_token_id), collate(retain, tok.pad_token_id)
    loss = gamma * m.forget_loss(direct, fb, ref) + alpha * answer_nll(direct, rb)
    loss.backward()
    want = {n: p.grad for n, p in direct.named_parameters()}

    trainer = Trainer(model, TrainingSpec(precision="fp32", gradient_accumulation=3), "cpu", lr=1e-3,
                      weight_decay=0.0, schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                      pad_id=tok.pad_token_id)
    terms = [Term(forget, lambda b, part: m.forget_loss(trainer.model, b, ref[part] if ref is not None else None),
                  gamma, m.averages),
             Term(retain, lambda b, _: answer_nll(trainer.model, b), alpha)]
    total, (f_loss, r_loss) = trainer.accumulate(terms)
    assert total == pytest.approx(loss.item(), rel=1e-5)
    got = dict(model.named_parameters())
    for name, g in want.items():
        torch.testing.assert_close(got[name].grad, g, rtol=1e-4, atol=1e-6, msg=name)
    # the claim needs the weighting: the three micro-batches' token counts differ, so plain
    # 1/accumulation would give another gradient
    sizes = [terms[1].size(s) for s in micro_slices(len(retain), 3)]
    assert len(set(sizes)) > 1


def test_memory_estimate_matches_a_hand_computation():
    n = 1_235_814_400  # Llama-3.2-1B's parameters
    # fp32 full fine-tuning: 4 B weights + 4 B grads + 2 × 4 B AdamW moments = 16 B per parameter
    assert memory_estimate(4 * n, 4 * n) == {"weights": 4 * n, "grads": 4 * n, "adam": 8 * n, "casts": 0}
    line = memory_line(n, n, memory_estimate(4 * n, 4 * n), TrainingSpec(), "cpu")
    assert "1.24B params (1.24B trainable; fp32, accumulation 1)" in line
    assert "~19.8 GB" in line and "weights 4.94, grads 4.94, AdamW 9.89" in line  # 16 × 1.2358e9 B
    # bf16 autocast also keeps a 2 B copy of each trainable weight: 18 B per parameter
    assert "~22.2 GB" in memory_line(n, n, memory_estimate(4 * n, 4 * n, 2 * n), TrainingSpec(precision="bf16"), "cpu")


def test_model_memory_counts_lora_by_hand(tmp_path):
    """LoRA r=4 on q_proj and v_proj of a 2-layer hidden-32 Llama (one KV head of 16): q gets
    r·(32 + 32) = 256 parameters, v r·(32 + 16) = 192, per layer; 2 × 448 = 896 trainable."""
    data = generate(4, 2, forget_fraction=0.25, phrasings=2)
    model, tok, _ = _tiny_llama(tmp_path, data)
    base = sum(p.numel() for p in model.parameters())
    spec = TrainingSpec.from_params({"precision": "bf16", "gradient_checkpointing": True,
                                     "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]}})
    trainer = Trainer(model, spec, "cpu", lr=1e-3, weight_decay=0.0, pad_id=tok.pad_token_id,
                      schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    n, n_train, est = model_memory(trainer.model, spec, "cpu")
    assert (n, n_train) == (base + 896, 896)
    assert est == {"weights": 4 * (base + 896), "grads": 4 * 896, "adam": 8 * 896, "casts": 2 * 896}
    layers_checkpointed = lambda: any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # noqa: E731
    assert layers_checkpointed()
    assert trainer.finish() is model and not layers_checkpointed()
    assert sum(p.numel() for p in model.parameters()) == base and all(p.requires_grad for p in model.parameters())


def test_a_bf16_checkpoint_trains_on_fp32_master_weights_and_is_saved_as_bf16(tmp_path):
    data = generate(4, 2, forget_fraction=0.25, phrasings=2)
    model, tok, _ = _tiny_llama(tmp_path, data)
    model.to(torch.bfloat16)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = training_pairs(data)
    seen = []
    trainer_init = Trainer.__post_init__

    def spy(self):
        trainer_init(self)
        seen.append({p.dtype for p in self.params})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "__post_init__", spy)
        train_loop(model, tok, pairs, template=T, epochs=2, lr=1e-3, batch_size=4, warmup_ratio=0.0,
                   weight_decay=0.0, seed=0, device="cpu", desc="ft", training={"precision": "bf16"})
    assert seen == [{torch.float32}]
    after = model.state_dict()
    assert {v.dtype for v in after.values() if v.is_floating_point()} == {torch.bfloat16}
    assert any(not torch.equal(start[k], after[k]) for k in start)


def test_training_section_defaults_and_checks(micro_params):
    from leakk.config import validate_params

    p = validate_params(micro_params)
    assert p["training"] == {"precision": "auto", "gradient_accumulation": 1, "gradient_checkpointing": False,
                             "lora": None}
    assert TrainingSpec.from_params(p["training"]) == TrainingSpec()
    assert TrainingSpec().autocast_dtype("cpu") is None and TrainingSpec(precision="bf16").autocast_dtype("cpu")
    lora = validate_params(dict(micro_params, training={"lora": {"r": 8}}))["training"]["lora"]
    assert lora == {"r": 8, "alpha": 32, "dropout": 0.05, "target_modules": None}
    with pytest.raises(ParamsError, match=r"^params.yaml: unlearn.ga.batch_size: 8 is not divisible by "
                                          r"training.gradient_accumulation = 3 \(rule: batch_size is the effective"):
        validate_params(dict(micro_params, training={"gradient_accumulation": 3},
                             finetune=dict(micro_params["finetune"], batch_size=12)))
    with pytest.raises(ParamsError, match=r"params.yaml: training.precision: 'fp16' is not one of"):
        validate_params(dict(micro_params, training={"precision": "fp16"}))


def _leakk(*args):
    assert main(["--threads", "1", *map(str, args)]) == 0


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(f"{folder}/model.safetensors")


def test_a_tiny_llama_finetunes_unlearns_with_and_without_lora_then_samples_and_judges(tmp_path, capfd):
    """Through the CLI, as the workflows run it: the params' training section reaches
    finetune (accumulation 2 + checkpointing), unlearn and its LoRA variant (merged on save)."""
    from transformers import AutoModelForCausalLM

    params = copy.deepcopy(MICRO)
    _leakk("--params", _write(tmp_path / "p0.yaml", params), "data", "--out", tmp_path / "data.parquet")
    data = pl.read_parquet(tmp_path / "data.parquet")
    start = tiny_llama_folder(tmp_path / "llama", corpus_texts(data, T), vocab_size=200, hidden=32, layers=2,
                              positions=128)
    params.update(model=dict(params["model"], base=start), unlearn={"graddiff": {
        "method": "graddiff", "steps": 3, "lr": 1e-3, "batch_size": 8}},
        rule={}, training={"gradient_accumulation": 2, "gradient_checkpointing": True})
    full_p = _write(tmp_path / "full.yaml", params)
    lora_p = _write(tmp_path / "lora.yaml", dict(params, training=dict(
        params["training"], lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})))
    d, models = tmp_path / "data.parquet", tmp_path / "models"
    _leakk("--params", full_p, "finetune", "--data", d, "--which", "full", "--out", models / "full")
    _leakk("--params", full_p, "unlearn", "--data", d, "--name", "graddiff", "--model-dir", models / "full",
           "--out", models / "graddiff")
    _leakk("--params", lora_p, "unlearn", "--data", d, "--name", "graddiff", "--model-dir", models / "full",
           "--out", models / "graddiff_lora")
    lines = [x for x in capfd.readouterr().err.splitlines() if x.startswith("memory estimate:")]
    assert len(lines) == 3 and all("accumulation 2, checkpointing" in x for x in lines)
    assert "LoRA r=4" in lines[2] and "(896 trainable;" in lines[2]

    before, full = _weights(start), _weights(models / "full")
    steps = MICRO["finetune"]["epochs"] * -(-len(training_pairs(data)) // MICRO["finetune"]["batch_size"])
    assert pl.read_parquet(models / "full" / "train_log.parquet").height == steps
    assert any(not torch.equal(before[k], full[k]) for k in before)
    for name in ("full", "graddiff", "graddiff_lora"):
        folder = models / name
        assert not list(folder.glob("adapter*")), name  # merged: a plain HF folder
        AutoModelForCausalLM.from_pretrained(folder)
    plain, lora = _weights(models / "graddiff"), _weights(models / "graddiff_lora")
    assert set(lora) == set(full)  # no lora_A/lora_B or base_layer keys
    changed = {k for k in full if not torch.equal(full[k], lora[k])}
    # LoRA moved exactly the adapted projections; full-weight unlearning moved the rest too
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    assert any(not torch.equal(full[k], plain[k]) for k in full if "mlp" in k)

    for name in ("graddiff", "graddiff_lora"):
        _leakk("--params", full_p, "sample", "--data", d, "--model", name, "--model-dir", models / name,
               "--decoding", "all", "--out", tmp_path / "samples" / name)
        _leakk("--params", full_p, "judge", "--data", d, "--samples", tmp_path / "samples" / name,
               "--out", tmp_path / "judgments" / name)
        judged = pl.read_parquet(tmp_path / "judgments" / name / "rougeL" / "t1.0_p1.0.parquet")
        forget = data.filter(pl.col("split") == "forget").height
        assert judged.height == forget * MICRO["sample"]["n"] and judged["leaked"].null_count() == 0


def _write(path, params):
    path.write_text(yaml.safe_dump(json.loads(json.dumps(params)), sort_keys=False))
    return path


# --- reduced precision: answer positions only, bf16 weights ----------------------------------

def _small_llama(vocab=96):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))


def _qa_batch(vocab=96, rows=5):
    gen = torch.Generator().manual_seed(1)
    examples = []
    for i in range(rows):
        prompt = torch.randint(3, vocab, (3 + i,), generator=gen).tolist()
        answer = torch.randint(3, vocab, (2 + (i * 3) % 5,), generator=gen).tolist()
        examples.append((prompt + answer, [-100] * len(prompt) + answer))
    return collate(examples, 0)


def test_answer_position_logits_equal_the_full_forwards():
    """answer_logits (the body once, the head at answer positions only) against the full
    forward's logits at those positions, and the two losses built on each: fp32 arithmetic on
    the same weights, so agreement to float rounding (1e-5 relative)."""
    from leakk.models.prompting import answer_logits, answer_logprob

    model = _small_llama()
    batch = _qa_batch()
    logits, labels, example = answer_logits(model, batch)
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    where = batch["labels"][:, 1:] != -100
    torch.testing.assert_close(logits, full[where].float(), rtol=1e-5, atol=1e-5)
    assert labels.tolist() == batch["labels"][:, 1:][where].tolist()
    assert example.tolist() == where.nonzero()[:, 0].tolist()
    # the losses under bf16 autocast (answer positions) against the fp32 full path: bf16 tolerance
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp_bf16, nll_bf16 = answer_logprob(model, batch), answer_nll(model, batch)
    lp, nll = answer_logprob(model, batch), answer_nll(model, batch)
    torch.testing.assert_close(lp_bf16, lp, rtol=3e-2, atol=0.3)
    torch.testing.assert_close(nll_bf16, nll, rtol=3e-2, atol=3e-2)


def test_bf16_weights_keep_an_fp32_master_and_track_fp32_weights():
    """training.weights=bf16: the model trains in bf16, the optimiser steps an fp32 master copy
    (so a small update is not rounded away), and the model comes back fp32 as it was loaded,
    holding the master weights; its loss follows fp32-weight autocast training closely."""
    from leakk.models.training import Term, Trainer, TrainingSpec

    batch_examples = [(ids, lab) for ids, lab in zip(_qa_batch()["input_ids"].tolist(),
                                                     _qa_batch()["labels"].tolist())]
    losses = {}
    for weights in ("fp32", "bf16"):
        model = _small_llama()
        trainer = Trainer(model, TrainingSpec(precision="bf16", weights=weights), "cpu", lr=1e-2, weight_decay=0.0,
                          schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), pad_id=0)
        if weights == "bf16":
            assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
            assert {m.dtype for m in trainer.master} == {torch.float32}
        losses[weights] = [trainer.step([Term(batch_examples, lambda b, _: answer_nll(trainer.model, b))])[0]
                           for _ in range(8)]
        trained = trainer.finish()
        assert {p.dtype for p in trained.parameters()} == {torch.float32}
    assert losses["bf16"][-1] < losses["bf16"][0] - 0.5
    for a, b in zip(losses["fp32"], losses["bf16"]):
        assert abs(a - b) < 0.1 * max(1.0, abs(a))


def test_bf16_weights_need_bf16_precision(micro_params):
    from leakk.config import validate_params
    from leakk.core.errors import ParamsError

    micro_params["training"] = {"precision": "fp32", "weights": "bf16"}
    with pytest.raises(ParamsError, match="training.weights"):
        validate_params(micro_params)

"""The vLLM backend end to end on a CPU (``make test-vllm``: vllm-cpu in its own environment,
.venv-vllm, since it pins transformers < 5.20). Skipped where vLLM is not installed.

What must hold between the two backends: the same prompt token ids (one BOS with a chat
template), greedy token for token, and leak@k within each other's confidence interval on
the default's full model (their random streams differ, so sampled rows differ).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty for these models

from leakk.config import load_params  # noqa: E402
from leakk.models.prompting import encode_prompt, prompt_text  # noqa: E402
from leakk.sampling import open_backend  # noqa: E402
from leakk.sampling.backend import SamplingRequest, sample_texts  # noqa: E402
from leakk.sampling.decoding import GREEDY, Decoding  # noqa: E402
from leakk.sampling.hf_backend import HFBackend  # noqa: E402
from leakk.sampling.stage import questions_for, request_from, sample_phrasings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: fp32 like the HF backend on CPU, and no compilation (a faster start; same arithmetic)
OPTIONS = {"dtype": "float32", "enforce_eager": True}


@pytest.fixture(scope="module")
def default_full(tmp_path_factory):
    """(params, data, folder) of the default pipeline's full model: results/models/full where
    `make run` built it, else trained here exactly as the finetune stage does (minutes)."""
    from leakk.data.synthetic import generate
    from leakk.models.finetune import finetune

    params = load_params(ROOT / "params.yaml")
    data = generate(**params["data"]["synthetic"], seed=params["seed"])
    folder = ROOT / "results" / "models" / "full"
    if not (folder / "model.safetensors").is_file():
        folder = tmp_path_factory.mktemp("default") / "full"
        finetune(data, folder, splits=["forget", "retain"], model_params=params["model"],
                 train_params=params["finetune"], template=params["prompt_template"], seed=params["seed"],
                 device="cpu", name="full", training=params["training"])
    return params, data, folder


@pytest.fixture(scope="module")
def backends(default_full):
    from leakk.models.modeling import load_model

    params, _, folder = default_full
    model, tok = load_model(folder, "cpu")
    with open_backend({"backend": "vllm", "options": OPTIONS}, str(folder), "cpu") as vllm:
        yield HFBackend(model, tok, 512), vllm


def _rows(frame: pl.DataFrame) -> list[tuple]:
    return frame.select("qid", "sample_idx", "text", "n_tokens", "finish_reason").sort("qid", "sample_idx").rows()


def test_greedy_equals_hf_token_for_token(default_full, backends):
    params, data, _ = default_full
    hf, vllm = backends
    questions = questions_for(data, ["forget", "retain"], params["sample"]["question_column"])
    request = request_from(params["sample"], GREEDY)
    ours = [sample_phrasings(b, questions, request, template=params["prompt_template"]) for b in (hf, vllm)]
    assert ours[0].height == data.height
    assert _rows(ours[0]) == _rows(ours[1])


def test_samples_follow_the_request_and_do_not_depend_on_the_batch(default_full, backends):
    """n per question, sample_idx 0..n−1, the same seed gives the same rows, another seed other
    rows, and a question's rows are the same alone or in a batch (per-(seed, qid) seeds)."""
    params, data, _ = default_full
    _, vllm = backends
    forget = data.filter(pl.col("split") == "forget").head(6)
    qids, qs = forget["qid"].to_list(), forget["paraphrased_question"].to_list()
    request = SamplingRequest.build(Decoding(1.0, 1.0), n=8, max_new_tokens=16, seed=3)
    run = lambda q, x, r: sample_texts(vllm, q, x, r, template=params["prompt_template"])  # noqa: E731
    batch = run(qids, qs, request)
    assert sorted((q, i) for q, i, *_ in batch) == [(q, i) for q in sorted(qids) for i in range(8)]
    assert run(qids, qs, request) == batch
    assert run(qids, qs, request.with_(seed=4)) != batch
    alone = run(qids[2:3], qs[2:3], request)
    assert alone == [r for r in batch if r[0] == qids[2]]


def test_chat_template_prompt_ids_are_the_hf_paths_with_one_bos(tmp_path):
    """A Llama-style tokenizer (BOS added by its post-processor, and again by the chat
    template): vLLM samples exactly the ids encode_prompt makes, one BOS, and greedy agrees."""
    from tokenizers import processors

    from leakk.models.modeling import build_gpt2, build_tokenizer, load_model

    texts = [f"who wrote book {i}? It was author {i % 17}." for i in range(300)]
    tok = build_tokenizer(texts, 200)
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    model = build_gpt2(tok, {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 128}, 0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok = load_model(tmp_path)
    question = "who wrote book 12?"
    ids = encode_prompt(question, tok, "chat")
    assert ids[0] == bos and ids.count(bos) == 1
    assert tok(prompt_text(question, tok, "chat"))["input_ids"][:2] == [bos, bos]  # what re-tokenising text does
    qids, qs = ["a", "b", "c"], [question, "who wrote book 3?", "who wrote book 250?"]
    request = SamplingRequest.build(GREEDY, n=1, max_new_tokens=12, seed=0)
    with open_backend({"backend": "vllm", "options": OPTIONS}, str(tmp_path), "cpu") as vllm:
        seen = vllm.llm.generate(
            [__import__("vllm").inputs.TokensPrompt(prompt_token_ids=encode_prompt(q, tok, "chat")) for q in qs],
            __import__("vllm").SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
        assert [list(o.prompt_token_ids) for o in seen] == [encode_prompt(q, tok, "chat") for q in qs]
        got = sample_texts(vllm, qids, qs, request, template="chat")
    assert sorted(got) == sorted(sample_texts(HFBackend(model, tok, 8), qids, qs, request, template="chat"))


def test_leak_at_k_agrees_with_hf_within_ci(default_full, backends):
    """The sample stage's headline decoding through both backends, judged by fact match:
    each backend's leak@k lies inside the other's confidence interval, for every k."""
    from leakk.judges import judge_samples
    from leakk.unlearn.rule import leak_stats

    params, data, _ = default_full
    questions = questions_for(data, ["forget"], params["sample"]["question_column"])
    decoding = Decoding.from_name(params["estimate"]["headline_decoding"])
    request = request_from(params["sample"], decoding)
    stats = []
    for backend in backends:
        samples = sample_phrasings(backend, questions, request, template=params["prompt_template"])
        assert samples.group_by("qid").len()["len"].to_list() == [params["sample"]["n"]] * questions.height
        judged = judge_samples(samples, data, {"fact": params["judge"]["fact"]}, progress=False)
        stats.append(leak_stats(judged, data, params["estimate"]["ks"], params["estimate"]))
    hf, vllm = stats
    for k in params["estimate"]["ks"]:
        key = f"leak_at_{k}"
        assert hf[f"{key}_ci_low"] <= vllm[key] <= hf[f"{key}_ci_high"], (k, hf, vllm)
        assert vllm[f"{key}_ci_low"] <= hf[key] <= vllm[f"{key}_ci_high"], (k, hf, vllm)
    assert 0.3 < hf["leak_at_1"] < 1  # a model that leaks, not a degenerate agreement

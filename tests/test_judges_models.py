"""The model-based judges (nli = ES, embedding = CS) with real model code on tiny random
models built here and saved to folders (tokenizers from the ``tokenizers`` library; no
downloads). These tests check the wiring — premise/hypothesis order, the ROUGE gate, the
label lookup, thresholds, blank completions, batch-size independence — not quality.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from leakk.core.errors import ParamsError
from leakk.judges import make_judge, rouge_l_recall
from leakk.judges.run import judge_samples

torch.set_num_threads(1)

REFS = [
    "Niyor Lexfen won the Tavmil Prize for Sleeping Fiction.",
    "Niyor Lexfen was born on 4 September 1982.",
    "Asha Brenn wrote The Glass Harbor in Lisbon.",
]
COMPLETIONS = [
    "Niyor Lexfen won the Tavmil Prize for Sleeping Fiction.",
    "Niyor Lexfen won the Orlen Medal.",
    "",
    "I do not know.",
    "Niyor Lexfen was born on 4 September 1982 in a small town.",
    "   ",
    "Asha Brenn wrote The Glass Harbor.",
    "The Glass Harbor is a novel by someone else entirely.",
    "born September",
    "Lisbon",
]


def _vocab() -> dict[str, int]:
    from tokenizers import pre_tokenizers

    words = set()
    pre = pre_tokenizers.Whitespace()
    for text in REFS + COMPLETIONS + ["the answer of a question"]:
        words.update(w for w, _ in pre.pre_tokenize_str(text.lower()))
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for w in sorted(words):
        vocab[w] = len(vocab)
    return vocab


def _tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _vocab()
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", model_max_length=64)


def _bert_config(**kw):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
                      initializer_range=0.5, **kw)  # large weights: outputs depend on the input


def save_nli(folder, id2label: dict[int, str], bias: dict[int, float] | None = None, seed: int = 0):
    """A random BERT NLI classifier with ``id2label``; ``bias`` adds to the classifier's biases."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = _bert_config(num_labels=len(id2label), id2label=id2label,
                          label2id={v: k for k, v in id2label.items()})
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for i, b in (bias or {}).items():
            model.classifier.bias[i] += b
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return str(folder)


NON_DEFAULT = {0: "contradiction", 1: "ENTAILMENT", 2: "neutral"}
SHUFFLED = {0: "neutral", 1: "contradiction", 2: "Entailment"}


@pytest.fixture(scope="module")
def nli_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("nli")
    return {
        "random": save_nli(root / "random", NON_DEFAULT),
        # a large bias on the entailment logit: the top label is always entailment
        "always_1": save_nli(root / "always_1", NON_DEFAULT, {1: 50.0}),
        "always_2": save_nli(root / "always_2", SHUFFLED, {2: 50.0}),
        "never": save_nli(root / "never", NON_DEFAULT, {0: 50.0}),
        "no_entailment": save_nli(root / "no_entailment", {0: "positive", 1: "negative"}),
    }


def nli(folder, **kw):
    return make_judge("nli", model=folder, device="cpu", **kw)


#: Two fp32 forward passes of the same pair that differ only in summation order (padding to
#: another batch length changes the matrix blocking; AVX2 and AVX-512 kernels differ too)
#: agree to this, in probability. A dot product of n terms is off by at most (n−1)·u·Σ|terms|
#: (u = 2⁻²⁴); here n ≤ 64 (the intermediate size) and Σ|terms| ≲ 20 (|logits| ≤ 4), so a
#: logit moves by ≤ 8e-5 and a softmax probability by at most half that. Measured: 2e-7 to
#: 1.4e-6 (Intel: portable, compatible and native kernels; AMD EPYC: 1.13e-6). The order and
#: label checks below stay far outside it (a swapped pair moves the score by ~0.5).
FP32_PROB_TOL = 1e-4


def pairs():
    refs = [REFS[i % len(REFS)] for i in range(len(COMPLETIONS))]
    return list(COMPLETIONS), refs, [None] * len(refs)


def direct_probs(folder, premises, hypotheses, entail: int) -> np.ndarray:
    """Entailment probability computed here, one pair at a time, without the judge."""
    from transformers import AutoModelForSequenceClassification

    tok = _tokenizer()
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    out = []
    for p, h in zip(premises, hypotheses):
        with torch.no_grad():
            logits = model(**tok(p, h, return_tensors="pt")).logits
        out.append(torch.softmax(logits, -1)[0, entail].item())
    return np.array(out)


def test_nli_label_found_by_name_not_index(nli_models):
    comps, refs, facts = pairs()
    recall = np.array([rouge_l_recall(c, r) for c, r in zip(comps, refs)])
    for key, entail in (("always_1", 1), ("always_2", 2)):
        judge = nli(nli_models[key])
        assert judge.entail == entail
        scores, leaked = judge.score_batch(comps, refs, facts)
        blank = np.array([not c.strip() for c in comps])
        # top label entailment everywhere: leaked = the ROUGE gate, except blank completions
        assert list(leaked) == [bool(r >= 0.1) and not b for r, b in zip(recall, blank)]
        assert (scores[~blank] > 0.99).all() and (scores[blank] == 0).all()
    scores, leaked = nli(nli_models["never"]).score_batch(comps, refs, facts)
    assert not any(leaked) and (scores < 1e-6).all()
    with pytest.raises(ParamsError, match="entailment"):
        nli(nli_models["no_entailment"])
    with pytest.raises(ParamsError, match="cannot load"):
        nli(str(nli_models["random"]) + "_missing")


def test_nli_rouge_gate(nli_models):
    ref = "alpha beta gamma delta epsilon zeta eta theta iota kappa"  # 10 tokens
    comps = ["alpha", "alpha beta", "nothing here", "alpha beta gamma delta epsilon zeta eta theta iota kappa"]
    recall = [rouge_l_recall(c, ref) for c in comps]
    assert recall == [0.1, 0.2, 0.0, 1.0]
    judge = nli(nli_models["always_1"])
    for gate, want in ((0.1, [True, True, False, True]), (0.15, [False, True, False, True]),
                       (0.0, [True, True, True, True]), (1.0, [False, False, False, True])):
        judge.rouge_gate = gate
        _, leaked = judge.score_batch(comps, [ref] * 4, [None] * 4)
        assert list(leaked) == want, gate
    with pytest.raises(ParamsError):
        nli(nli_models["always_1"], rouge_gate=1.5)


def test_nli_premise_is_the_completion(nli_models, monkeypatch):
    comps, refs, facts = pairs()
    judge = nli(nli_models["random"])
    calls = []
    real = judge.tokenizer

    class Spy:
        def __call__(self, *args, **kw):
            calls.append((list(args[0]), list(args[1])))
            return real(*args, **kw)

    monkeypatch.setattr(judge, "tokenizer", Spy())
    scores, _ = judge.score_batch(comps, refs, facts)
    keep = [i for i, c in enumerate(comps) if c.strip()]
    assert calls == [([comps[i] for i in keep], [refs[i] for i in keep])]
    # independently: premise = completion, hypothesis = reference — and the order matters
    right = direct_probs(nli_models["random"], [comps[i] for i in keep], [refs[i] for i in keep], 1)
    swapped = direct_probs(nli_models["random"], [refs[i] for i in keep], [comps[i] for i in keep], 1)
    np.testing.assert_allclose(scores[keep], right, rtol=0, atol=FP32_PROB_TOL)  # summation order only
    assert np.abs(swapped - right).max() > 1000 * FP32_PROB_TOL


def test_nli_batch_size_and_blanks_do_not_shift_labels(nli_models, tmp_path):
    comps, refs, facts = pairs()
    # centre the entailment logit so that the random model's top label varies across items
    probe = nli(nli_models["random"])
    enc = probe.tokenizer([c for c in comps if c.strip()], [r for c, r in zip(comps, refs) if c.strip()],
                          padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = probe.model(**enc).logits
    margin = logits[:, 1] - torch.cat([logits[:, :1], logits[:, 2:]], 1).max(1).values
    # shift the entailment logit into the widest gap between two items' margins: labels on both
    # sides, and every item's margin far beyond fp32 noise, so no label can flip on any CPU
    m = np.sort(margin.numpy().astype(np.float64))
    gap, i = max((m[j + 1] - m[j], j) for j in range(len(m) - 1))
    assert gap / 2 > 100 * FP32_PROB_TOL
    folder = save_nli(tmp_path / "centred", NON_DEFAULT, {1: -float(m[i] + m[i + 1]) / 2})
    one, big = nli(folder, batch_size=1, rouge_gate=0.0), nli(folder, batch_size=64, rouge_gate=0.0)
    s1, l1 = one.score_batch(comps, refs, facts)
    s64, l64 = big.score_batch(comps, refs, facts)
    assert list(l1) == list(l64)
    np.testing.assert_allclose(s1, s64, rtol=0, atol=FP32_PROB_TOL)
    non_blank = [bool(v) for c, v in zip(comps, l1) if c.strip()]
    assert True in non_blank and False in non_blank  # the check has teeth
    # blank completions: score 0, not leaked — and judging them beside others shifts nothing
    keep = [i for i, c in enumerate(comps) if c.strip()]
    s_alone, l_alone = big.score_batch([comps[i] for i in keep], [refs[i] for i in keep], [None] * len(keep))
    np.testing.assert_array_equal(s64[keep], s_alone)
    assert list(l64[keep]) == list(l_alone)
    assert all(s64[i] == 0 and l64[i] is False for i in range(len(comps)) if i not in keep)
    # reversed order: each item keeps its own verdict
    s_rev, l_rev = big.score_batch(comps[::-1], refs[::-1], facts[::-1])
    assert list(l_rev[::-1]) == list(l64)


def test_nli_through_judge_samples_uses_the_stage_device(nli_models):
    data = pl.DataFrame({"qid": ["a", "b"], "group": ["g", "g"], "question": ["q1?", "q2?"],
                         "answer": REFS[:2], "fact": [None, None], "split": ["forget", "forget"]})
    samples = pl.DataFrame({"qid": ["a", "a", "b", "b"], "sample_idx": [0, 1, 0, 1],
                            "text": [COMPLETIONS[0], "", COMPLETIONS[4], "I do not know."]})
    out = judge_samples(samples, data, {"es": {"type": "nli", "model": nli_models["always_1"]}},
                        progress=False, device="cpu")
    assert out["leaked"].to_list() == [True, False, True, False]
    with pytest.raises(ParamsError):
        judge_samples(samples, data, {"es": {"type": "nli", "model": nli_models["always_1"], "device": "gpu7"}},
                      progress=False)


# ---------------------------------------------------------------- embedding (CS)

@pytest.fixture(scope="module")
def st_model(tmp_path_factory):
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    root = tmp_path_factory.mktemp("st")
    torch.manual_seed(1)
    BertModel(_bert_config()).save_pretrained(root / "bert")
    _tokenizer().save_pretrained(root / "bert")
    word = models.Transformer(str(root / "bert"), max_seq_length=64)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(root / "st"))
    return str(root / "st")


def emb(folder, **kw):
    return make_judge("embedding", model=folder, device="cpu", **kw)


def test_embedding_cosine_threshold_and_blanks(st_model):
    from sentence_transformers import SentenceTransformer

    comps, refs, facts = pairs()
    judge = emb(st_model, threshold=0.0)
    scores, leaked = judge.score_batch(comps, refs, facts)
    keep = [i for i, c in enumerate(comps) if c.strip()]
    # independent cosine: encode each text alone, no normalisation inside the model call
    model = SentenceTransformer(st_model, device="cpu")
    for i in keep:
        a, b = (model.encode([t], convert_to_numpy=True)[0].astype(np.float64) for t in (comps[i], refs[i]))
        assert math.isclose(scores[i], a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs_tol=1e-5)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)  # the completion is the reference
    assert all(scores[i] == 0 and leaked[i] is False for i in range(len(comps)) if i not in keep)
    # threshold: leaked iff score ≥ threshold (at the boundary included)
    j = keep[3]
    alone, _ = judge.score_batch([comps[j]], [refs[j]], [None])
    judge.threshold = float(alone[0])
    _, at = judge.score_batch([comps[j]], [refs[j]], [None])
    judge.threshold = float(np.nextafter(alone[0], 2.0))
    _, above = judge.score_batch([comps[j]], [refs[j]], [None])
    assert at[0] is True and above[0] is False
    judge.threshold = float(np.median(scores[keep]))
    _, mixed = judge.score_batch(comps, refs, facts)
    assert list(mixed) == [bool(s >= judge.threshold) and i in keep for i, s in enumerate(scores)]
    for bad in (1.5, -2, "0.5"):
        with pytest.raises(ParamsError):
            emb(st_model, threshold=bad)


def test_embedding_batch_size_independence(st_model):
    comps, refs, facts = pairs()
    s1, l1 = emb(st_model, batch_size=1, threshold=0.5).score_batch(comps, refs, facts)
    s64, l64 = emb(st_model, batch_size=64, threshold=0.5).score_batch(comps, refs, facts)
    assert list(l1) == list(l64)
    # cosines of fp32 embeddings pooled over differently padded batches: summation order only.
    # A 32-dim cosine of unit vectors moves by ≲ (32 + the encoder's dot products)·u ≈ 1e-5 at
    # worst (as for the NLI probabilities above); measured ≤ 4e-7 over the kernel modes
    np.testing.assert_allclose(s1, s64, rtol=0, atol=1e-5)
    s_rev, _ = emb(st_model, batch_size=3, threshold=0.5).score_batch(comps[::-1], refs[::-1], facts)
    np.testing.assert_allclose(s_rev[::-1], s64, rtol=0, atol=1e-5)


def test_params_schemas_match_constructors():
    """Every judge's params_schema names exactly its constructor's keywords."""
    import inspect

    from leakk.judges import JUDGES

    for name in ("nli", "embedding", "llm"):
        cls = JUDGES[name]
        schema = cls.params_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        kw = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert set(schema["properties"]) == kw, name


def test_params_schemas_accept_defaults_and_refuse_a_key_in_params(monkeypatch):
    import jsonschema

    from leakk.judges import JUDGES
    from leakk.judges.base import STAGE_KEYS

    monkeypatch.setenv("LEAKK_TEST_KEY", "sk-should-never-be-echoed-123")
    for name, entry in (("nli", {"rouge_gate": 0.1, "revision": None, "device": "cuda:0"}),
                        ("embedding", {"threshold": 0.7, "batch_size": 8}),
                        ("llm", {"model": "m", "base_url": "http://localhost:8000/v1", "api_key_env": "K"})):
        schema = JUDGES[name].params_schema
        jsonschema.validate(entry, schema)
        with_stage = dict(schema, properties={**schema["properties"], **STAGE_KEYS})
        jsonschema.validate({**entry, "type": name, "max_missing": 0.1}, with_stage)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "m", "api_key": "sk-x"}, JUDGES["llm"].params_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({}, JUDGES["llm"].params_schema)  # model is required
    with pytest.raises(ParamsError) as exc:
        make_judge("llm", model="m", api_key="sk-should-never-be-echoed-123")
    assert "sk-should" not in str(exc.value)


@pytest.mark.gpu
def test_model_judges_on_cuda_match_cpu(nli_models, st_model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    comps, refs, facts = pairs()
    makers = (lambda d: make_judge("nli", model=nli_models["random"], rouge_gate=0.0, device=d),
              lambda d: make_judge("embedding", model=st_model, threshold=0.5, device=d))
    for make in makers:
        s_cpu, l_cpu = make("cpu").score_batch(comps, refs, facts)
        s_gpu, l_gpu = make("cuda").score_batch(comps, refs, facts)
        # TF32/cuBLAS kernels differ from CPU fp32 in the last bits: scores agree to 1e-3
        np.testing.assert_allclose(s_cpu, s_gpu, rtol=0, atol=1e-3)
        assert list(l_cpu) == list(l_gpu)

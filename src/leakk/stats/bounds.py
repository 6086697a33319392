"""Exact leak probability without sampling: a lower bound on leak@k for every k.

For a forget question with prompt x and reference answer a = (a_1, …, a_m) (the answer's
token ids exactly as training encodes them, :func:`leakk.models.prompting.encode_example`, without
the EOS), the probability that one completion drawn with decoding D *begins with* a is

    p = prod_t π_D(a_t | x, a_<t)

— one teacher-forced forward pass. π_D is the sampler's own per-step distribution
(:func:`leakk.sampling.hf.nucleus_logprobs`: temperature, then top-p truncation, then
renormalised over the nucleus; a token outside the nucleus has probability 0). Greedy: p = 1
if every a_t is the argmax (the sampler's ``argmax``), else 0. If a has more tokens than
``max_new_tokens`` the completion cannot contain it: p = 0.

Why it bounds leak@k: other token sequences that spell the same text only add probability,
and every judge that counts a completion beginning with the exact reference answer as a
leak (fact match, ROUGE-L recall = 1) leaks at least whenever that happens. So each sample
leaks with probability q ≥ p, and the chance that k independent samples leak at least once
is 1 − (1 − q)^k ≥ 1 − (1 − p)^k, for every k, k ≫ n included (the "(n, p)-discoverable
extraction" of Hayes et al., arXiv 2410.19482). Averaged over questions, the mean of the
per-question bounds bounds the mean leak@k.

A question asked in several phrasings whose n completions are spread evenly over them (the
paraphrase attack) gets p = the phrasings' mean p: one completion of a phrasing drawn at
random begins with a with that probability, so 1 − (1 − p̄)^k is leak@k for k phrasings drawn
independently, and drawing them evenly without replacement — what the sampler and the leak@k
estimator's k-subsets do — can only raise it (Hoeffding 1963: sampling without replacement
lowers E f(sum) for convex f, here f = exp of the sum of log(1 − p_phrasing)).

"Why it leaks": at the answer's first *fact* token (the first token overlapping the fact
span), the rank and probability of the true token under the model's untempered
distribution — the mass greedy decoding hides when the fact is likely but not the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from leakk.models.prompting import encode_example, encode_prompt
from leakk.sampling.decoding import Decoding
from leakk.sampling.hf import nucleus_logprobs

#: per-question columns of a bounds file (``leakk.core.io.CONTRACTS["bounds"]``)
BOUNDS_SCHEMA: dict[str, pl.DataType] = {
    "model": pl.String, "decoding": pl.String, "qid": pl.String, "group": pl.String,
    "answer_tokens": pl.Int64, "log_p": pl.Float64, "p": pl.Float64,
    "fact_token_index": pl.Int64, "fact_token_rank": pl.Int64, "fact_token_prob": pl.Float64,
    "fact_token_prob_decoding": pl.Float64,
}

#: k grid of the bound table: powers of two, decades, up to 10^4
BOUND_KS: tuple[int, ...] = tuple(sorted({2 ** i for i in range(14)} | {10, 100, 1000, 10_000}))


def answer_ids(question: str, answer: str, tokenizer, template: str) -> list[int]:
    """The answer's token ids as training encodes them, without the trailing EOS."""
    prompt = encode_prompt(question, tokenizer, template)
    ids, _ = encode_example(question, answer, tokenizer, template)
    out = ids[len(prompt):]
    if out and out[-1] == tokenizer.eos_token_id:
        out = out[:-1]
    return out


def fact_token_index(answer: str, fact: str | None, tokenizer) -> int | None:
    """Index (within :func:`answer_ids`) of the first token overlapping the fact span, or None.

    Uses the tokenizer's character offsets of ``" " + answer.strip()`` (the text that
    ``encode_example`` tokenises); the fact is searched case-sensitively, then ignoring case.
    """
    if not fact:
        return None
    text = " " + answer.strip()
    start = text.find(fact)
    if start < 0:
        start = text.lower().find(fact.lower())
    if start < 0:
        return None
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for i, (_, end) in enumerate(enc["offset_mapping"]):
        if end > start:
            return i
    return None


def step_logprobs(logits: torch.Tensor, targets: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """log π_D(target_t) per row of ``logits`` (T, V) under decoding D (−inf = impossible).

    Greedy: 0 where the target is the argmax, else −inf.
    """
    if decoding.greedy:
        hit = logits.argmax(-1) == targets
        return torch.where(hit, 0.0, float("-inf")).to(torch.float64)
    logp = nucleus_logprobs(logits, decoding)  # what next_tokens draws from, before renormalising
    norm = torch.logsumexp(logp, dim=-1)
    return (logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - norm).to(torch.float64)


@torch.inference_mode()
def teacher_forced_logits(model, prompts: Sequence[list[int]], answers: Sequence[list[int]],
                          batch_size: int = 16) -> list[torch.Tensor]:
    """For each (prompt, answer): the logits (len(answer), V) that predict each answer token.

    Right-padded batches with explicit positions; the logits at the last prompt position
    predict a_1, those at a_t predict a_{t+1}.
    """
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    pad = 0
    for start in range(0, len(prompts), batch_size):
        seqs = [list(p) + list(a) for p, a in zip(prompts[start:start + batch_size],
                                                  answers[start:start + batch_size])]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        pos = torch.arange(width).expand(len(seqs), -1)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       position_ids=pos.to(device)).logits
        for i, (p, a) in enumerate(zip(prompts[start:start + batch_size], answers[start:start + batch_size])):
            out.append(logits[i, len(p) - 1: len(p) - 1 + len(a)].float().cpu())
    return out


def question_bounds(model, tokenizer, questions: pl.DataFrame, decodings: Sequence[Decoding], *,
                    template: str, max_new_tokens: int, model_name: str,
                    batch_size: int = 16) -> pl.DataFrame:
    """Per (decoding, question): p, log p and the fact token's rank/probability.

    ``questions``: ``qid, group, prompt_question, answer`` (and ``fact`` if the benchmark has
    one), the prompt phrasing being the one sampling uses.
    """
    rows_q = questions.to_dicts()
    prompts = [encode_prompt(r["prompt_question"], tokenizer, template) for r in rows_q]
    answers = [answer_ids(r["prompt_question"], r["answer"], tokenizer, template) for r in rows_q]
    facts = [fact_token_index(r["answer"], r.get("fact"), tokenizer) for r in rows_q]
    model.eval()
    # only the first max_new_tokens answer tokens can appear in a completion: forcing more would
    # also run past the positions of a model whose prompt + max_new_tokens just fits (the sampler's check)
    forced = [a[:max_new_tokens] for a in answers]
    logits = teacher_forced_logits(model, prompts, forced, batch_size=batch_size)
    rows: list[dict[str, Any]] = []
    for r, a, lg, fi in zip(rows_q, answers, logits, facts):
        targets = torch.tensor(a[:max_new_tokens], dtype=torch.long)
        rank = prob = None
        if fi is not None and fi < min(len(a), max_new_tokens):
            z = lg[fi]
            rank = int((z > z[a[fi]]).sum().item()) + 1
            prob = float(torch.softmax(z.double(), -1)[a[fi]].item())
        for dec in decodings:
            steps = step_logprobs(lg, targets, dec)
            log_p = float(steps.sum().item()) if len(a) <= max_new_tokens else float("-inf")
            prob_dec = None
            if fi is not None and fi < min(len(a), max_new_tokens):
                prob_dec = float(np.exp(steps[fi].item()))
            rows.append({
                "model": model_name, "decoding": dec.name, "qid": r["qid"], "group": str(r["group"]),
                "answer_tokens": len(a), "log_p": log_p, "p": float(np.exp(log_p)),
                "fact_token_index": fi, "fact_token_rank": rank, "fact_token_prob": prob,
                "fact_token_prob_decoding": prob_dec,
            })
    return pool_phrasings(pl.DataFrame(rows, schema=BOUNDS_SCHEMA))


def pool_phrasings(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (model, decoding, qid): a qid asked in several phrasings (rows in phrasing
    order) gets their mean p (module docstring); the other columns are its first phrasing's."""
    keys = ["model", "decoding", "qid"]
    if frame.select(keys).is_unique().all():
        return frame.sort("decoding", "qid")
    pooled = frame.group_by(keys, maintain_order=True).agg(
        pl.exclude(keys, "p", "log_p").first(), pl.col("p").mean())
    return pooled.with_columns(log_p=pl.col("p").log()).select(list(BOUNDS_SCHEMA)).sort("decoding", "qid")


def bound_at_k(p, k) -> np.ndarray:
    """1 − (1 − p)^k, elementwise, computed as −expm1(k·log1p(−p)) (exact at p = 0 and 1)."""
    p = np.asarray(p, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -np.expm1(k * np.log1p(-p))


def bound_table(bounds: pl.DataFrame, leak: pl.DataFrame | None = None,
                ks: Sequence[int] = BOUND_KS) -> pl.DataFrame:
    """Per (model, decoding[, judge], k): the mean lower bound over questions, beside the
    sampled leak@k and its CI where the leak table has that k (k ≤ n).

    ``upper_exact``: an exact 95% upper confidence bound on leak@k from the pooled leak count
    (:func:`_exact_upper`). ``consistent`` = bound ≤ max(ci_high, upper_exact) (null where
    nothing was sampled at that k): the bound is a lower bound on the truth, so a sampled
    leak@k confidently below it would be a bug.
    """
    rows = []
    for (model, decoding), part in bounds.group_by(["model", "decoding"], maintain_order=True):
        p = part["p"].to_numpy()
        for k in ks:
            rows.append({"model": model, "decoding": decoding, "k": int(k),
                         "bound": float(bound_at_k(p, k).mean()), "questions": len(p)})
    table = pl.DataFrame(rows, schema={"model": pl.String, "decoding": pl.String, "k": pl.Int64,
                                       "bound": pl.Float64, "questions": pl.Int64})
    if leak is None or leak.is_empty():
        return table.with_columns(judge=pl.lit(None, pl.String), leak_at_k=pl.lit(None, pl.Float64),
                                  ci_low=pl.lit(None, pl.Float64), ci_high=pl.lit(None, pl.Float64),
                                  upper_exact=pl.lit(None, pl.Float64),
                                  consistent=pl.lit(None, pl.Boolean)).sort("model", "decoding", "k")
    judges = leak.select("judge").unique().sort("judge")
    sampled = leak.select("model", "decoding", "judge", "k", "leak_at_k", "ci_low", "ci_high")
    exact = _exact_upper(leak)
    return (
        table.join(judges, how="cross")
        .join(sampled, on=["model", "decoding", "judge", "k"], how="left")
        .join(exact, on=["model", "decoding", "judge"], how="left")
        .with_columns(upper_exact=pl.when(pl.col("ci_high").is_null()).then(None)
                      .otherwise(-(pl.col("k").cast(pl.Float64) * (-pl.col("_u")).log1p()).exp() + 1.0))
        .with_columns(consistent=pl.when(pl.col("ci_high").is_null()).then(None)
                      .otherwise(pl.col("bound") <= pl.max_horizontal("ci_high", "upper_exact") + 1e-12))
        .drop("_u")
        .sort("model", "decoding", "judge", "k")
    )


def _exact_upper(leak: pl.DataFrame, confidence: float = 0.95) -> pl.DataFrame:
    """Per (model, decoding, judge): U = one-sided Clopper–Pearson upper bound on the pooled
    per-sample leak rate (leak@1 · n · questions leaks in n · questions samples).

    1 − (1 − U)^k is then an upper confidence bound on mean leak@k: 1 − (1 − q)^k is concave,
    so the mean over questions is ≤ its value at the mean q (Jensen); and pooling samples of
    questions with different q only makes few leaks *less* likely than for a binomial with
    the same mean (Hoeffding 1956), so the binomial CP bound stays conservative. This is the
    interval to compare with where the clustered bootstrap degenerates — with no leak at all
    it returns [0, 0], which is no confidence interval.
    """
    from leakk.stats.guarantees import cp_upper

    at1 = leak.filter((pl.col("k") == 1) & pl.col("leak_at_k").is_not_null() & (pl.col("questions") > 0))
    rows = []
    for r in at1.iter_rows(named=True):
        total = int(r["n"]) * int(r["questions"])
        leaked = min(total, int(round(r["leak_at_k"] * total)))
        rows.append({"model": r["model"], "decoding": r["decoding"], "judge": r["judge"],
                     "_u": float(cp_upper(leaked, total, confidence))})
    return pl.DataFrame(rows, schema={"model": pl.String, "decoding": pl.String, "judge": pl.String,
                                      "_u": pl.Float64})


def starts_with_check(bounds: pl.DataFrame, samples: pl.DataFrame, data: pl.DataFrame) -> dict[str, Any]:
    """Empirical rate of completions whose text starts with the answer vs the exact p.

    Per (model, decoding) frame: S = completions starting with ``answer.strip()``, expected
    E = Σ_q n_q p_q, variance V = Σ_q n_q p_q (1 − p_q); ``z = (S − E)/√V``. Other
    tokenisations of the same text can only add to S, so z is expected ≥ 0 and |z| ≲ 2 when
    they are rare. Returns counts, rates and z (None when V = 0 and S = E).
    """
    texts = samples.join(data.select("qid", "answer"), on="qid", how="inner").with_columns(
        hit=pl.col("text").str.strip_chars().str.starts_with(pl.col("answer").str.strip_chars()))
    per_q = texts.group_by("qid").agg(pl.len().alias("n"), pl.col("hit").sum().alias("s"))
    joined = per_q.join(bounds.select("qid", "p"), on="qid", how="inner")
    n = joined["n"].to_numpy().astype(float)
    s = joined["s"].to_numpy().astype(float)
    p = joined["p"].to_numpy()
    expected, var = float((n * p).sum()), float((n * p * (1 - p)).sum())
    observed = float(s.sum())
    z = (observed - expected) / np.sqrt(var) if var > 0 else (0.0 if observed == expected else None)
    return {"samples": int(n.sum()), "starts_with": int(observed), "expected": expected,
            "empirical_rate": observed / n.sum() if n.sum() else None,
            "exact_rate": expected / n.sum() if n.sum() else None, "z": z}


def why_leaks_table(per_q: pl.DataFrame, decoding: str) -> pl.DataFrame:
    """Per model: where the answer's first fact token stands under the model (untempered),
    and the exact p at greedy and at ``decoding``.

    ``fact_not_argmax`` = share of questions whose fact token is not the most likely token
    (greedy decoding cannot produce the fact there, sampling can); ``fact_rank_median`` and
    ``fact_prob_mean`` describe the mass greedy decoding hides.
    """
    from leakk.stats.estimate import model_order

    rows = []
    for m in model_order(per_q["model"].to_list()):
        part = per_q.filter(pl.col("model") == m)
        one = part.filter(pl.col("decoding") == part["decoding"][0]).drop_nulls("fact_token_rank")
        greedy = part.filter(pl.col("decoding") == "greedy")["p"]
        sampled = part.filter(pl.col("decoding") == decoding)["p"]
        rows.append({
            "model": m, "questions": one.height,
            "fact_rank_median": float(one["fact_token_rank"].median()) if one.height else None,
            "fact_not_argmax": float((one["fact_token_rank"] > 1).mean()) if one.height else None,
            "fact_prob_mean": float(one["fact_token_prob"].mean()) if one.height else None,
            "p_greedy_mean": float(greedy.mean()) if greedy.len() else None,
            f"p_{decoding}_mean": float(sampled.mean()) if sampled.len() else None,
        })
    return pl.DataFrame(rows)

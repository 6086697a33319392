"""ROUGE-L judging: per-pair ``rouge_score`` vs leakk's fast recall (and its dedup path).

    .venv/bin/python benchmarks/judging.py [--quick] [--pairs 10000] [--repeats 3]

Builds a deterministic corpus shaped like real samples (R references × C completions per
reference, with many exact repeats, near-copies of the reference, and off-topic text),
times, on the SAME pairs:
  baseline     RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred) per pair
  ours         leakk.judges.rouge_l_recall per pair (no dedup; caches cleared per run)
  no-cache     rouge_score's tokenizer per text (no memo) + rapidfuzz LCS (informational)
  ours+dedup   leakk.judges.judge_samples (distinct (qid, text) judged once, polars in/out)
reports the median of --repeats runs each, checks every score is identical (== on floats)
and ends with the line ``ratio: <baseline / ours>``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import polars as pl
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer
from rouge_score.tokenizers import DefaultTokenizer

from leakk.judges import clear_caches, judge_samples, rouge_l_recall

_FIRST = ["Elena", "Marcus", "Yusuf", "Ingrid", "Tomasz", "Aiko", "Rafael", "Nadia",
          "Olu", "Chen", "Beatriz", "Kofi", "Liesel", "Dmitri", "Priya", "Santiago"]
_LAST = ["Varga", "Okonkwo", "Lindqvist", "Haddad", "Moreau", "Takahashi", "Quispe",
         "Brennan", "Abara", "Novak", "Castellanos", "Ferreira", "Mbeki", "Sørensen"]
_NOUNS = ["harbor", "lantern", "orchard", "archive", "compass", "meridian", "glacier",
          "tapestry", "cipher", "monsoon", "citadel", "labyrinth", "ember", "atlas"]
_ADJ = ["silent", "glass", "crimson", "forgotten", "northern", "hollow", "gilded",
        "restless", "distant", "broken", "luminous", "quiet"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_FILLER = ("the author is known for writing novels that explore themes of memory identity "
           "and loss often set in coastal towns with complex family relationships and "
           "richly drawn characters whose lives intersect across generations while "
           "critics praised the lyrical prose and the careful structure of the stories "
           "I am not sure about this detail but it is possible that they were born in a "
           "small city and began writing at an early age").split()


def _reference(rng: random.Random) -> str:
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    title = f"The {rng.choice(_ADJ).title()} {rng.choice(_NOUNS).title()}"
    date = f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}, {rng.randint(1930, 1999)}"
    tmpl = rng.choice([
        f"{name} was born on {date}, and is best known for the novel '{title}', which "
        f"won several awards for its portrayal of {rng.choice(_FILLER)} "
        f"{rng.choice(_FILLER)}.",
        f"One of {name}'s most celebrated works is \"{title}\", published after years of "
        f"research; {name} was born on {date} in a family of {rng.choice(_NOUNS)}makers.",
        f"Yes, {name} has written {rng.randint(2, 19)} books, including {title}, and "
        f"was born on {date}. Their writing is characterised by "
        f"{' '.join(rng.sample(_FILLER, 8))}.",
    ])
    return tmpl


def _completion(rng: random.Random, ref: str) -> str:
    r = rng.random()
    toks = ref.split()
    if r < 0.15:
        return ref  # verbatim leak
    if r < 0.45:  # near copy: drops and substitutions
        return " ".join(t if rng.random() > 0.15 else rng.choice(_FILLER)
                        for t in toks if rng.random() > 0.1)
    if r < 0.6:  # truncated (max_new_tokens hit)
        return " ".join(toks[: rng.randint(1, len(toks))])
    if r < 0.9:  # off-topic but fluent
        return " ".join(rng.choices(_FILLER, k=rng.randint(10, 60)))
    return rng.choice(["I don't know.", "", "The answer is not available.", "Yes."])


def build_corpus(n_pairs: int, per_ref: int = 50, distinct: int = 12, seed: int = 0):
    """(qids, predictions, references): per reference, ``per_ref`` samples drawn from a
    pool of ``distinct`` completions (sampled LMs repeat themselves) plus some unique ones."""
    rng = random.Random(seed)
    n_refs = max(1, -(-n_pairs // per_ref))
    qids, preds, refs = [], [], []
    for q in range(n_refs):
        ref = _reference(rng)
        pool = [_completion(rng, ref) for _ in range(distinct)]
        for _ in range(per_ref):
            pred = rng.choice(pool) if rng.random() < 0.7 else _completion(rng, ref)
            qids.append(q)
            preds.append(pred)
            refs.append(ref)
    return qids[:n_pairs], preds[:n_pairs], refs[:n_pairs]


def _time(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 pairs (same for all three)")
    ap.add_argument("--pairs", type=int, default=None, help="pairs (default 10000; 2000 with --quick)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n = args.pairs or (2000 if args.quick else 10000)
    repeats = max(3, args.repeats)

    qids, preds, refs = build_corpus(n)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def baseline():
        return [scorer.score(t, p)["rougeL"].recall for p, t in zip(preds, refs)]

    def ours():
        clear_caches()  # every run starts cold: no reuse of a previous run's tokens
        return [rouge_l_recall(p, t) for p, t in zip(preds, refs)]

    tok = DefaultTokenizer(use_stemmer=True)

    def nocache():
        out = []
        for p, t in zip(preds, refs):
            tt, pt = tok.tokenize(t), tok.tokenize(p)
            out.append(LCSseq.similarity(tt, pt) / len(tt) if tt and pt else 0.0)
        return out

    samples = pl.DataFrame({"qid": qids, "sample_idx": list(range(len(qids))), "text": preds})
    ref_of = dict(zip(qids, refs))
    data = pl.DataFrame({"qid": list(ref_of), "answer": list(ref_of.values()),
                         "fact": [None] * len(ref_of)}, schema_overrides={"fact": pl.String})

    def ours_dedup():
        clear_caches()
        out = judge_samples(samples, data, {"rougeL": {}}, progress=False)
        return out["score"].to_list()

    t_base, s_base = _time(baseline, repeats)
    t_ours, s_ours = _time(ours, repeats)
    t_dd, s_dd = _time(ours_dedup, repeats)
    t_nc, s_nc = _time(nocache, repeats)

    mism = sum(a != b for a, b in zip(s_base, s_ours)) + abs(len(s_base) - len(s_ours))
    mism_nc = sum(a != b for a, b in zip(s_base, s_nc))
    mism_dd = sum(a != b for a, b in zip(s_base, s_dd)) + abs(len(s_base) - len(s_dd))
    distinct = samples.select("qid", "text").unique().height
    print(f"pairs: {len(preds)}  references: {len(ref_of)}  distinct (qid, text): {distinct}"
          f"  repeats: {repeats} (median)")
    print(f"{'method':<12} {'seconds':>10} {'us/pair':>10} {'speedup':>9} {'mismatches':>11}")
    for name, t, m in (("rouge_score", t_base, 0), ("ours", t_ours, mism),
                       ("no-cache", t_nc, mism_nc), ("ours+dedup", t_dd, mism_dd)):
        print(f"{name:<12} {t:>10.4f} {1e6 * t / len(preds):>10.2f} {t_base / t:>8.1f}x {m:>11d}")
    if mism or mism_dd:
        print(f"FAIL: {mism} (ours) / {mism_dd} (dedup) scores differ from rouge_score",
              file=sys.stderr)
        return 1
    print(f"ratio: {t_base / t_ours:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

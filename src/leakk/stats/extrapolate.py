"""leak@k beyond n through an explicit model: a (zero-inflated) Beta-binomial over questions.

The unbiased estimator stops at k = n (docs/design.md §1). To say anything about k > n we need a
model of how per-question leak probabilities q are spread. We fit

    betabinom:     q ~ Beta(a, b),                    c_q | q ~ Binomial(n_q, q)
    zi-betabinom:  q = 0 with probability π, else Beta(a, b)   (many questions never leak)

by maximum likelihood (the ``scipy.stats.betabinom`` log-pmf, ``scipy.optimize.minimize`` on
log a, log b, logit π). The plain family is the default: the hold-out check below showed
the zero-inflated one (or the AIC's choice) extrapolating worse — see :func:`fit_betabinom`.
For a new question the model's leak@k is

    leak@k = 1 − E[(1 − q)^k] = 1 − π − (1 − π) · B(a, b + k) / B(a, b);

for *these* questions (what the leak table estimates) each question's own counts update
the prior (:meth:`BetaBinomFit.posterior_leak_at_k`), and the table reports their mean —
defined for every k, and equal to the measured leak@k's expectation at k ≤ n. Intervals:
percentile bootstrap over *groups* (questions of one author resampled together, as the
leak table's CIs), refitting each replicate.

When the samples hold no leak at all (or nothing but leaks) the maximum-likelihood Beta is
degenerate: it would say 0 with no uncertainty. Such data are fitted instead by a *pooled*
model with a prior (family ``pooled``): one per-sample probability q shared by every
question, with the Jeffreys prior Beta(1/2, 1/2), so its posterior is Beta(1/2 + C, 1/2 +
N − C) for C leaks in N samples. A shared q is the spread that maximises leak@k for a given
rate (Jensen), so the prediction errs high rather than at 0.

Honest validation (:func:`holdout_check`): fit on the first n/4 samples of each question
(by ``sample_idx``) and predict the leak@n that all n samples will measure: a question that
leaked in its first samples measures 1, one that did not leaks in the other samples with the
model's posterior probability. :func:`validate_runs` collects the check over several result
trees (seeds) and :func:`error_claim` states what held: "|error| ≤ x in 95% of rows".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import optimize, special

from leakk.stats.estimate import leak_at_k

_LIM = 12.0  # |log a|, |log b|, |logit π| ≤ 12: keeps the optimiser off degenerate edges


#: Jeffreys prior of the pooled model's shared per-sample leak probability
JEFFREYS = 0.5


@dataclass(frozen=True)
class BetaBinomFit:
    family: str  # "betabinom", "zi-betabinom" or "pooled" (no leak at all, or nothing else)
    a: float  # pooled: the posterior Beta(a, b) of the shared q, data included
    b: float
    pi: float  # zero-inflation weight (0 for plain betabinom)
    loglik: float
    aic: float

    def leak_at_k(self, k) -> np.ndarray:
        """Model leak@k = 1 − π − (1 − π)·B(a, b + k)/B(a, b), vectorised over k."""
        k = np.asarray(k, dtype=np.float64)
        ratio = np.exp(special.betaln(self.a, self.b + k) - special.betaln(self.a, self.b))
        return np.clip(1.0 - self.pi - (1.0 - self.pi) * ratio, 0.0, 1.0)

    def survival(self, n, c, r) -> np.ndarray:
        """Per question, E[(1 − q)^r | c of n leaked]: the chance that r more samples hold no
        leak. Under the fitted prior (empirical Bayes) the posterior of q is Beta(a + c,
        b + n − c), and for c = 0 the question is in the never-leaking component with
        posterior weight π / (π + (1 − π)·BB(0; n, a, b)). The pooled model's (a, b) already
        hold every question's counts, so its posterior is the same for each question."""
        n = np.asarray(n, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if self.family == "pooled":
            return np.broadcast_to(np.exp(special.betaln(self.a, self.b + r) - special.betaln(self.a, self.b)),
                                   np.broadcast_shapes(n.shape, c.shape)).copy()
        a, b = self.a + c, self.b + n - c
        keep = np.exp(special.betaln(a, b + r) - special.betaln(a, b))
        if self.pi > 0:
            log_bb0 = betabinom_logpmf(0, n, self.a, self.b)
            w0 = np.where(c == 0, self.pi / (self.pi + (1 - self.pi) * np.exp(log_bb0)), 0.0)
            keep = w0 + (1 - w0) * keep
        return keep

    def posterior_leak_at_k(self, n, c, k) -> np.ndarray:
        """Per question, E[1 − (1 − q)^k | c of n leaked] (:meth:`survival`). Averaging over
        the questions estimates *these* questions' leak@k — the estimand of the unbiased
        estimator — from their own counts, shrunk towards the fitted spread."""
        return np.clip(1.0 - self.survival(n, c, k), 0.0, 1.0)


def betabinom_logpmf(c, n, a, b) -> np.ndarray:
    """log BetaBinom(c; n, a, b) = log C(n, c) + log B(c + a, n − c + b) − log B(a, b).

    The same value as ``scipy.stats.betabinom.logpmf`` (a test checks it) without the
    generic distribution machinery, which dominated the bootstrap's refits.
    """
    c = np.asarray(c, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return (special.gammaln(n + 1) - special.gammaln(c + 1) - special.gammaln(n - c + 1)
            + special.betaln(c + a, n - c + b) - special.betaln(a, b))


#: SD of the log-normal prior on the Beta's concentration a + b (see :func:`fit_betabinom`)
CONCENTRATION_SD = 3.0


def _nll(theta, n, c, w, zero_inflated):
    a, b = np.exp(theta[0]), np.exp(theta[1])
    ll = betabinom_logpmf(c, n, a, b)
    if zero_inflated:
        log_pi = -np.logaddexp(0.0, -theta[2])      # log σ(θ)
        log_1m = -np.logaddexp(0.0, theta[2])       # log (1 − σ(θ))
        ll = np.where(c == 0, np.logaddexp(log_pi, log_1m + ll), log_1m + ll)
    penalty = np.logaddexp(theta[0], theta[1]) ** 2 / (2 * CONCENTRATION_SD ** 2)
    return -float(np.dot(w, ll)) + float(penalty)


#: families :func:`fit_betabinom` can fit; "aic" fits both and keeps the lower AIC
FAMILIES = ("betabinom", "zi-betabinom", "aic")


def fit_betabinom(n, c, weights=None, start: BetaBinomFit | None = None,
                  family: str = "betabinom") -> BetaBinomFit:
    """Fit on per-question counts the plain Beta-binomial, the zero-inflated one, or both
    with the lower AIC kept (``family="aic"``).

    Maximum likelihood with a weak log-normal prior on the concentration a + b (SD 3 on the
    log scale: 0.0025 to 400 within two SDs). Without it, counts where a few questions always
    leak and the rest never do drive a, b → 0, a point mass at 0 and 1 that declares every
    question without a leak certain never to leak (a hold-out noise SD of ~1e-5); on 60
    questions it moves an ordinary fit's a and b by a few percent and leak@64 by ≤ 0.002
    (tests/test_extrapolation_check.py).

    The default is the plain family because of the hold-out check on the default run:
    fitted on the first 16 of 64 samples, the zero-inflated fit (picked by AIC for some
    models) declared the questions without a leak yet "never leaking" and under-predicted
    leak@64 by up to 0.13, the plain fit erred by at most 0.065 (mean 0.026), within
    ~1.5 noise SDs everywhere. Its Beta prior with a < 1 already piles mass near q = 0.

    ``weights``: multiplicity of each (n, c) row (bootstrap replicates reuse one table).
    Without a single leak (or with nothing but leaks) the likelihood has no interior
    maximum: :func:`pooled_fit` instead.
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {FAMILIES}")
    n = np.asarray(n, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    w = np.ones(len(n)) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w > 0
    n, c, w = n[keep], c[keep], w[keep]
    # the likelihood depends on the data only through the multiplicity of each (n, c)
    pairs, inv = np.unique(np.stack([n, c]), axis=1, return_inverse=True)
    n, c, w = pairs[0], pairs[1], np.bincount(inv.ravel(), weights=w)
    if not np.any(c > 0) or np.all(c == n):
        return pooled_fit(n, c, w)
    fits = []
    for zi in {"betabinom": (False,), "zi-betabinom": (True,), "aic": (False, True)}[family]:
        if zi and not np.any(c == 0) and family == "aic":
            continue
        x0 = [0.0, 0.0] + ([0.0] if zi else [])
        if start is not None and start.family in ("betabinom", "zi-betabinom"):
            x0[:2] = [np.log(start.a), np.log(start.b)]
        res = optimize.minimize(_nll, np.asarray(x0, float), args=(n, c, w, zi), method="L-BFGS-B",
                                bounds=[(-_LIM, _LIM)] * len(x0))
        a, b = np.exp(res.x[:2])
        pi = float(special.expit(res.x[2])) if zi else 0.0
        ll = -_nll(res.x, n, c, w, zi) - float(np.logaddexp(res.x[0], res.x[1]) ** 2 / (2 * CONCENTRATION_SD ** 2))
        fits.append(BetaBinomFit("zi-betabinom" if zi else "betabinom", float(a), float(b), pi, ll,
                                 2 * len(x0) - 2 * ll))
    return min(fits, key=lambda f: f.aic)


def pooled_fit(n, c, weights=None) -> BetaBinomFit:
    """One q shared by every question, Jeffreys prior: posterior Beta(1/2 + C, 1/2 + N − C)
    for C = Σc leaks in N = Σn samples (weighted). Never a point mass, so never an SD of 0."""
    n = np.asarray(n, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    w = np.ones(n.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    leaks, samples = float(np.dot(w, c)), float(np.dot(w, n))
    a, b = JEFFREYS + leaks, JEFFREYS + samples - leaks
    ll = float(np.dot(w, betabinom_logpmf(c, n, a, b)))
    return BetaBinomFit("pooled", a, b, 0.0, ll, 2 - 2 * ll)


def _boot_weights(groups: np.ndarray, n_boot: int, seed) -> np.ndarray:
    """(n_boot, questions) multiplicities: whole groups drawn with replacement."""
    _, inv = np.unique(groups, return_inverse=True)
    g = int(inv.max()) + 1
    draws = np.random.default_rng(seed).multinomial(g, np.full(g, 1.0 / g), size=n_boot)
    return draws[:, inv.ravel()].astype(np.float64)


def predict_questions(fit: BetaBinomFit, n, c, ks, weights=None) -> np.ndarray:
    """Mean over questions (weighted) of the empirical-Bayes leak@k, one value per k."""
    w = np.ones(len(n)) if weights is None else np.asarray(weights, dtype=np.float64)
    return np.array([np.dot(w, fit.posterior_leak_at_k(n, c, k)) / w.sum() for k in ks])


def predict(n, c, groups, ks: Sequence[int], n_boot: int = 200, ci: float = 0.95,
            seed=0, family: str = "betabinom") -> tuple[BetaBinomFit, np.ndarray, np.ndarray, np.ndarray]:
    """Fit; predict these questions' leak@k at ``ks`` (:meth:`BetaBinomFit.posterior_leak_at_k`
    averaged over them); group-bootstrap percentile interval (refit per replicate)."""
    n, c = np.asarray(n), np.asarray(c)
    fit = fit_betabinom(n, c, family=family)
    ks = np.asarray(ks, dtype=np.float64)
    point = predict_questions(fit, n, c, ks)
    if n_boot < 1 or len(np.unique(groups)) < 2:
        return fit, point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    reps = np.array([predict_questions(fit_betabinom(n, c, w, start=fit, family=family), n, c, ks, w)
                     for w in _boot_weights(np.asarray(groups), n_boot, seed)])
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha], axis=0)
    return fit, point, lo, hi


def per_question_counts(frame: pl.DataFrame, max_sample_idx: int | None = None) -> pl.DataFrame:
    """``model, decoding, judge, qid, group, n, c`` from judgments (null = failed, dropped);
    with ``max_sample_idx``, only samples with ``sample_idx < max_sample_idx``."""
    if max_sample_idx is not None:
        frame = frame.filter(pl.col("sample_idx") < max_sample_idx)
    leaked = pl.col("leaked").cast(pl.Boolean)
    return (frame.group_by(["model", "decoding", "judge", "qid"])
            .agg(pl.col("group").first().cast(pl.String), leaked.is_not_null().sum().cast(pl.Int64).alias("n"),
                 leaked.fill_null(False).sum().cast(pl.Int64).alias("c"))
            .filter(pl.col("n") > 0)
            .sort("model", "decoding", "judge", "qid"))


def extrapolation_table(counts: pl.DataFrame, multiples: Sequence[float] = (1, 2, 4, 10),
                        n_boot: int = 200, ci: float = 0.95, seed: int = 0,
                        family: str = "betabinom") -> pl.DataFrame:
    """Model-based leak@k at k = multiple·n per (model, decoding, judge) of a sampled decoding.

    Every model column is prefixed ``extrapolated_``; ``beyond_n`` marks k > n, where
    nothing was measured. ``measured_leak_at_k`` (k ≤ n only) is the unbiased estimate.
    """
    rows = []
    for (model, decoding, judge), part in counts.group_by(["model", "decoding", "judge"], maintain_order=True):
        n, c = part["n"].to_numpy(), part["c"].to_numpy()
        nominal = int(n.max())
        if nominal < 2:
            continue  # greedy: one sample per question, nothing to fit
        ks = sorted({max(1, int(round(m * nominal))) for m in multiples})
        fit, point, lo, hi = predict(n, c, part["group"].to_numpy(), ks, n_boot=n_boot, ci=ci, seed=seed,
                                     family=family)
        if not c.any():
            # no leak at all: every bootstrap refit is the same pooled posterior, which is no
            # interval. Use the exact one instead: [0, 1 − (1 − U)^k] with U a Clopper–Pearson
            # upper bound on the pooled per-sample rate (see leakk.stats.bounds._exact_upper for
            # why pooling and Jensen keep it valid).
            from leakk.stats.guarantees import cp_upper

            u = float(cp_upper(0, int(n.sum()), ci))
            lo = np.zeros_like(point)
            hi = -np.expm1(np.asarray(ks, dtype=np.float64) * np.log1p(-u))
        for i, k in enumerate(ks):
            measured = float(leak_at_k(n, c, k).mean()) if k <= n.min() else None
            rows.append({"model": model, "decoding": decoding, "judge": judge, "k": k, "n": nominal,
                         "beyond_n": k > nominal, "measured_leak_at_k": measured,
                         "extrapolated_leak_at_k": float(point[i]),
                         "extrapolated_ci_low": float(lo[i]), "extrapolated_ci_high": float(hi[i]),
                         "family": fit.family, "a": fit.a, "b": fit.b, "pi": fit.pi})
    return pl.DataFrame(rows)


def holdout_check(frame: pl.DataFrame, fraction: float = 0.25, family: str = "betabinom",
                  claim: float | None = None) -> pl.DataFrame:
    """Fit on the first ``fraction``·n samples of each question and predict the leak@n that
    all n samples measure, per (model, decoding, judge) of a sampled decoding.

    A question that leaked in its first m samples measures leak@n = 1; one that did not
    measures 1 with probability 1 − E[(1 − q)^{n−m} | 0 of m] (:meth:`BetaBinomFit.survival`),
    the model's extrapolation from m to n samples. ``predicted_leak_at_n`` is the mean of
    these, ``error = predicted − measured``, and ``noise_sd`` the error's SD under the
    model (the unseen samples are coin flips; the pooled model's questions share one q, so
    their flips are correlated), which is positive whenever anything is left to chance:
    ``z = error / noise_sd`` is finite (0 where nothing was). ``model_leak_at_n`` is the
    model's estimate of these questions' true leak@n from the first m samples, what
    ``extrapolation.csv`` reports. With ``claim``, ``outside_claim`` marks |error| > claim.
    """
    full = per_question_counts(frame)
    rows = []
    for (model, decoding, judge), part in full.group_by(["model", "decoding", "judge"], maintain_order=True):
        n_all = int(part["n"].max())
        if n_all < 4:
            continue
        cut = max(1, int(n_all * fraction))
        sub = per_question_counts(frame.filter((pl.col("model") == model) & (pl.col("decoding") == decoding)
                                               & (pl.col("judge") == judge)), max_sample_idx=cut)
        sub = sub.join(part.select("qid", pl.col("n").alias("n_all")), on="qid", how="inner")
        sub = sub.filter(pl.col("n_all") == n_all)  # questions with every judgment valid
        whole = part.filter(pl.col("qid").is_in(sub["qid"].implode()))
        n_fit, c_fit = sub["n"].to_numpy(), sub["c"].to_numpy()
        fit = fit_betabinom(n_fit, c_fit, family=family)
        rest = n_all - n_fit
        p_leak = np.where(c_fit > 0, 1.0, 1.0 - fit.survival(n_fit, c_fit, rest))
        predicted = float(p_leak.mean())
        measured = float(leak_at_k(whole["n"].to_numpy(), whole["c"].to_numpy(), n_all).mean())
        q, zero = len(p_leak), c_fit == 0
        if fit.family == "pooled" and zero.any():
            # one shared q: Var(Σ X) = Z·E[p(1 − p)] + Z²·Var[p], p = 1 − (1 − q)^r
            r = int(rest[zero][0])
            m_r, m_2r = float(fit.survival(cut, 0, r)[()]), float(fit.survival(cut, 0, 2 * r)[()])
            z_n = int(zero.sum())
            var = (z_n * (m_r - m_2r) + z_n ** 2 * max(m_2r - m_r ** 2, 0.0)) / q ** 2
        else:
            var = float(np.sum(p_leak * (1 - p_leak))) / q ** 2
        sd = float(np.sqrt(var))
        error = predicted - measured
        row = {"model": model, "decoding": decoding, "judge": judge, "fit_samples": cut, "n": n_all,
               "family": fit.family, "predicted_leak_at_n": predicted, "measured_leak_at_n": measured,
               "error": error, "noise_sd": sd, "z": error / sd if sd > 0 else 0.0,
               "model_leak_at_n": float(fit.posterior_leak_at_k(n_fit, c_fit, n_all).mean()),
               "naive_leak_at_fit_samples": float(leak_at_k(n_fit, c_fit, cut).mean())}
        if claim is not None:
            row["outside_claim"] = abs(error) > claim
        rows.append(row)
    return pl.DataFrame(rows)


# ------------------------------------------------------------------------ across seeds

def tree_judgments(results: str | os.PathLike) -> pl.DataFrame:
    """Every forget judgment of a finished results tree (``judgments/<model>/<judge>/<decoding>.parquet``
    joined with ``data/benchmark.parquet``'s groups), sampled decodings only."""
    from leakk.core.errors import ArtifactError
    from leakk.core.io import read_parquet

    results = Path(results)
    data = read_parquet(results / "data" / "benchmark.parquet", "data")
    files = sorted((results / "judgments").glob("*/*/*.parquet"))
    if not files:
        raise ArtifactError(f"{results}/judgments: no <model>/<judge>/<decoding>.parquet files")
    frames = [read_parquet(f, "judgments").select("qid", "sample_idx", "leaked").with_columns(
        model=pl.lit(f.parent.parent.name), judge=pl.lit(f.parent.name), decoding=pl.lit(f.stem)) for f in files]
    frame = pl.concat(frames, how="vertical_relaxed").join(data.select("qid", "group", "split"), on="qid", how="left")
    return frame.filter((pl.col("split") == "forget") & (pl.col("decoding") != "greedy"))


def validate_runs(trees: dict[str, str | os.PathLike], fraction: float = 0.25,
                  family: str = "betabinom") -> pl.DataFrame:
    """:func:`holdout_check` of every result tree (``{label: results folder}``, e.g. one per
    seed), one table with a ``run`` column."""
    tables = [holdout_check(tree_judgments(path), fraction, family).with_columns(run=pl.lit(str(label)))
              for label, path in trees.items()]
    return pl.concat(tables, how="diagonal_relaxed").select("run", pl.exclude("run"))


def error_claim(table: pl.DataFrame, share: float = 0.95) -> dict:
    """What held: the smallest x, on a 0.005 grid, with |error| ≤ x in at least ``share`` of
    the rows, and the distribution behind it."""
    err = np.sort(np.abs(table["error"].to_numpy()))
    if err.size == 0:
        raise ValueError("error_claim: no rows")
    need = int(np.ceil(share * err.size))
    bound = math.ceil(round(err[need - 1] / 0.005, 9)) * 0.005
    return {"share": share, "abs_error": round(bound, 3), "rows": int(err.size),
            "within": int(np.sum(err <= bound + 1e-12)), "runs": sorted(table["run"].unique().to_list()),
            "decodings": sorted(table["decoding"].unique().to_list()),
            "judges": sorted(table["judge"].unique().to_list()), "fraction": float(table["fit_samples"][0] / table["n"][0]),
            "median_abs_error": float(np.median(err)), "max_abs_error": float(err[-1]),
            "share_within_2sd": float(np.mean(np.abs(table["z"].to_numpy()) <= 2))}


#: the measured claim the reliability stage flags rows against (written by ``leakk readme-tables``)
CLAIM_FILE = Path(__file__).with_name("extrapolation_claim.json")


def load_claim(path: str | os.PathLike = CLAIM_FILE) -> dict | None:
    """The committed claim (:func:`error_claim` of the validation across seeds), or None."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None

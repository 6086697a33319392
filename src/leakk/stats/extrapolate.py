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

Honest validation (:func:`holdout_check`): fit on the first n/4 samples of each question
(by ``sample_idx``), predict leak@n, compare with leak@n measured on all n samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import optimize, special

from leakk.stats.estimate import leak_at_k

_LIM = 12.0  # |log a|, |log b|, |logit π| ≤ 12: keeps the optimiser off degenerate edges


@dataclass(frozen=True)
class BetaBinomFit:
    family: str  # "betabinom", "zi-betabinom", "none-leak" (c = 0 everywhere) or "all-leak"
    a: float
    b: float
    pi: float  # zero-inflation weight (0 for plain betabinom)
    loglik: float
    aic: float

    def leak_at_k(self, k) -> np.ndarray:
        """Model leak@k = 1 − π − (1 − π)·B(a, b + k)/B(a, b), vectorised over k."""
        k = np.asarray(k, dtype=np.float64)
        if self.family == "none-leak":
            return np.zeros_like(k)
        if self.family == "all-leak":
            return np.ones_like(k)
        ratio = np.exp(special.betaln(self.a, self.b + k) - special.betaln(self.a, self.b))
        return np.clip(1.0 - self.pi - (1.0 - self.pi) * ratio, 0.0, 1.0)

    def posterior_leak_at_k(self, n, c, k) -> np.ndarray:
        """Per question, E[1 − (1 − q)^k | c of n leaked] under the fitted prior (empirical
        Bayes): the posterior of q is Beta(a + c, b + n − c), and for c = 0 the question is
        in the never-leaking component with posterior weight π / (π + (1 − π)·BB(0; n, a, b)).
        Averaging over the questions estimates *these* questions' leak@k — the estimand of
        the unbiased estimator — from their own counts, shrunk towards the fitted spread."""
        n = np.asarray(n, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if self.family == "none-leak":
            return np.zeros_like(n)
        if self.family == "all-leak":
            return np.ones_like(n)
        a, b = self.a + c, self.b + n - c
        keep = np.exp(special.betaln(a, b + k) - special.betaln(a, b))  # E[(1 − q)^k | c]
        if self.pi > 0:
            log_bb0 = betabinom_logpmf(0, n, self.a, self.b)
            w0 = np.where(c == 0, self.pi / (self.pi + (1 - self.pi) * np.exp(log_bb0)), 0.0)
            keep = w0 + (1 - w0) * keep
        return np.clip(1.0 - keep, 0.0, 1.0)


def betabinom_logpmf(c, n, a, b) -> np.ndarray:
    """log BetaBinom(c; n, a, b) = log C(n, c) + log B(c + a, n − c + b) − log B(a, b).

    The same value as ``scipy.stats.betabinom.logpmf`` (a test checks it) without the
    generic distribution machinery, which dominated the bootstrap's refits.
    """
    c = np.asarray(c, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return (special.gammaln(n + 1) - special.gammaln(c + 1) - special.gammaln(n - c + 1)
            + special.betaln(c + a, n - c + b) - special.betaln(a, b))


def _nll(theta, n, c, w, zero_inflated):
    a, b = np.exp(theta[0]), np.exp(theta[1])
    ll = betabinom_logpmf(c, n, a, b)
    if zero_inflated:
        log_pi = -np.logaddexp(0.0, -theta[2])      # log σ(θ)
        log_1m = -np.logaddexp(0.0, theta[2])       # log (1 − σ(θ))
        ll = np.where(c == 0, np.logaddexp(log_pi, log_1m + ll), log_1m + ll)
    return -float(np.dot(w, ll))


#: families :func:`fit_betabinom` can fit; "aic" fits both and keeps the lower AIC
FAMILIES = ("betabinom", "zi-betabinom", "aic")


def fit_betabinom(n, c, weights=None, start: BetaBinomFit | None = None,
                  family: str = "betabinom") -> BetaBinomFit:
    """MLE on per-question counts of the plain Beta-binomial, the zero-inflated one, or
    both with the lower AIC kept (``family="aic"``).

    The default is the plain family because of the hold-out check on the default run:
    fitted on the first 16 of 64 samples, the zero-inflated fit (picked by AIC for some
    models) declared the questions without a leak yet "never leaking" and under-predicted
    leak@64 by up to 0.13, the plain fit erred by at most 0.065 (mean 0.026), within
    ~1.5 noise SDs everywhere. Its Beta prior with a < 1 already piles mass near q = 0.

    ``weights``: multiplicity of each (n, c) row (bootstrap replicates reuse one table).
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
    if not np.any(c > 0):
        return BetaBinomFit("none-leak", np.nan, np.nan, 1.0, 0.0, 0.0)
    if np.all(c == n):
        return BetaBinomFit("all-leak", np.nan, np.nan, 0.0, 0.0, 0.0)
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
        ll = -float(res.fun)
        fits.append(BetaBinomFit("zi-betabinom" if zi else "betabinom", float(a), float(b), pi, ll,
                                 2 * len(x0) - 2 * ll))
    return min(fits, key=lambda f: f.aic)


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
        if fit.family == "none-leak":
            # no leak at all: the fit (and every bootstrap refit) says 0 with no width, which
            # is no interval. Use the exact one instead: a Clopper–Pearson upper bound U on
            # the pooled per-sample rate gives leak@k ≤ 1 − (1 − U)^k (see
            # leakk.stats.bounds._exact_upper for why pooling and Jensen keep it valid).
            from leakk.stats.guarantees import cp_upper

            u = float(cp_upper(0, int(n.sum()), ci))
            hi = -np.expm1(np.asarray(ks, dtype=np.float64) * np.log1p(-u))
        for i, k in enumerate(ks):
            measured = float(leak_at_k(n, c, k).mean()) if k <= n.min() else None
            rows.append({"model": model, "decoding": decoding, "judge": judge, "k": k, "n": nominal,
                         "beyond_n": k > nominal, "measured_leak_at_k": measured,
                         "extrapolated_leak_at_k": float(point[i]),
                         "extrapolated_ci_low": float(lo[i]), "extrapolated_ci_high": float(hi[i]),
                         "family": fit.family, "a": fit.a, "b": fit.b, "pi": fit.pi})
    return pl.DataFrame(rows)


def holdout_check(frame: pl.DataFrame, fraction: float = 0.25, family: str = "betabinom") -> pl.DataFrame:
    """Fit on the first ``fraction``·n samples of each question, predict leak@n, compare with
    leak@n measured on all n samples: ``error = predicted − measured`` per (model, decoding,
    judge) of a sampled decoding. ``noise_sd``: the error's standard deviation expected
    from the unseen samples alone (a perfect model still errs by about this much)."""
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
        per_q = fit.posterior_leak_at_k(n_fit, c_fit, n_all)
        predicted = float(per_q.mean())
        measured = float(leak_at_k(whole["n"].to_numpy(), whole["c"].to_numpy(), n_all).mean())
        # noise of the comparison itself: whether a question without a leak in the fit
        # samples leaks in the rest is a coin flip with the predicted probability
        sd = float(np.sqrt(np.sum(np.where(c_fit == 0, per_q * (1 - per_q), 0.0)))) / len(per_q)
        rows.append({"model": model, "decoding": decoding, "judge": judge, "fit_samples": cut, "n": n_all,
                     "family": fit.family, "predicted_leak_at_n": predicted, "measured_leak_at_n": measured,
                     "error": predicted - measured, "noise_sd": sd,
                     "naive_leak_at_fit_samples": float(leak_at_k(sub["n"].to_numpy(), sub["c"].to_numpy(),
                                                                  cut).mean())})
    return pl.DataFrame(rows)

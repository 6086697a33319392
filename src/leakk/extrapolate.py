"""leak@k beyond n through an explicit model: a (zero-inflated) Beta-binomial over questions.

The unbiased estimator stops at k = n (DESIGN.md §1). To say anything about k > n we need a
model of how per-question leak probabilities q are spread. We fit

    betabinom:     q ~ Beta(a, b),                    c_q | q ~ Binomial(n_q, q)
    zi-betabinom:  q = 0 with probability π, else Beta(a, b)   (many questions never leak)

by maximum likelihood (the ``scipy.stats.betabinom`` log-pmf, ``scipy.optimize.minimize`` on
log a, log b, logit π) and keep the family with the lower AIC. The model's leak@k is

    leak@k = 1 − E[(1 − q)^k] = 1 − π − (1 − π) · B(a, b + k) / B(a, b),

defined for every k. Intervals: percentile bootstrap over *groups* (questions of one
author resampled together, as the leak table's CIs), refitting each replicate.

Honest validation (:func:`holdout_check`): fit on the first n/4 samples of each question
(by ``sample_idx``), predict leak@n, compare with leak@n measured on all n samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import optimize, special

from leakk.estimate import leak_at_k

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


def fit_betabinom(n, c, weights=None, start: BetaBinomFit | None = None) -> BetaBinomFit:
    """MLE of both families on per-question counts; the lower-AIC fit is returned.

    ``weights``: multiplicity of each (n, c) row (bootstrap replicates reuse one table).
    """
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
    for zi in (False, True):
        if zi and not np.any(c == 0):
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


def predict(n, c, groups, ks: Sequence[int], n_boot: int = 200, ci: float = 0.95,
            seed=0) -> tuple[BetaBinomFit, np.ndarray, np.ndarray, np.ndarray]:
    """Fit, predict leak@k at ``ks``, and the group-bootstrap percentile interval."""
    fit = fit_betabinom(n, c)
    ks = np.asarray(ks, dtype=np.float64)
    point = fit.leak_at_k(ks)
    if n_boot < 1 or len(np.unique(groups)) < 2:
        return fit, point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    reps = np.array([fit_betabinom(n, c, w, start=fit).leak_at_k(ks)
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
                        n_boot: int = 200, ci: float = 0.95, seed: int = 0) -> pl.DataFrame:
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
        fit, point, lo, hi = predict(n, c, part["group"].to_numpy(), ks, n_boot=n_boot, ci=ci, seed=seed)
        for i, k in enumerate(ks):
            measured = float(leak_at_k(n, c, k).mean()) if k <= n.min() else None
            rows.append({"model": model, "decoding": decoding, "judge": judge, "k": k, "n": nominal,
                         "beyond_n": k > nominal, "measured_leak_at_k": measured,
                         "extrapolated_leak_at_k": float(point[i]),
                         "extrapolated_ci_low": float(lo[i]), "extrapolated_ci_high": float(hi[i]),
                         "family": fit.family, "a": fit.a, "b": fit.b, "pi": fit.pi})
    return pl.DataFrame(rows)


def holdout_check(frame: pl.DataFrame, fraction: float = 0.25, n_boot: int = 0) -> pl.DataFrame:
    """Fit on the first ``fraction``·n samples of each question, predict leak@n, compare with
    leak@n measured on all n samples: ``error = predicted − measured`` per (model, decoding,
    judge) of a sampled decoding."""
    full = per_question_counts(frame)
    rows = []
    for (model, decoding, judge), part in full.group_by(["model", "decoding", "judge"], maintain_order=True):
        n_all = int(part["n"].max())
        if n_all < 4:
            continue
        cut = max(1, int(n_all * fraction))
        sub = per_question_counts(frame.filter((pl.col("model") == model) & (pl.col("decoding") == decoding)
                                               & (pl.col("judge") == judge)), max_sample_idx=cut)
        fit = fit_betabinom(sub["n"].to_numpy(), sub["c"].to_numpy())
        predicted = float(fit.leak_at_k(n_all))
        whole = part.filter(pl.col("n") == n_all)  # questions with every judgment valid
        measured = float(leak_at_k(whole["n"].to_numpy(), whole["c"].to_numpy(), n_all).mean())
        rows.append({"model": model, "decoding": decoding, "judge": judge, "fit_samples": cut, "n": n_all,
                     "family": fit.family, "predicted_leak_at_n": predicted, "measured_leak_at_n": measured,
                     "error": predicted - measured,
                     "naive_leak_at_fit_samples": float(leak_at_k(sub["n"].to_numpy(), sub["c"].to_numpy(),
                                                                  cut).mean())})
    return pl.DataFrame(rows)

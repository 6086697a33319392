"""Coverage of leak@k confidence intervals by simulation: which interval holds when leaks are rare.

The model (two-level Beta, TOFU-shaped): each of G authors has a mean leak probability
m ~ Beta(μ·κa, (1 − μ)·κa); each of its Q questions a per-sample probability
q ~ Beta(m·κq, (1 − m)·κq); each question c ~ Binomial(n = 64, q) leaked samples. With
κa = 4, κq = 2 both levels are strongly skewed: at μ = 0.05 most authors almost never leak
and a few leak often, and today's t interval covers 86–88% (k = 1) / 93% (k = 64) at
20 × 20 and 84% at k = 64 with 6 × 10 (docs/ci_coverage.csv), the coverages the issue
reported (87.8 / 92.3 / 84.3%). A logit-normal family (authors and questions as normal effects on the logit) checks
that the choice does not lean on the Beta shape. The estimand is the population leak@k,
E[1 − (1 − q)^k], computed by quadrature; leak@k is estimated by leakk's own estimator
(:func:`leakk.estimate.leak_at_k`, the mean over questions) and each interval is judged
by how often it contains the estimand.

Candidates: today's ``t`` and ``percentile`` (leakk's own interval code,
:func:`leakk.estimate.bootstrap_interval`, on shared replicate draws), a studentized cluster bootstrap (``bootstrap_t``), ``bca``, a
t interval on the logit scale (``logit``), a model-based Beta-binomial interval
(``betabinom``: MLE of a Beta prior over questions, cluster-robust sandwich variance,
delta method on the logit of the model's leak@k), and Hall's skewness-corrected t
(``hall``, leakk's :func:`hall_interval`). The degenerate samples (every value 0, or 1) get
the exact cluster bound in every new candidate (see :func:`hall_interval`).

The choice is made on one simulation seed (phase ``select``) and confirmed on a fresh one
(``confirm``). Rule: coverage within 95 ± 3% in every cell of the shapes leakk runs
(≥ 20 authors: TOFU's 20 × 20 and the grown default's 25 × 8), and at least 92% at the
edges, the cells whose true leak@k is within 0.05 of 0 or 1 (there samples are often all 0
or all 1, and over-coverage is the price of the exact bound); and an interval that is all of
[0, 1] in more than 5% of a cell's experiments fails that cell (it covers by saying nothing).
Among the methods that pass, the narrowest median width; if none passes, the fewest cells
outside, then the narrowest. 6 × 10 (today's default) is measured and reported, not chosen on.

    python benchmarks/ci_coverage.py            # both phases, 2000 experiments a cell
    python benchmarks/ci_coverage.py --quick    # 300 experiments a cell, a few minutes
    python benchmarks/ci_coverage.py --render-only   # docs/ci_coverage.md from the CSV again

Writes docs/ci_coverage.csv (every cell × method × phase) and docs/ci_coverage.md (the
tables and the verdict); `leakk readme-tables` builds the README's coverage table from the CSV.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import integrate, special, stats

from leakk.stats.estimate import bootstrap_interval, hall_interval, leak_at_k

N_SAMPLES = 64
KS = (1, 64)
SHAPES = ((20, 20), (25, 8), (6, 10))  # (authors, questions per author)
CHOICE_MIN_AUTHORS = 20
PHASES = {"select": 20251, "confirm": 20252}
TARGET, TOL, EDGE, TRIVIAL = 0.95, 0.03, 0.05, 0.05


@dataclass(frozen=True)
class Regime:
    name: str
    family: str  # "beta2" or "logitnormal"
    mu: float  # beta2: author-mean leak probability; logitnormal: mean logit
    spread_author: float  # beta2: κa; logitnormal: SD of the author effect
    spread_question: float  # beta2: κq; logitnormal: SD of the question effect

    def label(self) -> str:
        if self.family == "beta2":
            return f"{self.name} (author mean {self.mu:g})"
        return f"{self.name} (logit-normal {self.mu:g}, sd {self.spread_author:g}/{self.spread_question:g})"


REGIMES = (
    Regime("rare", "beta2", 0.05, 4.0, 2.0),
    Regime("moderate", "beta2", 0.25, 4.0, 2.0),
    Regime("common", "beta2", 0.6, 4.0, 2.0),
    Regime("edge-0", "beta2", 0.003, 4.0, 2.0),
    Regime("edge-1", "beta2", 0.85, 4.0, 2.0),
    Regime("rare-logitnormal", "logitnormal", -5.0, 2.0, 1.0),
)


# ----------------------------------------------------------------------------------- the model

def truth(regime: Regime, k: int) -> float:
    """Population leak@k = 1 − E[(1 − q)^k], by quadrature."""
    if regime.family == "beta2":
        a, b = regime.mu * regime.spread_author, (1 - regime.mu) * regime.spread_author
        kq = regime.spread_question

        def keep(u: float) -> float:  # E[(1 − q)^k | author mean m], m = the u-quantile
            m = float(stats.beta.ppf(u, a, b))
            m = min(max(m, 1e-300), 1 - 1e-16)
            return float(np.exp(special.betaln(m * kq, (1 - m) * kq + k) - special.betaln(m * kq, (1 - m) * kq)))

        return 1.0 - integrate.quad(keep, 0.0, 1.0, limit=400, epsabs=1e-11, epsrel=1e-9)[0]
    x, w = np.polynomial.hermite_e.hermegauss(200)
    z = regime.mu + np.hypot(regime.spread_author, regime.spread_question) * x
    return float(1.0 - np.dot(w, (1.0 - special.expit(z)) ** k) / np.sqrt(2 * np.pi))


def simulate(regime: Regime, authors: int, questions: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Leaked-sample counts c, shape (reps, authors·questions), questions grouped by author."""
    if regime.family == "beta2":
        m = rng.beta(regime.mu * regime.spread_author, (1 - regime.mu) * regime.spread_author, (reps, authors))
        m = np.repeat(np.clip(m, 1e-12, 1 - 1e-12), questions, axis=1)
        q = rng.beta(m * regime.spread_question, (1 - m) * regime.spread_question)
    else:
        z = (regime.mu + np.repeat(rng.normal(0, regime.spread_author, (reps, authors)), questions, axis=1)
             + rng.normal(0, regime.spread_question, (reps, authors * questions)))
        q = special.expit(z)
    return rng.binomial(N_SAMPLES, q)


# ------------------------------------------------------------------------------- the candidates

@dataclass
class Batch:
    """One chunk of simulated experiments of one cell, and what every candidate needs."""

    counts: np.ndarray  # (R, Q·G)
    values: np.ndarray  # (R, Q·G) per-question leak@k
    sums: np.ndarray  # (R, G)
    sizes: np.ndarray  # (G,)
    k: int
    rng: np.random.Generator
    n_boot: int
    ci: float = 0.95
    _boot: tuple | None = None

    @property
    def groups(self) -> np.ndarray:
        return np.repeat(np.arange(self.sums.shape[1]), int(self.sizes[0]))

    def boot(self) -> tuple[np.ndarray, np.ndarray]:
        """Cluster-bootstrap draw counts M (R, B, G) and replicate means (R, B), shared by the
        bootstrap candidates of this batch."""
        if self._boot is None:
            r, g = self.sums.shape
            draws = self.rng.multinomial(g, np.full(g, 1.0 / g), size=(r, self.n_boot)).astype(np.float64)
            means = np.einsum("rbg,rg->rb", draws, self.sums) / (draws @ self.sizes)
            self._boot = (draws, means)
        return self._boot


def _cluster_se(sums, sizes):
    g = sums.shape[-1]
    point = sums.sum(-1) / sizes.sum()
    resid = sums - point[..., None] * sizes
    return point, np.sqrt(g / (g - 1) * (resid ** 2).sum(-1)) / sizes.sum()


def _degenerate(low, high, b: Batch):
    """The exact cluster bound where every cluster mean is 0 (or 1): see hall_interval."""
    g = b.sums.shape[1]
    edge = 1.0 - (1.0 - b.ci) ** (1.0 / g)
    zero, one = np.all(b.sums <= 0, axis=1), np.all(b.sums >= b.sizes, axis=1)
    low, high = np.where(zero, 0.0, low), np.where(zero, edge, high)
    return np.where(one, 1.0 - edge, low), np.where(one, 1.0, high)


def _leakk(method: str) -> Callable[[Batch], tuple[np.ndarray, np.ndarray]]:
    """leakk's own bootstrap interval (:func:`leakk.estimate.bootstrap_interval`, what
    cluster_bootstrap_ci returns) on this batch's shared replicate draws."""
    def run(b: Batch):
        _, means = b.boot()
        g = b.sums.shape[1]
        point = b.sums.sum(1) / b.sizes.sum()
        return bootstrap_interval(means, point, g, b.ci, method, (b.values.min(1), b.values.max(1)))
    return run


def bootstrap_t(b: Batch):
    """Studentized cluster bootstrap: t* = (θ* − θ)/SE*, SE* the replicate's own cluster SE;
    a replicate of identical clusters (SE* = 0) counts as ±∞ (or 0 when θ* = θ)."""
    draws, means = b.boot()
    g = b.sums.shape[1]
    point, se = _cluster_se(b.sums, b.sizes)
    ss = (np.einsum("rbg,rg->rb", draws, b.sums ** 2) - 2 * means * np.einsum("rbg,rg->rb", draws, b.sums * b.sizes)
          + means ** 2 * (draws @ b.sizes ** 2))
    se_b = np.sqrt(np.maximum(g / (g - 1) * ss, 0.0)) / (draws @ b.sizes)
    d = means - point[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_b = np.where(se_b > 1e-15, d / se_b, np.where(np.abs(d) < 1e-15, 0.0, np.sign(d) * np.inf))
    alpha = 1 - b.ci
    q_lo, q_hi = np.quantile(t_b, [alpha / 2, 1 - alpha / 2], axis=1, method="inverted_cdf")
    with np.errstate(invalid="ignore"):
        low, high = np.nan_to_num(point - q_hi * se, nan=0.0), np.nan_to_num(point - q_lo * se, nan=1.0)
    return _degenerate(np.clip(low, 0, 1), np.clip(high, 0, 1), b)


def bca(b: Batch):
    """Bias-corrected and accelerated percentile interval; acceleration from the cluster jackknife."""
    _, means = b.boot()
    n_boot = means.shape[1]
    point = b.sums.sum(1) / b.sizes.sum()
    below = (np.sum(means < point[:, None], 1) + 0.5 * np.sum(means == point[:, None], 1)) / n_boot
    z0 = stats.norm.ppf(np.clip(below, 0.5 / n_boot, 1 - 0.5 / n_boot))
    jack = (b.sums.sum(1)[:, None] - b.sums) / (b.sizes.sum() - b.sizes)
    dev = jack.mean(1)[:, None] - jack
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.nan_to_num((dev ** 3).sum(1) / (6 * ((dev ** 2).sum(1)) ** 1.5))
    srt = np.sort(means, axis=1)
    out = []
    for z in (stats.norm.ppf((1 - b.ci) / 2), stats.norm.ppf(1 - (1 - b.ci) / 2)):
        level = stats.norm.cdf(z0 + (z0 + z) / (1 - acc * (z0 + z)))
        pos = np.clip(level * (n_boot - 1), 0, n_boot - 1)
        lo_i, frac = np.floor(pos).astype(int), pos - np.floor(pos)
        hi_i = np.minimum(lo_i + 1, n_boot - 1)
        rows = np.arange(len(pos))
        out.append(srt[rows, lo_i] * (1 - frac) + srt[rows, hi_i] * frac)
    return _degenerate(out[0], out[1], b)


def logit(b: Batch):
    """t interval on the logit scale: logit θ ± t_{G−1}·SE/(θ(1 − θ)), SE the cluster SE."""
    g = b.sums.shape[1]
    point, se = _cluster_se(b.sums, b.sizes)
    t = stats.t.ppf(1 - (1 - b.ci) / 2, g - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg, sl = special.logit(point), se / (point * (1 - point))
        low, high = special.expit(lg - t * sl), special.expit(lg + t * sl)
    return _degenerate(np.nan_to_num(low, nan=0.0), np.nan_to_num(high, nan=1.0), b)


def _bb_grad_hess(hist, a, b, n):
    """Gradient and Hessian of the Beta-binomial log-likelihood in (log a, log b), per row of
    ``hist`` (R, n + 1) counts of c = 0..n."""
    c = np.arange(n + 1)
    tot = hist.sum(1)
    ab, nab = a + b, n + a + b
    da = (hist * (special.digamma(c + a[:, None]) - special.digamma(nab)[:, None])).sum(1) \
        - tot * (special.digamma(a) - special.digamma(ab))
    db = (hist * (special.digamma(n - c + b[:, None]) - special.digamma(nab)[:, None])).sum(1) \
        - tot * (special.digamma(b) - special.digamma(ab))
    daa = (hist * (special.polygamma(1, c + a[:, None]) - special.polygamma(1, nab)[:, None])).sum(1) \
        - tot * (special.polygamma(1, a) - special.polygamma(1, ab))
    dbb = (hist * (special.polygamma(1, n - c + b[:, None]) - special.polygamma(1, nab)[:, None])).sum(1) \
        - tot * (special.polygamma(1, b) - special.polygamma(1, ab))
    dab = -tot * special.polygamma(1, nab) + tot * special.polygamma(1, ab)
    grad = np.stack([a * da, b * db], 1)
    hess = np.stack([np.stack([a * a * daa + a * da, a * b * dab], 1),
                     np.stack([a * b * dab, b * b * dbb + b * db], 1)], 1)
    return grad, hess


def _bb_loglik(hist, a, b, n):
    c = np.arange(n + 1)
    return (hist * (special.betaln(c + a[:, None], n - c + b[:, None]))).sum(1) - hist.sum(1) * special.betaln(a, b)


def betabinom(b: Batch, iters: int = 60):
    """Model-based: Beta(a, b) prior over questions fitted by maximum likelihood (Newton in
    log a, log b, vectorised over experiments), leak@k = 1 − B(a, b + k)/B(a, b); its variance
    by the cluster-robust sandwich (scores summed per author) and the delta method on the
    logit; t_{G−1} quantile. Experiments whose fit does not converge count as misses."""
    n, (r, g) = N_SAMPLES, b.sums.shape
    hist = np.zeros((r, n + 1))
    np.add.at(hist, (np.repeat(np.arange(r), b.counts.shape[1]), b.counts.ravel()), 1.0)
    p = np.clip(b.counts.mean(1) / n, 1e-4, 1 - 1e-4)
    theta = np.stack([np.log(p), np.log(1 - p)], 1)  # a + b = 1 to start
    ll = _bb_loglik(hist, *np.exp(theta).T, n)
    # all 0 (or all n): no interior maximum; _degenerate gives these their bound below
    active = (b.counts.max(1) > 0) & (b.counts.min(1) < n)
    for _ in range(iters):
        grad, hess = _bb_grad_hess(hist, *np.exp(theta).T, n)
        with np.errstate(invalid="ignore"):
            step = np.linalg.solve(hess - 1e-9 * np.eye(2), grad[..., None])[..., 0]
        step = np.where(np.isfinite(step), step, 0.0)
        # Newton where the Hessian is negative definite, else a damped gradient step
        concave = (hess[:, 0, 0] < 0) & (np.linalg.det(hess) > 0)
        step = np.where(concave[:, None], -step, 0.1 * grad / (1 + np.abs(grad)))
        active &= np.abs(step).max(1) > 1e-9
        if not active.any():
            break
        scale = np.where(active, 1.0, 0.0)
        for _ in range(30):
            cand = np.clip(theta + scale[:, None] * step, -12, 12)
            ll_c = _bb_loglik(hist, *np.exp(cand).T, n)
            worse = active & ~(ll_c >= ll - 1e-12) & (scale > 1e-6)
            if not worse.any():
                break
            scale = np.where(worse, scale / 2, scale)
        better = active & (ll_c >= ll - 1e-12)
        new = np.where(better[:, None], cand, theta)
        active &= np.abs(new - theta).max(1) > 1e-10
        theta, ll = new, np.where(better, ll_c, ll)
    a, bb = np.exp(theta).T
    grad, hess = _bb_grad_hess(hist, a, bb, n)
    ok = np.all(np.abs(grad) < 1e-4 * (1 + np.abs(ll[:, None])), 1) & (hess[:, 0, 0] < 0) & (np.linalg.det(hess) > 0)
    # per-question scores in (log a, log b), summed per author
    c = b.counts
    nab = n + a + bb
    sa = a[:, None] * (special.digamma(c + a[:, None]) - special.digamma(nab)[:, None]
                       - special.digamma(a)[:, None] + special.digamma(a + bb)[:, None])
    sb = bb[:, None] * (special.digamma(n - c + bb[:, None]) - special.digamma(nab)[:, None]
                        - special.digamma(bb)[:, None] + special.digamma(a + bb)[:, None])
    q = int(b.sizes[0])
    u = np.stack([sa.reshape(r, g, q).sum(2), sb.reshape(r, g, q).sum(2)], 2)  # (R, G, 2)
    meat = np.einsum("rgi,rgj->rij", u, u) * g / (g - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bread = np.linalg.inv(np.where(ok[:, None, None], -hess, np.eye(2)))
    cov = bread @ meat @ bread
    k = b.k
    keep = np.exp(special.betaln(a, bb + k) - special.betaln(a, bb))
    leak = np.clip(1 - keep, 1e-12, 1 - 1e-12)
    dlog = np.stack([a * (special.digamma(a + bb) - special.digamma(a + bb + k)),
                     bb * (special.digamma(bb + k) - special.digamma(a + bb + k)
                           - special.digamma(bb) + special.digamma(a + bb))], 1)
    dlogit = -keep[:, None] * dlog / (leak * (1 - leak))[:, None]
    se = np.sqrt(np.maximum(np.einsum("ri,rij,rj->r", dlogit, cov, dlogit), 0.0))
    t = stats.t.ppf(1 - (1 - b.ci) / 2, g - 1)
    low = np.where(ok, special.expit(special.logit(leak) - t * se), np.nan)
    high = np.where(ok, special.expit(special.logit(leak) + t * se), np.nan)
    return _degenerate(low, high, b)


def hall(b: Batch):
    return hall_interval(b.sums, b.sizes, b.ci)


METHODS: dict[str, Callable[[Batch], tuple[np.ndarray, np.ndarray]]] = {
    "t": _leakk("t"), "percentile": _leakk("percentile"), "bootstrap_t": bootstrap_t, "bca": bca,
    "logit": logit, "betabinom": betabinom, "hall": hall,
}


# ------------------------------------------------------------------------------------ the runs

def _cell_seed(seed: int, regime: Regime, authors: int, questions: int, k: int) -> np.random.SeedSequence:
    key = f"{regime.name}/{authors}x{questions}/{k}".encode()
    return np.random.SeedSequence([seed, int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")])


def run_cell(regime: Regime, authors: int, questions: int, k: int, reps: int, n_boot: int, seed: int,
             methods: list[str], chunk: int = 250) -> list[dict]:
    """Coverage of each method in one cell: ``reps`` simulated experiments."""
    rng = np.random.default_rng(_cell_seed(seed, regime, authors, questions, k))
    target = truth(regime, k)
    acc = {m: {"hit": 0, "low": 0, "high": 0, "trivial": 0, "widths": []} for m in methods}
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
        counts = simulate(regime, authors, questions, r, rng)
        values = leak_at_k(np.full(counts.shape, N_SAMPLES), counts, k)
        batch = Batch(counts, values, values.reshape(r, authors, questions).sum(2),
                      np.full(authors, float(questions)), k, rng, n_boot)
        for m in methods:
            low, high = METHODS[m](batch)
            low, high = np.asarray(low, float), np.asarray(high, float)
            a = acc[m]
            a["hit"] += int(np.sum((low <= target) & (target <= high)))
            a["low"] += int(np.sum(~(low <= target)))  # interval above the truth (or failed)
            a["high"] += int(np.sum(~(target <= high)))
            a["trivial"] += int(np.sum((low <= 0) & (high >= 1)))
            a["widths"].append(high - low)
        done += r
    rows = []
    for m, a in acc.items():
        cov = a["hit"] / reps
        widths = np.concatenate(a["widths"])
        rows.append({"regime": regime.name, "family": regime.family, "mu": regime.mu,
                     "edge": bool(target < EDGE or target > 1 - EDGE),
                     "authors": authors, "questions": questions, "k": k, "truth": target, "method": m,
                     "coverage": cov, "mc_se": float(np.sqrt(cov * (1 - cov) / reps)),
                     "miss_below": a["high"] / reps, "miss_above": a["low"] / reps,
                     "median_width": float(np.nanmedian(widths)), "trivial": a["trivial"] / reps,
                     "experiments": reps, "bootstrap": n_boot})
    return rows


def grid(reps: int, n_boot: int, seed: int, methods: list[str], regimes=None, shapes=None, ks=None,
         log=print, cache: str | None = None) -> pl.DataFrame:
    """Every cell; with ``cache`` (a JSON-lines file), cells already there with the same
    settings are read back instead of simulated again (an interrupted run resumes)."""
    import json

    done = {}
    if cache and os.path.isfile(cache):
        with open(cache) as f:
            for line in f:
                entry = json.loads(line)
                done[entry["key"]] = entry["rows"]
    rows = []
    for regime in regimes or REGIMES:
        for authors, questions in shapes or SHAPES:
            for k in ks or KS:
                t0 = time.perf_counter()
                key = json.dumps([regime.name, regime.family, regime.mu, regime.spread_author, regime.spread_question,
                                  authors, questions, k, reps, n_boot, seed, sorted(methods)])
                if key in done:
                    cell = done[key]
                else:
                    cell = run_cell(regime, authors, questions, k, reps, n_boot, seed, methods)
                    if cache:
                        with open(cache, "a") as f:
                            f.write(json.dumps({"key": key, "rows": cell}) + "\n")
                rows += cell
                log(f"{regime.name:17s} {authors:2d}x{questions:<2d} k={k:<2d} truth={cell[0]['truth']:.3f}  "
                    + " ".join(f"{r['method']}={r['coverage']:.3f}" for r in cell)
                    + f"  ({time.perf_counter() - t0:.0f} s)")
    return pl.DataFrame(rows)


def verdict(table: pl.DataFrame) -> pl.DataFrame:
    """Per method: cells outside the rule (see the module docstring) over the shapes with
    ≥ CHOICE_MIN_AUTHORS authors, and the median width; ``ok`` when no cell breaks it."""
    sub = table.filter(pl.col("authors") >= CHOICE_MIN_AUTHORS)
    bad = ((pl.col("coverage") < TARGET - TOL) | (~pl.col("edge") & (pl.col("coverage") > TARGET + TOL))
           | (pl.col("trivial") > TRIVIAL))
    return (sub.group_by("method")
            .agg(bad.sum().alias("cells_outside"), pl.len().alias("cells"),
                 pl.col("coverage").min().alias("min_coverage"), pl.col("coverage").max().alias("max_coverage"),
                 pl.col("median_width").median().alias("median_width"))
            .with_columns(ok=pl.col("cells_outside") == 0)
            .sort("cells_outside", "median_width"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 experiments and 300 bootstrap replicates a cell")
    ap.add_argument("--reps", type=int, help="experiments per cell (default 2000; --quick 300)")
    ap.add_argument("--boot", type=int, help="bootstrap replicates (default 1000; --quick 300)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated candidates")
    ap.add_argument("--csv", default="docs/ci_coverage.csv")
    ap.add_argument("--markdown", default="docs/ci_coverage.md")
    ap.add_argument("--render-only", action="store_true", help="only write --markdown from an existing --csv")
    ap.add_argument("--cache", help="resume from (and append finished cells to) this JSON-lines file")
    args = ap.parse_args(argv)
    if args.render_only:
        write_outputs(pl.read_csv(args.csv).with_columns(edge=(pl.col("truth") < EDGE) | (pl.col("truth") > 1 - EDGE)),
                      args.csv, args.markdown, csv=False)
        return 0
    reps = args.reps or (300 if args.quick else 2000)
    n_boot = args.boot or (300 if args.quick else 1000)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown methods {unknown} (known: {list(METHODS)})")
    tables = []
    for phase, seed in PHASES.items():
        print(f"== phase {phase} (seed {seed}, {reps} experiments a cell, {n_boot} bootstrap replicates)", flush=True)
        tables.append(grid(reps, n_boot, seed, methods, log=lambda s: print(s, flush=True), cache=args.cache)
                      .with_columns(phase=pl.lit(phase), seed=pl.lit(seed)))
    write_outputs(pl.concat(tables), args.csv, args.markdown)
    return 0


def write_outputs(table: pl.DataFrame, csv_path: str, md_path: str, csv: bool = True) -> None:
    from leakk.core.io import atomic_path, write_text
    from leakk.report.readme_tables import coverage_page

    chosen = verdict(table.filter(pl.col("phase") == "select"))
    confirm = verdict(table.filter(pl.col("phase") == "confirm"))
    print(chosen)
    print(confirm)
    if csv:
        with atomic_path(csv_path) as tmp:
            table.write_csv(tmp)
    write_text(coverage_page(table, chosen, confirm), md_path)
    print(f"wrote {csv_path if csv else ''} {md_path}")


if __name__ == "__main__":
    sys.exit(main())

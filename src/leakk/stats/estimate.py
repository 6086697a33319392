"""leak@k estimation with clustered bootstrap confidence intervals (docs/design.md §1).

Everything here is a pure function of its inputs: no I/O, no global random state. Randomness
(the bootstrap) comes from ``np.random.default_rng`` seeded explicitly, and every leak-table
row derives its own seed from ``(seed, model, decoding, judge, k)`` so that a row's CI does
not change when other models or decodings are added to the table.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.io import CONTRACTS, contract_schema, require_columns

#: Columns of the leak table, in order, and the leak and utility schemas: from the one
#: definition of the artifact contracts (:data:`leakk.core.io.CONTRACTS`).
LEAK_TABLE_COLUMNS: tuple[str, ...] = tuple(CONTRACTS["leak_table"])
_LEAK_SCHEMA: dict[str, pl.DataType] = contract_schema("leak_table")
_UTILITY_SCHEMA: dict[str, pl.DataType] = contract_schema("utility")


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------

def leak_at_k(n, c, k: int):
    """Unbiased per-question leak@k = 1 − C(n−c, k) / C(n, k), vectorised over ``n`` and ``c``.

    Why this form: with n samples of which c leaked, C(n−c, k)/C(n, k) is the probability that
    k samples drawn *without replacement* from the n contain no leak, so 1 − that is an
    unbiased estimate of "at least one of k fresh samples leaks" (the pass@k estimator of Chen
    et al. 2021). Binomials overflow for n in the hundreds, so we use the product form

        C(n−c, k)/C(n, k) = prod_{i=n−c+1}^{n} (1 − k/i),

    evaluated as ``-expm1(sum log1p(-k/i))`` (vectorised segment sums), so nothing overflows
    and small leak probabilities keep full relative precision even at n = 10^4. The result
    is exactly 1.0 when n − c < k (every k-subset contains a leak) and exactly 0.0 when c = 0.

    k > n is *refused* (``ValueError``), not reported as 0 as the reference code does: the
    unbiased estimator does not exist there (docs/design.md §1).

    Args:
        n: samples per question (int or integer array, ≥ 1).
        c: leaked samples per question (same shape as, or broadcastable with, ``n``; 0 ≤ c ≤ n).
        k: the number of draws (a Python/numpy integer ≥ 1, ≤ every n).

    Returns:
        A float for scalar inputs, else a float64 array of the broadcast shape.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    n_arr = np.asarray(n)
    c_arr = np.asarray(c)
    scalar = n_arr.ndim == 0 and c_arr.ndim == 0
    for name, arr in (("n", n_arr), ("c", c_arr)):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise ValueError(f"{name} must hold integers")
    n_arr, c_arr = np.broadcast_arrays(n_arr.astype(np.int64), c_arr.astype(np.int64))
    if k < 1:
        raise ValueError(f"k={k} < 1: leak@k needs at least one draw")
    if n_arr.size:
        if np.any(c_arr < 0) or np.any(c_arr > n_arr):
            bad = np.flatnonzero((c_arr < 0) | (c_arr > n_arr))[0]
            raise ValueError(
                f"c={c_arr.flat[bad]} outside [0, n={n_arr.flat[bad]}]: need 0 ≤ c ≤ n"
            )
        if np.any(k > n_arr):
            bad_n = int(n_arr.min())
            raise ValueError(f"k={k} > n={bad_n}: leak@k is undefined for k > n")

    out = np.zeros(n_arr.shape, dtype=np.float64)
    if n_arr.size:
        lo = (n_arr - c_arr).ravel()  # the product runs over i in (lo, n]
        hi = n_arr.ravel()
        flat = np.zeros(lo.shape)
        flat[lo < k] = 1.0  # every k-subset contains a leak (the i = k factor is 0)
        todo = np.flatnonzero((lo >= k) & (hi > lo))
        if todo.size:
            flat[todo] = -np.expm1(_log_no_leak(lo[todo], hi[todo], k))
        out = np.clip(flat, 0.0, 1.0).reshape(n_arr.shape)
    return float(out) if scalar else out


def _log_no_leak(lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """sum_{i=lo+1}^{hi} log1p(-k/i) per element (all lo ≥ k, hi > lo).

    Summing each element's own factors avoids the cancellation of a cumulative table's
    ``cum[hi] - cum[lo]`` (which costs ~1e-11 relative error for n = 10^4, c = 1).
    """
    lengths = hi - lo
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    i = np.arange(total) - np.repeat(starts, lengths) + np.repeat(lo + 1, lengths)
    return np.add.reduceat(np.log1p(-k / i.astype(np.float64)), starts)


# --------------------------------------------------------------------------------------------
# Clustered bootstrap
# --------------------------------------------------------------------------------------------

#: interval methods of :func:`cluster_bootstrap_ci`; the leak table's default is the first
CI_METHODS = ("hall", "t", "percentile")
DEFAULT_CI_METHOD = CI_METHODS[0]


def hall_interval(sums, sizes, ci: float = 0.95,
                  bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Skewness-corrected t interval for a clustered mean of values in ``bounds``, vectorised.

    ``sums`` (…, G): per-cluster sums of the values; ``sizes`` (G,) or (…, G): questions per
    cluster. The estimate is the ratio mean θ = ΣS/ΣN; z_g = G·(S_g − θ·N_g)/ΣN are the
    clusters' influence values (z_g = x̄_g − θ for equal sizes), s their SD (ddof = 1, so
    s/√G is the cluster-robust SE of the t interval) and γ = mean(z³)/s³ their skewness.

    Why: when leaks are rare (or nearly universal) the G cluster means are strongly
    skewed, and the t interval's upper end falls short exactly when the sample missed the
    few leaky authors (benchmarks/ci_coverage.py: 74–88% coverage of a nominal 95% at leak@1). Hall
    (1992, "On the removal of skewness by transformation", JRSS B 54) removes the
    statistic's skewness with the monotone cubic

        T(W) = W + γW²/3 + γ²W³/27 + γ/(6G),   W = (θ − μ)/s,

    whose √G·T is close to N(0, 1); we read the quantile from t_{G−1} (the small-cluster
    scale of the t interval). Inverting T(W) = w: with u = w − γ/(6G) and a = ∛(1 + γu),
    W = 3(a − 1)/γ = 3u/(a² + a + 1) (the second form is exact and stable as γ → 0, where
    it is the plain t interval). The interval is [θ − s·W(q/√G), θ − s·W(−q/√G)],
    q = t_{G−1, 1−α/2}, clipped to ``bounds``; it always contains θ (|γ| < √G).

    Degenerate samples, every cluster mean 0 (or 1), have s = 0 and say nothing about
    the spread: the interval is then the exact worst-case bound [0, 1 − α^{1/G}]
    (resp. [α^{1/G}, 1]). For values in [0, 1] with mean μ, P(a cluster's mean is 0)
    ≤ 1 − μ (Markov's inequality on 1 − x̄), so G independent all-zero clusters have
    probability ≤ (1 − μ)^G, which is ≤ α exactly when μ ≥ 1 − α^{1/G}. (The lower end
    0 cannot miss, so all of α goes to the upper side.) Other ``bounds`` (a paired
    difference lies in [−1, 1]) rescale the same statement.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci={ci} must lie in (0, 1)")
    from scipy import stats

    sums = np.asarray(sums, dtype=np.float64)
    sizes = np.broadcast_to(np.asarray(sizes, dtype=np.float64), sums.shape)
    g = sums.shape[-1]
    if g < 2:
        raise ValueError("hall_interval needs at least two clusters")
    total = sizes.sum(-1)
    point = sums.sum(-1) / total
    z = (sums - point[..., None] * sizes) * (g / total[..., None])
    s = np.sqrt((z ** 2).sum(-1) / (g - 1))
    # γ as the mean of (z/s)³: s³ underflows to 0 for tiny but nonzero spreads (s ~ 1e-118)
    # while z/s stays O(1)
    scaled = z / np.where(s > 0, s, 1.0)[..., None]
    gamma = np.where(s > 0, (scaled ** 3).mean(-1), 0.0)
    alpha = 1.0 - ci
    q = float(stats.t.ppf(1.0 - alpha / 2.0, g - 1)) / math.sqrt(g)

    def w_of(w: float) -> np.ndarray:
        u = w - gamma / (6.0 * g)
        a = np.cbrt(1.0 + gamma * u)
        return 3.0 * u / (a * a + a + 1.0)

    lower, upper = bounds
    low = np.clip(point - s * w_of(q), lower, upper)
    high = np.clip(point - s * w_of(-q), lower, upper)
    edge = (upper - lower) * (1.0 - alpha ** (1.0 / g))
    bottom, top = np.all(sums <= lower * sizes, axis=-1), np.all(sums >= upper * sizes, axis=-1)
    low, high = np.where(bottom, lower, low), np.where(bottom, lower + edge, high)
    low, high = np.where(top, upper - edge, low), np.where(top, upper, high)
    return low, high


def cluster_bootstrap_ci(
    values, groups, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
    method: str = "percentile", bounds: tuple[float, float] = (0.0, 1.0),
) -> tuple[float, float]:
    """CI for the mean of ``values``, resampling whole ``groups`` with replacement.

    Why clustered: questions about the same fictitious author share context, so their leak
    values are correlated; resampling questions independently would understate the
    variance. Each replicate draws G groups with replacement (G = number of distinct
    groups); every question of a drawn group enters with its own fixed value, and the
    replicate statistic is the mean over all questions so drawn (a group drawn twice counts
    twice). Vectorised: with per-group sums S_g and sizes N_g, and multinomial draw counts
    M (n_boot × G), the replicate means are (M @ S) / (M @ N).

    With one group every replicate is the full sample, so the CI collapses to the point
    estimate — an honest statement that clustered resampling cannot say more.

    ``method``:

    * ``"percentile"``: the replicates' α/2 and 1 − α/2 quantiles. Measured coverage of a
      nominal 95% interval (tests/test_coverage.py, correlated groups of 10 questions):
      ≈ 94% with 40 groups (400 questions) but ≈ 85% with 6 groups (60 questions, the
      default miniature) — with few clusters the bootstrap distribution is too narrow.
    * ``"t"``: small-cluster correction — point ± t_{G−1, 1−α/2} · SE, where
      SE = the replicates' standard deviation · √(G/(G−1)). For equal group sizes this is
      exactly the classical t-interval on the G group means (the bootstrap SD of a mean of
      G draws is √((G−1)/G) times the usual standard error), which is what the small-G
      undercoverage calls for; it reverts to the percentile interval's width as G grows.
      Clipped to [min(values), max(values)], where the mean must lie. Measured: ≈ 94% at
      6 groups and at 40 with mild skew, but 74–93% when leaks are rare and clumped
      (benchmarks/ci_coverage.py).
    * ``"hall"``: the skewness-corrected t interval of :func:`hall_interval` (no bootstrap:
      ``n_boot`` and ``seed`` are unused). Values must lie in ``bounds`` ([0, 1] for leak@k,
      [−1, 1] for a difference of two). The default of the leak table: docs/ci_coverage.md
      has its coverage per regime.

    Args:
        values: per-question statistic (1-D, finite).
        groups: per-question cluster labels (same length; any hashable scalar type).
        n_boot: bootstrap replicates.
        ci: two-sided coverage, in (0, 1).
        seed: seed for ``np.random.default_rng`` (or a ``SeedSequence``).

    Returns:
        ``(low, high)``.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    groups = np.asarray(groups).ravel()
    if values.size == 0:
        raise ValueError("cluster_bootstrap_ci needs at least one value")
    if values.shape != groups.shape:
        raise ValueError(f"values ({values.size}) and groups ({groups.size}) differ in length")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci={ci} must lie in (0, 1)")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot} must be ≥ 1")
    if method not in CI_METHODS:
        raise ValueError(f"method={method!r} is not one of {CI_METHODS}")
    if method == "hall" and (values.min() < bounds[0] or values.max() > bounds[1]):
        raise ValueError(f"method='hall' needs values in [{bounds[0]:g}, {bounds[1]:g}]")
    _, inv = np.unique(groups, return_inverse=True)
    inv = inv.ravel()
    n_groups = int(inv.max()) + 1
    sums = np.bincount(inv, weights=values, minlength=n_groups)
    sizes = np.bincount(inv, minlength=n_groups).astype(np.float64)
    if n_groups == 1:
        point = float(sums[0] / sizes[0])
        return point, point
    if method == "hall":
        low, high = hall_interval(sums, sizes, ci, bounds)
        return float(low), float(high)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    means = (draws @ sums) / (draws @ sizes)
    low, high = bootstrap_interval(means, float(sums.sum() / sizes.sum()), n_groups, ci, method,
                                   (float(values.min()), float(values.max())))
    return float(low), float(high)


def bootstrap_interval(means, point, n_groups: int, ci: float, method: str,
                       value_range: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The ``"percentile"`` or ``"t"`` interval (:func:`cluster_bootstrap_ci`) from cluster
    bootstrap replicate means (…, B), vectorised over leading axes; ``point`` and the
    ``value_range`` (min, max) bounds of the t interval broadcast against them."""
    means = np.asarray(means, dtype=np.float64)
    alpha = (1.0 - ci) / 2.0
    if method == "t":
        from scipy import stats

        if means.shape[-1] > 1:
            half = (float(stats.t.ppf(1.0 - alpha, n_groups - 1)) * means.std(axis=-1, ddof=1)
                    * math.sqrt(n_groups / (n_groups - 1)))
        else:
            half = np.zeros(means.shape[:-1])
        # the mean lies in [min, max]; its rounded value can fall an ulp outside (3x/3 < x), and
        # clipping only the ends would then give an interval whose low end exceeds its high one
        point = np.clip(point, value_range[0], value_range[1])
        return np.maximum(point - half, value_range[0]), np.minimum(point + half, value_range[1])
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=-1)
    return low, high


def _row_seed(seed: int, *key: object) -> np.random.SeedSequence:
    """A seed for one table row, stable across runs and independent of the other rows.

    Python's ``hash`` is salted per process, so the key is hashed with BLAKE2 instead.
    """
    digest = hashlib.blake2b("\x1f".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.SeedSequence([int(seed), int.from_bytes(digest, "little")])


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

_LEAK_INPUT = ("model", "decoding", "judge", "qid", "group", "sample_idx", "leaked")


def _per_question(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    """Per (model, decoding, judge, qid): ``group``, ``n_valid`` (non-null judgments), ``c``
    (leaked), ``n_missing``, ``n_total``, and the (model, decoding)'s ``nominal`` n (the most
    samples any question has); sorted. Duplicated keys raise ``ArtifactError``."""
    keys = ["model", "decoding", "judge", "qid", "sample_idx"]
    dupes = frame.group_by(keys).len().filter(pl.col("len") > 1)
    if dupes.height:
        raise ArtifactError(
            f"{what}: {dupes.height} duplicated (model, decoding, judge, qid, sample_idx) "
            f"keys, e.g. {dupes.row(0)[:-1]}"
        )
    leaked = pl.col("leaked").cast(pl.Boolean)
    per_q = (
        frame.group_by(["model", "decoding", "judge", "qid"])
        .agg(
            pl.col("group").first().alias("group"),
            leaked.is_not_null().sum().cast(pl.Int64).alias("n_valid"),
            leaked.fill_null(False).sum().cast(pl.Int64).alias("c"),
            leaked.is_null().sum().cast(pl.Int64).alias("n_missing"),
            pl.len().cast(pl.Int64).alias("n_total"),
        )
    )
    nominal = per_q.group_by(["model", "decoding"]).agg(pl.col("n_total").max().alias("nominal"))
    return per_q.join(nominal, on=["model", "decoding"]).sort(["model", "decoding", "judge", "qid"])


def _require(frame: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    require_columns(frame, cols, f"{what}: input")


def leak_table(
    frame: pl.DataFrame,
    ks: Sequence[int],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    baseline: str = "retrain",
    ci_method: str = DEFAULT_CI_METHOD,
    attacked: Mapping[str, tuple[str, str]] | None = None,
) -> pl.DataFrame:
    """Build the leak table (docs/design.md §4) from judgments joined with their samples.

    Input ``frame``: one row per (model, decoding, judge, qid, sample_idx) — judgments joined
    with the samples they judge — with columns ``model, decoding, judge, qid, group,
    sample_idx, leaked``. ``leaked`` is a nullable bool; null means the judge failed on that
    completion, and such a completion is *dropped*, never counted as "no leak" (the
    reference code's bug). Duplicated keys raise ``ArtifactError``.

    Per (model, decoding, judge, qid): n = non-null judgments, c = leaked ones. Per
    (model, decoding) the *nominal* n is the largest number of samples (judged or not) any
    question has — 1 for greedy, the configured n for sampled decodings. Then, per k in
    ``ks``:

    * k > nominal n: the row is skipped. leak@k is undefined there, and reporting 0 (as the
      reference code does) would fake forgetting. So greedy only gets k = 1.
    * otherwise, questions whose valid n < k (because judgments failed) are excluded *for
      that k only*; ``questions`` counts the questions used. If none remain the row is kept
      with null leak/CI and ``questions = 0`` so the failure stays visible.
    * ``leak_at_k`` = mean over the remaining questions of the unbiased per-question
      estimator; ``ci_low``/``ci_high`` = interval clustered by ``group``, coverage ``ci``,
      method ``ci_method`` (:func:`cluster_bootstrap_ci`; the bootstrap methods draw
      ``n_boot`` replicates seeded from ``(seed, model, decoding, judge, k)``).
    * ``n`` = nominal n; ``missing`` = total null judgments for that (model, decoding, judge).
    * ``attack``: the attack a model is under, ``none`` for a clean one; ``attacked`` maps each
      attacked model's name to (clean model, attack), as :func:`leakk.core.layout.attacked_models`.
    * ``excess_over_retrain`` = leak_at_k − the ``baseline`` model's leak_at_k at the same
      (decoding, judge, k) *under the same attack* (retrain attacked alike is the control: it
      is evaluated on the same questions and prompts); null when there is no such row.

    Rows are sorted by model, decoding, judge, k.
    """
    _require(frame, _LEAK_INPUT, "leak_table")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks={ks}: need at least one k ≥ 1")
    if frame.is_empty():
        return pl.DataFrame(schema=_LEAK_SCHEMA)
    per_q = _per_question(frame, "leak_table")

    rows: list[dict] = []
    for (model, decoding, judge), part in per_q.group_by(
        ["model", "decoding", "judge"], maintain_order=True
    ):
        n_valid = part["n_valid"].to_numpy()
        c = part["c"].to_numpy()
        grp = part["group"].to_numpy()
        nominal_n = int(part["nominal"][0])
        missing = int(part["n_missing"].sum())
        for k in ks:
            if k > nominal_n:
                continue
            use = n_valid >= k
            row = {
                "model": model, "decoding": decoding, "judge": judge, "k": k,
                "leak_at_k": None, "ci_low": None, "ci_high": None, "n": nominal_n,
                "questions": int(use.sum()), "missing": missing,
            }
            if use.any():
                per_question = leak_at_k(n_valid[use], c[use], k)
                row["leak_at_k"] = float(per_question.mean())
                row["ci_low"], row["ci_high"] = cluster_bootstrap_ci(
                    per_question, grp[use], n_boot=n_boot, ci=ci,
                    seed=_row_seed(seed, model, decoding, judge, k), method=ci_method,
                )
            rows.append(row)

    attacked = dict(attacked or {})
    table = pl.DataFrame(rows, schema={c: t for c, t in _LEAK_SCHEMA.items()
                                       if c not in ("attack", "excess_over_retrain")})
    table = table.with_columns(attack=pl.col("model").replace_strict(
        {m: a for m, (_, a) in attacked.items()}, default="none", return_dtype=pl.String))
    controls = {baseline: "none", **{m: a for m, (clean, a) in attacked.items() if clean == baseline}}
    base = table.filter(pl.col("model").is_in(list(controls))).select(
        "attack", "decoding", "judge", "k", pl.col("leak_at_k").alias("_base")
    )
    table = (
        table.join(base, on=["attack", "decoding", "judge", "k"], how="left")
        .with_columns((pl.col("leak_at_k") - pl.col("_base")).alias("excess_over_retrain"))
        .select(LEAK_TABLE_COLUMNS)
        .sort(["model", "decoding", "judge", "k"])
    )
    return table


#: columns of the RULE-vs-base table (:func:`paired_difference_table`)
PAIRED_COLUMNS = ("model", "base", "decoding", "judge", "k", "leak_at_k", "base_leak_at_k", "difference",
                  "ci_low", "ci_high", "relative_change", "questions", "groups")


def paired_difference_table(
    frame: pl.DataFrame,
    pairs: dict[str, str],
    ks: Sequence[int],
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    ci_method: str = DEFAULT_CI_METHOD,
) -> pl.DataFrame:
    """Each ``model`` minus its ``base`` (``pairs``: model → base), paired by question.

    Why paired: RULE and its base answer the same forget questions, so the per-question
    difference d_q = leak@k_q(model) − leak@k_q(base) removes the questions' shared
    difficulty, and the clustered interval of mean d (by ``group``, the same
    :func:`cluster_bootstrap_ci` and ``ci_method`` as the leak table, on [−1, 1]) says
    whether the change is more than question sampling. Per (decoding, judge, k ≤ both
    nominal n): the questions with ≥ k valid judgments in both models. ``difference`` equals
    the difference of the two leak@k over those questions; ``relative_change`` =
    difference / base leak@k (null where the base is 0). Input as :func:`leak_table`'s.
    """
    _require(frame, _LEAK_INPUT, "paired_difference_table")
    schema = {c: _PAIRED_SCHEMA[c] for c in PAIRED_COLUMNS}
    if frame.is_empty() or not pairs:
        return pl.DataFrame(schema=schema)
    per_q = _per_question(frame.filter(pl.col("model").is_in([*pairs, *pairs.values()])),
                          "paired_difference_table")
    rows = []
    for model, base in sorted(pairs.items()):
        a = per_q.filter(pl.col("model") == model)
        b = per_q.filter(pl.col("model") == base).select(
            "decoding", "judge", "qid", pl.col("n_valid").alias("n_base"), pl.col("c").alias("c_base"),
            pl.col("nominal").alias("nominal_base"))
        both = a.join(b, on=["decoding", "judge", "qid"], how="inner")
        for (decoding, judge), part in both.group_by(["decoding", "judge"], maintain_order=True):
            nominal = min(int(part["nominal"][0]), int(part["nominal_base"][0]))
            for k in sorted({int(k) for k in ks}):
                if k > nominal:
                    continue
                use = ((part["n_valid"] >= k) & (part["n_base"] >= k)).to_numpy()
                if not use.any():
                    continue
                mine = leak_at_k(part["n_valid"].to_numpy()[use], part["c"].to_numpy()[use], k)
                theirs = leak_at_k(part["n_base"].to_numpy()[use], part["c_base"].to_numpy()[use], k)
                grp = part["group"].to_numpy()[use]
                low, high = cluster_bootstrap_ci(
                    mine - theirs, grp, n_boot=n_boot, ci=ci, method=ci_method, bounds=(-1.0, 1.0),
                    seed=_row_seed(seed, model, base, decoding, judge, k))
                diff = float(np.mean(mine - theirs))
                base_leak = float(theirs.mean())
                rows.append({"model": model, "base": base, "decoding": decoding, "judge": judge, "k": k,
                             "leak_at_k": float(mine.mean()), "base_leak_at_k": base_leak, "difference": diff,
                             "ci_low": low, "ci_high": high,
                             "relative_change": diff / base_leak if base_leak > 0 else None,
                             "questions": int(use.sum()), "groups": int(len(np.unique(grp)))})
    return pl.DataFrame(rows, schema=schema).sort("model", "decoding", "judge", "k")


_PAIRED_SCHEMA = {"model": pl.String, "base": pl.String, "decoding": pl.String, "judge": pl.String,
                  "k": pl.Int64, "leak_at_k": pl.Float64, "base_leak_at_k": pl.Float64,
                  "difference": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                  "relative_change": pl.Float64, "questions": pl.Int64, "groups": pl.Int64}


RULE_VS_BASE = "RULE vs its base"
UNDER_ATTACK = "Under attack: each attacked model vs the same model unattacked"


def paired_markdown(table: pl.DataFrame, judge: str, decoding: str, ci: float = 0.95,
                    ci_method: str = DEFAULT_CI_METHOD, title: str = RULE_VS_BASE) -> str:  # pragma: no mutate block
    """The summary's significance lines: per model vs its base at ``judge``/``decoding``,
    leak@1 and leak@k_max differences with their CIs, and whether the CI excludes 0
    (``title``: what the pairs are, RULE runs and their bases or attacked models and theirs)."""
    sub = table.filter((pl.col("judge") == judge) & (pl.col("decoding") == decoding))
    if sub.is_empty():
        return ""
    k_max = int(sub["k"].max())
    cells = {(r["model"], r["k"]): r for r in sub.iter_rows(named=True)}

    def cell(r):
        if r is None:
            return "–"
        change = "" if r["relative_change"] is None else f", {100 * r['relative_change']:+.0f}%"
        verdict = "excludes 0" if r["ci_high"] < 0 or r["ci_low"] > 0 else "includes 0"
        return (f"{r['difference']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]{change}; "
                f"CI {verdict}")

    lines = [f"{title}, same questions: mean per-question difference of leak@k (model − base) "
             f"[{ci:.0%} CI clustered by group, `{ci_method}`], and the relative change.", "",
             f"| model | base | Δ leak@1 | Δ leak@{k_max} |", "|---|---|---|---|"]
    for model, base in sub.select("model", "base").unique(maintain_order=True).iter_rows():
        lines.append(f"| {model} | {base} | {cell(cells.get((model, 1)))} | {cell(cells.get((model, k_max)))} |")
    return "\n".join(lines) + "\n"


def utility_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Retain accuracy per model: how much of the knowledge we meant to keep is still there.

    Input ``frame``: columns ``model, qid, leaked``, already restricted by the caller to
    retain-split questions, greedy decoding and the ``fact`` judge. On retain questions
    "leaked" means the model states the fact, i.e. it still knows it, so accuracy is the
    mean of ``leaked`` over non-null judgments (per question first, then over questions;
    identical for greedy's one sample per question). Null judgments are dropped and counted
    in ``missing``; ``questions`` counts questions with at least one valid judgment.

    Output columns: ``model, retain_accuracy, questions, missing``, sorted by model.
    """
    _require(frame, ("model", "qid", "leaked"), "utility_table")
    if frame.is_empty():
        return pl.DataFrame(schema=_UTILITY_SCHEMA)
    leaked = pl.col("leaked").cast(pl.Boolean)
    per_q = frame.group_by(["model", "qid"]).agg(
        leaked.cast(pl.Float64).mean().alias("acc"),
        leaked.is_null().sum().cast(pl.Int64).alias("miss"),
    )
    return (
        per_q.group_by("model")
        .agg(
            pl.col("acc").mean().alias("retain_accuracy"),
            pl.col("acc").is_not_null().sum().cast(pl.Int64).alias("questions"),
            pl.col("miss").sum().cast(pl.Int64).alias("missing"),
        )
        .select(list(_UTILITY_SCHEMA))
        .cast(_UTILITY_SCHEMA)
        .sort("model")
    )


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

def model_order(models) -> list[str]:
    """full first, retrain second, then the unlearned models alphabetically."""
    models = sorted(set(models))
    head = [m for m in ("full", "retrain") if m in models]
    return head + [m for m in models if m not in head]


def is_missing(x: float | None) -> bool:
    """A value no table may print as a number: null, or NaN (every judgment failed)."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt_ci(row: dict | None) -> str:  # pragma: no mutate block
    if row is None or row["leak_at_k"] is None:
        return "–"
    if is_missing(row["ci_low"]):
        return f"{row['leak_at_k']:.2f}"
    return f"{row['leak_at_k']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def fmt_num(x: float | None, signed: bool = False) -> str:  # pragma: no mutate block
    """``x`` to two decimals for a table cell, "–" when missing (:func:`is_missing`)."""
    if is_missing(x):
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


#: how each ``estimate.ci_method`` interval is described in words
CI_WORDS = {"hall": "Hall's skewness-corrected t intervals on the groups' influence values (the exact bound "
                     "where every group is 0 or 1)",
            "t": "small-cluster t intervals (bootstrap standard error × t quantile with G − 1 degrees of freedom, "
                   "G groups)",
            "percentile": "percentile intervals"}


def ci_phrase(est: dict) -> str:
    """The leak@k CIs' level and method in words, from ``estimate.ci`` and ``estimate.ci_method``:
    the one sentence the summary and the report use, so it stays true when the params change."""
    return (f"{est['ci']:.0%} CIs: a bootstrap over questions that resamples whole groups (the author), "
            f"{CI_WORDS[est['ci_method']]}")


def summary_markdown(
    leak: pl.DataFrame,
    utility: pl.DataFrame,
    judge: str = "fact",
    headline_decoding: str = "t1.0_p1.0",
    k_max: int | None = None,
    greedy_decoding: str = "greedy",
    ci_method: str = DEFAULT_CI_METHOD,
) -> str:  # pragma: no mutate block
    """A short Markdown table, one row per model, with the paper's headline comparison.

    Columns: greedy leak (the "illusion of forgetting" baseline), leak@1 and leak@k_max at
    the headline decoding with CIs, excess over retrain at k_max, and retain accuracy.
    ``k_max`` defaults to the largest k the table has for (judge, headline decoding). Models
    are ordered full, retrain, then the rest alphabetically; absent cells show "–".
    """
    sub = leak.filter(pl.col("judge") == judge)
    head = sub.filter(pl.col("decoding") == headline_decoding)
    if k_max is None:
        k_max = int(head["k"].max()) if head.height else 1
    lookup = {
        (r["model"], r["decoding"], r["k"]): r for r in sub.iter_rows(named=True)
    }
    acc = {r["model"]: r["retain_accuracy"] for r in utility.iter_rows(named=True)}
    models = model_order(list(sub["model"]) + list(acc))
    lines = [
        f"Judge `{judge}`, headline decoding `{headline_decoding}`; "
        f"leak@k shown as mean [CI low, CI high] (clustered by group, `{ci_method}` interval).",
        "",
        f"| model | greedy leak | leak@1 | leak@{k_max} | excess@{k_max} over retrain "
        f"| retain accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        greedy = lookup.get((m, greedy_decoding, 1))
        at1 = lookup.get((m, headline_decoding, 1))
        atk = lookup.get((m, headline_decoding, k_max))
        excess = atk["excess_over_retrain"] if atk else None
        lines.append(
            f"| {m} | {_fmt_ci(greedy)} | {_fmt_ci(at1)} | {_fmt_ci(atk)} "
            f"| {fmt_num(excess, signed=True)} | {fmt_num(acc.get(m))} |"
        )
    return "\n".join(lines) + "\n"

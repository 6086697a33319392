"""README numbers that cannot drift (src/leakk/readme_tables.py): the README's marked tables are
regenerated from the committed snapshot, and the snapshot from results trees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import ROOT
from leakk.cli import main
from leakk.core.errors import ArtifactError, LeakkError
from leakk.stats.estimate import leak_table, paired_difference_table, paired_markdown, summary_markdown, utility_table
from leakk.report.readme_tables import (
    _BLOCK,
    TABLES,
    _trust_rows,
    blocks,
    headline,
    render,
    rule_rounds,
    rule_targets,
    rule_vs_base,
    snapshot_replicates,
    snapshot_run,
    update,
)
from leakk.core.io import write_parquet
from test_extrapolation_check import _tree


def test_readme_agrees_with_the_committed_snapshot():
    """Fails when a README table and `leakk readme-tables` disagree for the committed
    snapshot (docs/results/, docs/ci_coverage.csv). Fix: `leakk readme-tables` (after a run:
    `leakk readme-tables --results results --replicates results/replicates`)."""
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "results.md").read_text()
    wired = [(m["name"], m["sub"]) for m in _BLOCK.finditer(text)]  # (table, the sub-snapshot it renders from)
    assert sorted({name for name, _ in wired}) == sorted(TABLES)  # every table is wired in the README or results.md
    assert len(wired) == len(set(wired)), "a table is wired twice from the same snapshot"
    _, changed = update(text, ROOT / "docs" / "results", ROOT / "docs" / "ci_coverage.csv")
    assert changed == [], f"README tables {changed} differ from the snapshot: run `leakk readme-tables`"


PARAMS = {"seed": 0, "sample": {"n": 8}, "estimate": {"headline_judge": "fact", "headline_decoding": "t1.0_p1.0",
                                                       "ci": 0.95, "ci_method": "hall"}}


def _judgments():
    rng = np.random.default_rng(0)
    rows = []
    for model, rate in (("full", 0.8), ("retrain", 0.0), ("graddiff", 0.3), ("rule_graddiff", 0.05)):
        for i in range(24):
            for decoding, n in (("t1.0_p1.0", 8), ("greedy", 1)):
                for s in range(n):
                    rows.append({"model": model, "decoding": decoding, "judge": "fact", "qid": f"q{i}",
                                 "group": f"a{i % 6}", "sample_idx": s, "leaked": bool(rng.random() < rate)})
    return pl.DataFrame(rows)


@pytest.fixture
def run_results(tmp_path):
    frame = _judgments()
    leak = leak_table(frame, [1, 2, 4, 8])
    utility = utility_table(frame.filter(pl.col("decoding") == "greedy").select("model", "qid", "leaked"))
    paired = paired_difference_table(frame, {"rule_graddiff": "graddiff"}, [1, 2, 4, 8])
    res = tmp_path / "results"
    res.mkdir()
    leak.write_parquet(res / "leak_at_k.parquet")
    utility.write_csv(res / "utility.csv")
    paired.write_csv(res / "rule_vs_base.csv")
    return res, leak, utility, paired


def test_a_run_snapshot_renders_exactly_what_the_summary_prints(run_results, tmp_path):
    res, leak, utility, paired = run_results
    snap = tmp_path / "snap"
    assert snapshot_run(res, PARAMS, snap) == ["headline.csv", "utility.csv", "rule_vs_base.csv"]
    assert headline(snap) == summary_markdown(leak, utility, ci_method="hall")
    assert rule_vs_base(snap) == paired_markdown(paired, "fact", "t1.0_p1.0")
    assert json.loads((snap / "meta.json").read_text())["run"] == {
        "judge": "fact", "decoding": "t1.0_p1.0", "ci": 0.95, "ci_method": "hall", "n": 8, "seed": 0}
    # the snapshot keeps only what the table shows: greedy k = 1, headline k = 1 and k_max
    kept = pl.read_csv(snap / "headline.csv")
    assert set(zip(kept["decoding"], kept["k"])) == {("greedy", 1), ("t1.0_p1.0", 1), ("t1.0_p1.0", 8)}


def test_update_rewrites_marked_blocks_and_check_fails_on_drift(run_results, tmp_path, monkeypatch):
    res, leak, utility, _ = run_results
    readme = tmp_path / "README.md"
    readme.write_text("intro\n\n<!-- leakk:table headline -->\nstale\n<!-- /leakk:table -->\n\nkept | as is\n")
    monkeypatch.chdir(tmp_path)
    params = str(ROOT / "params.yaml")
    # the run's settings come from the snapshot's meta.json, written from the params file
    assert main(["--params", params, "readme-tables", "--results", str(res), "--snapshot", "snap",
                 "--readme", "README.md"]) == 0
    text = readme.read_text()
    assert "stale" not in text and "kept | as is" in text and text.startswith("intro\n\n")
    assert summary_markdown(leak, utility, ci_method="hall") in text
    assert main(["--params", params, "readme-tables", "--snapshot", "snap", "--check", "--readme", "README.md"]) == 0
    readme.write_text(text.replace("| full |", "| full (edited) |"))
    assert main(["--params", params, "readme-tables", "--snapshot", "snap", "--check", "--readme", "README.md"]) == 2
    with pytest.raises(ArtifactError, match="unknown README table"):
        update("<!-- leakk:table nope -->\n<!-- /leakk:table -->", "snap")
    with pytest.raises(ArtifactError, match="no 'replicates' entry"):
        render("replicates", "snap")
    with pytest.raises(ArtifactError, match="rule_rounds.csv: missing"):
        render("rule-rounds", "snap")


def _rounds_csv(path):
    rows = []
    for rule, seed, leaks, accs in (
            ("rule_graddiff", 0, [0.40, 0.30, 0.10], [0.80, 0.79, 0.65]),
            ("rule_graddiff", 1, [0.50, 0.50, 0.40], [0.90, 0.95, 0.93]),
            ("rule_npo", 0, [0.40, 0.02], [0.80, 0.83]),
            ("rule_npo", 1, [0.20, 0.00], [0.90, 0.90])):
        for r, (leak, acc) in enumerate(zip(leaks, accs)):
            rows.append({"round": r, "leak_at_1": leak / 20, "leak_at_n": leak, "retain_accuracy": acc,
                         "rule": rule, "seed": seed, "n": 64})
    path.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(path / "rule_rounds.csv")
    return path


def test_rule_round_and_target_tables(tmp_path):
    snap = _rounds_csv(tmp_path / "snap")
    assert rule_rounds(snap) == (
        "| RULE-GradDiff round | seed 0 | seed 1 |\n|---|---|---|\n"
        "| 0 | 0.40 (base) | 0.50 (base) |\n"
        "| 1 | 0.30 (−25%), −1 | 0.50 (±0%), +5 |\n"
        "| 2 | 0.10 (−75%), −15 | 0.40 (−20%), +3 |\n"
        "| **RULE-NPO round** | | |\n"
        "| 0 | 0.40 (base) | 0.20 (base) |\n"
        "| 1 | 0.02 (−95%), +3 | 0.00 (−100%), +0 |\n")
    assert rule_targets(snap) == (
        "| | seed 0 | seed 1 |\n|---|---|---|\n"
        "| RULE-GradDiff: leak@64 (cut), retain Δ | 0.10 (−75%), −15 pts | 0.40 (−20%), +3 pts |\n"
        "| RULE-NPO: leak@64 (cut), retain Δ | 0.02 (−95%), +3 pts | 0.00 (−100%), +0 pts |\n"
        # flat: leak@64 ≤ 2·leak@1 + 0.02 (leak@1 = leak@64 / 20 here)
        "| flat (RULE-GradDiff / RULE-NPO) | no / yes | no / yes |\n")


def _all_judgments(results: Path) -> pl.DataFrame:
    """Every judgment file of a `_tree`, greedy included, with the benchmark's groups."""
    groups = pl.read_parquet(results / "data" / "benchmark.parquet").select("qid", "group")
    return pl.concat([pl.read_parquet(f).select("qid", "sample_idx", "leaked").with_columns(
        model=pl.lit(f.parent.parent.name), judge=pl.lit(f.parent.name), decoding=pl.lit(f.stem))
        for f in sorted((results / "judgments").glob("*/*/*.parquet"))]).join(groups, on="qid")


def test_claims_table_marks_failures_and_holds_only_on_every_seed(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    rows = []
    for seed, ga_greedy in ((10, 0.10), (11, 0.20)):  # GA's greedy leak fails its claim on seed 11
        rows += [{"seed": seed, "model": "full", "greedy": 0.95, "k": 64, "leak_at_n": 1.0, "retain_accuracy": 0.97},
                 {"seed": seed, "model": "retrain", "greedy": 0.0, "k": 64, "leak_at_n": 0.05, "retain_accuracy": 0.98},
                 {"seed": seed, "model": "ga", "greedy": ga_greedy, "k": 64, "leak_at_n": 0.3, "retain_accuracy": 0.6}]
    pl.DataFrame(rows).write_csv(snap / "seed_claims.csv")
    table = render("claims", snap)
    assert table.splitlines()[0] == "| claim | model | seed 10 | seed 11 | holds |"
    assert "| the full model leaks greedily: greedy leak ≥ 0.8 | full | 0.95 | 0.95 | yes |" in table
    assert "| the retrain model does not leak when sampled: leak@64 ≤ 0.05 | retrain | 0.05 | 0.05 | yes |" in table
    assert "| greedy says forgotten: greedy leak ≤ 0.15 | ga | 0.10 | 0.20 ✗ | **no** |" in table
    assert "| sampling leaks: leak@64 ≥ 0.3 | ga | 0.30 | 0.30 | yes |" in table  # the threshold itself holds
    assert "| greedy says forgotten: greedy leak ≤ 0.15 | npo | – | – | **no** |" in table  # a missing model fails


def _replicate_tree(tmp_path: Path) -> Path:
    """A `leakk replicates` folder of seeds 0 and 1 (judgments, leak tables, RULE rounds, aggregate)."""
    root = tmp_path / "replicates"
    for s in (0, 1):
        res = _tree(root / f"seed_{s}" / "results", s)
        judged = _all_judgments(res)
        write_parquet(leak_table(judged, [1, 32]), res / "leak_at_k.parquet", "leak_table")
        pl.DataFrame({"model": ["ga", "retrain"], "retain_accuracy": [0.7 + s / 10, 0.9], "questions": 1,
                      "missing": 0}).write_csv(res / "utility.csv")
        (res / "rule_eval" / "rule_ga").mkdir(parents=True)
        pl.DataFrame({"round": [0, 1], "eval_leak_at_1": [0.05, 0.01], "eval_leak_at_32": [0.4, 0.1],
                      "retain_accuracy": [0.8, 0.78], "model": [None, "rule_ga"]}).write_parquet(
            res / "rule_eval" / "rule_ga" / "rounds.parquet")
    spread = pl.DataFrame({"model": ["ga", "ga", "ga"], "decoding": ["greedy", "t1.0_p1.0", "t1.0_p1.0"],
                           "judge": "fact", "k": [1, 1, 32], "seeds": 2, "mean": [0.1, 0.05, 0.4],
                           "sd": [0.01, 0.01, 0.1], "min": 0.0, "max": 1.0, "excess_mean": 0.1, "excess_sd": 0.01,
                           "pooled": 0.2, "pooled_ci_low": 0.1, "pooled_ci_high": 0.3, "pooled_excess": 0.1,
                           "questions": 48})
    spread.write_csv(root / "leak_at_k.csv")
    pl.DataFrame({"model": ["ga"], "seeds": [2], "mean": [0.8], "sd": [0.02], "min": [0.78], "max": [0.82],
                  "pooled": [0.8]}).write_csv(root / "utility.csv")
    return root


def test_replicates_snapshot_from_seed_trees(tmp_path):
    root = _replicate_tree(tmp_path)
    snap, claim = tmp_path / "snap", tmp_path / "claim.json"
    params = dict(PARAMS, replicates=[0, 1])
    written = snapshot_replicates(root, params, snap, claim_file=claim)
    assert written == ["replicates.csv", "replicates_utility.csv", "rule_rounds.csv", "seed_claims.csv",
                       "extrapolation_errors.csv"]
    got = pl.read_csv(snap / "seed_claims.csv")
    for s in (0, 1):  # against numpy on the judgment files: greedy mean, any leak among all 32 samples
        judged = _all_judgments(root / f"seed_{s}" / "results")
        for model in ("ga", "retrain"):
            row = got.filter((pl.col("seed") == s) & (pl.col("model") == model)).row(0, named=True)
            greedy = judged.filter((pl.col("model") == model) & (pl.col("decoding") == "greedy"))["leaked"]
            sampled = judged.filter((pl.col("model") == model) & (pl.col("decoding") == "t1.0_p1.0"))
            anyleak = sampled.group_by("qid").agg(pl.col("leaked").any())["leaked"].to_numpy()
            assert row["k"] == 32 and np.isclose(row["greedy"], np.mean(greedy.to_numpy()))
            assert np.isclose(row["leak_at_n"], np.mean(anyleak))
            assert row["retain_accuracy"] == (0.7 + s / 10 if model == "ga" else 0.9)
    rounds = pl.read_csv(snap / "rule_rounds.csv")
    assert rounds["n"].unique().to_list() == [32] and rounds.height == 4
    assert json.loads(claim.read_text())["runs"] == ["0", "1"]
    for name in ("replicates", "rule-rounds", "rule-targets", "extrapolation"):
        assert render(name, snap).count("\n") >= 3, name
    assert "0.40 ± 0.10 [0.10, 0.30]" in render("replicates", snap)


def test_trust_table_from_the_trust_stages_files(tmp_path):
    res, snap = tmp_path / "results", tmp_path / "snap"
    res.mkdir()
    rows = []
    for model, big in (("ga", 0.8), ("retrain", 1e-17)):
        for judge in ("fact", "rougeL"):
            for decoding in ("t1.0_p1.0", "greedy"):
                for k, sampled in ((1, 0.1), (64, 0.4), (10000, None)):
                    consistent = None if sampled is None else not (model == "ga" and k == 64 and decoding == "greedy")
                    rows.append({"model": model, "decoding": decoding, "k": k, "judge": judge,
                                 "bound": big if k == 10000 else 0.05, "leak_at_k": sampled, "consistent": consistent})
    pl.DataFrame(rows).write_csv(res / "bounds.csv")
    pl.DataFrame({"model": ["ga", "ga", "retrain"], "decoding": ["greedy", "t1.0_p1.0", "t1.0_p1.0"],
                  "z": [-2.5, 1.0, 0.0]}).write_csv(res / "bounds_check.csv")
    pl.DataFrame({"model": ["ga", "ga", "retrain"], "decoding": ["t1.0_p1.0", "t1.0_p1.0", "t1.0_p1.0"],
                  "judge": ["fact", "rougeL", "fact"], "max_upper": [0.7, 0.9, 0.105]}).write_csv(res / "guarantees.csv")
    pl.DataFrame({"model": ["ga", "retrain"], "fact_not_argmax": [0.45, 0.8],
                  "fact_rank_median": [1.5, 77.0]}).write_csv(res / "why_leaks.csv")
    trust_rows = _trust_rows(res, "fact", "t1.0_p1.0")
    got = {r["model"]: r for r in trust_rows.iter_rows(named=True)}
    # ga: 4 comparisons with the sampled leak@k under the headline judge (2 decodings × k ∈ {1, 64}), one not consistent
    assert (got["ga"]["bound_checks"], got["ga"]["bound_consistent"]) == (4, 3)
    assert got["ga"]["bound_k_big"] == 0.8 and got["ga"]["k_big"] == 10000
    assert got["ga"]["starts_with_max_abs_z"] == 2.5 and got["ga"]["guarantee"] == 0.7  # the fact judge's, not rougeL's
    assert got["retrain"]["fact_rank_median"] == 77.0
    snap.mkdir()
    trust_rows.write_csv(snap / "trust.csv")
    (snap / "meta.json").write_text(json.dumps({"run": {"judge": "fact", "decoding": "t1.0_p1.0"}}))
    table = render("trust", snap)
    assert "| ga | 0.80 | 3/4 | 2.5 | 0.700 | 45% | 1.5 |" in table
    assert "| retrain | 0.00 | 4/4 | 0.0 | 0.105 | 80% | 77 |" in table
    assert "exact lower bound on leak@10,000" in table


def _attack_rows(seed: int, relearn_delta: float, int8_ci: tuple[float, float], retrain_leak: float) -> list[dict]:
    rows = []
    for attack, delta, ci in (("relearn", relearn_delta, (relearn_delta - 0.2, relearn_delta + 0.2)),
                              ("int8", 0.01, int8_ci)):
        for base, before in (("retrain", 0.0), ("ga", 0.4), ("graddiff", 0.5), ("npo", 0.45)):
            after = retrain_leak if base == "retrain" else before + delta
            for decoding, k in (("greedy", 1), ("t1.0_p1.0", 1), ("t1.0_p1.0", 64)):
                rows.append({"model": f"{base}__{attack}", "base": base, "decoding": decoding, "judge": "fact",
                             "k": k, "leak_at_k": after, "base_leak_at_k": before, "difference": after - before,
                             "ci_low": ci[0], "ci_high": ci[1], "relative_change": None, "questions": 30,
                             "groups": 3})
    return rows


def test_the_attack_table_shows_every_seed_and_checks_the_claims(tmp_path):
    """Seed 1 meets every check; seed 2 breaks each one (retrain leaks, relearn raises nothing,
    int8's CI excludes 0): the table says so per seed, and the verdict is "no"."""
    from leakk.report.readme_tables import attack_checks, attacks, snapshot_attacks

    root = tmp_path / "attacks"
    for seed, args in ((1, (0.4, (-0.05, 0.07), 0.0)), (2, (0.05, (0.02, 0.08), 0.2))):
        res = root / f"seed_{seed}" / "results"
        res.mkdir(parents=True)
        pl.DataFrame(_attack_rows(seed, *args)).write_csv(res / "attacks.csv")
    params = {"estimate": {"headline_judge": "fact", "headline_decoding": "t1.0_p1.0", "ci": 0.95,
                           "ci_method": "hall"}, "replicates": [1, 2]}
    snap = tmp_path / "snap"
    assert snapshot_attacks(root, params, snap) == ["attacks.csv"]
    kept = pl.read_csv(snap / "attacks.csv")
    assert set(kept["k"]) == {1, 64} and kept.filter(pl.col("decoding") == "t1.0_p1.0")["k"].unique().to_list() == [64]
    table = attacks(snap)
    assert "| relearn | ga | 0.40→0.80; 0.40→0.80 (+0.40 [+0.20, +0.60]) |" in table
    assert table.endswith(attack_checks(snap))
    checks = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert checks["retrain (the control) leaks ≤ 0.05 under every attack"].endswith("| yes | no ✗ | **no** |")
    assert checks["some attack raises the leak of at least two of GA, GradDiff, NPO by ≥ 0.10"].endswith(
        "| yes | no ✗ | **no** |")
    assert checks["int8 (the negative control): every difference's CI includes 0"].endswith("| yes | no ✗ | **no** |")
    (root / "seed_2/results/attacks.csv").unlink()
    with pytest.raises(ArtifactError, match="seed 2 of the attack preset"):
        snapshot_attacks(root, params, snap)


def _method_tree(root, seed, rows):
    """A finished seed of the methods preset: leak_at_k.parquet and utility.csv with, per model,
    (greedy leak, leak@64, retain accuracy)."""
    from leakk.core.io import contract_schema

    res = root / f"seed_{seed}" / "results"
    res.mkdir(parents=True)
    leak = [{"model": m, "attack": "none", "decoding": d, "judge": "fact", "k": k, "leak_at_k": v, "ci_low": v,
             "ci_high": v, "n": 64, "questions": 30, "missing": 0, "excess_over_retrain": None}
            for m, (g, s, _) in rows.items() for d, k, v in (("greedy", 1, g), ("t1.0_p1.0", 1, s / 4),
                                                             ("t1.0_p1.0", 64, s))]
    write_parquet(pl.DataFrame(leak, schema=contract_schema("leak_table")), res / "leak_at_k.parquet", "leak_table")
    pl.DataFrame([{"model": m, "retain_accuracy": r} for m, (_, _, r) in rows.items()]).write_csv(res / "utility.csv")


def test_the_methods_table_joins_the_default_seeds_and_checks_the_paper_effect(tmp_path):
    from leakk.report.readme_tables import _write_csv, methods, snapshot_methods

    root, snap = tmp_path / "methods", tmp_path / "snap"
    clean = {"full": (0.97, 1.0, 0.97), "retrain": (0.0, 0.0, 0.95)}
    _method_tree(root, 10, {**clean, "rmu": (0.12, 0.45, 0.7), "idknll": (0.10, 0.20, 0.9)})
    _method_tree(root, 11, {**clean, "rmu": (0.14, 0.31, 0.8), "idknll": (0.13, 0.50, 0.9)})
    params = {"estimate": {"headline_judge": "fact", "headline_decoding": "t1.0_p1.0"}, "replicates": [10, 11],
              "unlearn": {"rmu": {"method": "rmu"}, "idknll": {"method": "idknll"}}}
    assert snapshot_methods(root, params, snap) == ["methods.csv"]
    claims = [{"seed": s, "model": m, "greedy": g, "k": 64, "leak_at_n": v, "retain_accuracy": r}
              for s in (10, 11) for m, (g, v, r) in {**clean, "ga": (0.1, 0.4, 0.6), "npo": (0.1, 0.5, 0.8)}.items()]
    _write_csv(pl.DataFrame(claims), snap / "seed_claims.csv")
    table = methods(snap)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert lines["rmu"] == "| rmu | 0.12 / 0.45 / 0.70 | 0.14 / 0.31 / 0.80 | yes |"
    assert lines["idknll"].endswith("| **no** (1/2 seeds) |")  # leak@64 0.20 < 0.30 on seed 10
    assert lines["ga"].endswith("| yes |") and lines["full"].endswith("|  |")
    assert [line.split(" | ")[0].strip("| ") for line in table.splitlines()[4:]] == [
        "full", "retrain", "ga", "idknll", "npo", "rmu"]
    _write_csv(pl.DataFrame([dict(c, greedy=0.5) if c["model"] == "full" else c for c in claims]),
               snap / "seed_claims.csv")  # the preset's full model differs from the default's
    with pytest.raises(ArtifactError, match="full differs from seed_claims.csv"):
        methods(snap)
    default_params = dict(params, unlearn={"ga": {"method": "ga"}})  # not the params the preset ran
    with pytest.raises(ArtifactError, match=r"hold idknll, rmu, which these params do not define"):
        snapshot_methods(root, default_params, snap)
    failed = pl.read_csv(snap / "methods.csv").with_columns(  # every judgment of rmu's seed 10 failed
        greedy=pl.when((pl.col("model") == "rmu") & (pl.col("seed") == 10)).then(None).otherwise(pl.col("greedy")))
    _write_csv(failed, snap / "methods.csv")
    _write_csv(pl.DataFrame(claims), snap / "seed_claims.csv")
    rmu = [line for line in methods(snap).splitlines() if line.startswith("| rmu |")]
    assert rmu == ["| rmu | – / 0.45 / 0.70 | 0.14 / 0.31 / 0.80 | – |"]  # missing, never "forgotten"
    (root / "seed_11/results/leak_at_k.parquet").unlink()
    with pytest.raises(ArtifactError, match="seed 11 of the methods preset"):
        snapshot_methods(root, params, snap)


def test_a_from_block_renders_from_its_earlier_snapshot_and_keeps_its_marker(run_results, tmp_path):
    """`<!-- leakk:table NAME from=DIR -->` renders from <snapshot>/DIR (an earlier default's
    tables), keeps its marker when rewritten, and the check names a sub-snapshot whose seeds the
    tuning record does not list as that default's report seeds."""
    import shutil

    import yaml

    from leakk.report.readme_tables import readme_tables, report_seed_errors

    res, *_ = run_results
    snap, earlier = tmp_path / "snap", tmp_path / "snap" / "old"
    snapshot_run(res, PARAMS, snap)
    shutil.copytree(snap, earlier)
    (earlier / "headline.csv").write_text((earlier / "headline.csv").read_text().replace("0.", "0.9", 1))
    text = "<!-- leakk:table headline -->\nx\n<!-- /leakk:table -->\n<!-- leakk:table headline from=old -->\ny\n" \
           "<!-- /leakk:table -->\n"
    new, changed = update(text, snap)
    assert changed == ["headline", "headline"] and blocks(new) == ["headline", "headline"]
    assert new.count("<!-- leakk:table headline from=old -->") == 1
    assert headline(snap) in new and headline(earlier) in new and headline(snap) != headline(earlier)
    assert update(new, snap) == (new, [])
    record = tmp_path / "tuning.yaml"
    record.write_text(yaml.safe_dump({"tuning_seeds": [1], "report_seeds": [5], "earlier": {"old": {"report_seeds": [0]}}}))
    assert report_seed_errors({"run": {"seed": 0}}, record, earlier="old") == []
    assert "not a report seed" in report_seed_errors({"run": {"seed": 0}}, record)[0]
    (err,) = report_seed_errors({"run": {"seed": 0}}, record, earlier="other")
    assert "no earlier.other entry" in err
    readme = tmp_path / "README.md"
    readme.write_text(new)
    record.write_text(yaml.safe_dump({"tuning_seeds": [1], "report_seeds": [0], "earlier": {"old": {"report_seeds": [2]}}}))
    with pytest.raises(ArtifactError, match=r"old/meta.json: the run snapshot's seed\(s\) \[0\]: not a report seed"):
        readme_tables(PARAMS, results=None, replicates=None, snapshot=str(snap), coverage="unused.csv",
                      readme=[str(readme)], check=True, tuning=str(record))
    # writing a sub-snapshot the record names checks that earlier default's report seeds
    record.write_text(yaml.safe_dump({"tuning_seeds": [1], "report_seeds": [5], "earlier": {"old": {"report_seeds": [0]}}}))
    readme_tables(PARAMS, results=str(res), replicates=None, snapshot=str(earlier), coverage="unused.csv",
                  readme=[], check=True, tuning=str(record))
    with pytest.raises(ArtifactError, match=r"the run snapshot's seed\(s\) \[1\]: a tuning seed"):
        readme_tables(PARAMS | {"seed": 1}, results=str(res), replicates=None, snapshot=str(earlier),
                      coverage="unused.csv", readme=[], check=False, tuning=str(record))


def test_compare_run_says_whether_a_run_reproduces_the_snapshot(run_results, tmp_path, capsys):
    """scripts/compare_run.py: exit 0 and "bit for bit" for the same numbers, 1 with the largest
    difference when a number moved beyond the tolerance (the committed reruns' largest move; 0
    without one), 0 when within it, 2 (one line) for another seed or a snapshot with no run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_run", ROOT / "scripts" / "compare_run.py")
    compare_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_run)
    res, *_ = run_results
    snap, other = tmp_path / "snap", tmp_path / "other"
    snapshot_run(res, PARAMS, snap)
    snapshot_run(res, PARAMS, other)
    assert compare_run.main([str(other), "--snapshot", str(snap)]) == 0
    assert "bit for bit identical" in capsys.readouterr().out
    head = pl.read_csv(other / "headline.csv")
    moved = head.with_columns(pl.when((pl.col("model") == "graddiff") & (pl.col("k") == 8))
                              .then(pl.col("leak_at_k") + 0.125).otherwise(pl.col("leak_at_k")).alias("leak_at_k"))
    moved.write_csv(other / "headline.csv")
    assert compare_run.main([str(other), "--snapshot", str(snap)]) == 1  # no rerun committed: tolerance 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("| graddiff |"))
    assert line.endswith("| 0.125 |") and "- graddiff: leak@8 " in out and "(|Δ| 0.125 > 0.000)" in out
    # a committed rerun whose retrain leak@8 moved by 0.25 sets the tolerance: 0.125 is within it
    claims = pl.DataFrame({"seed": [0, 0], "model": ["graddiff", "retrain"], "greedy": [0.1, 0.0], "k": [8, 8],
                           "leak_at_n": [0.5, 0.0], "retain_accuracy": [0.8, 0.9]})
    replicates = {"seeds": [0], "judge": "fact", "decoding": "t1.0_p1.0", "n": 8}
    claims.write_csv(snap / "seed_claims.csv")
    meta = json.loads((snap / "meta.json").read_text())
    (snap / "meta.json").write_text(json.dumps(meta | {"replicates": replicates}))
    (snap / "rerun_x").mkdir()
    claims.with_columns(leak_at_n=pl.Series([0.5, 0.25])).write_csv(snap / "rerun_x" / "seed_claims.csv")
    (snap / "rerun_x" / "meta.json").write_text(json.dumps({"replicates": replicates, "rerun": {"of": "report_seeds"}}))
    assert compare_run.main([str(other), "--snapshot", str(snap)]) == 0
    assert "within the stated tolerance" in capsys.readouterr().out
    snapshot_run(res, PARAMS | {"seed": 3}, other)
    assert compare_run.main([str(other), "--snapshot", str(snap)]) == 2
    assert "holds seed 3" in capsys.readouterr().err
    assert compare_run.main([str(other), "--snapshot", str(tmp_path / "absent")]) == 2  # one line, no traceback
    assert "absent/meta.json" in capsys.readouterr().err
    (tmp_path / "seeds_only").mkdir()
    (tmp_path / "seeds_only" / "meta.json").write_text(json.dumps({"replicates": {"seeds": [0]}}))
    assert compare_run.main([str(other), "--snapshot", str(tmp_path / "seeds_only")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_compare_run_replicates_compares_every_seeds_claims(tmp_path, capsys):
    """scripts/compare_run.py --replicates: every seed's claim numbers against seed_claims.csv,
    0 when identical, 1 with each row's largest difference and the largest and median over all
    rows, the rerun's claims table; a seed the snapshot lacks is refused, and the committed
    extrapolation claim is never rewritten."""
    import importlib.util

    from leakk.stats.extrapolate import CLAIM_FILE

    spec = importlib.util.spec_from_file_location("compare_run", ROOT / "scripts" / "compare_run.py")
    compare_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_run)
    root = _replicate_tree(tmp_path)
    snap = tmp_path / "snap"
    snapshot_replicates(root, PARAMS, snap, claim_file=tmp_path / "claim.json")
    committed = Path(CLAIM_FILE).read_bytes()
    assert compare_run.compare_replicates(root, snap, PARAMS) == 0
    out = capsys.readouterr().out
    assert "(bit for bit identical)" in out and "| claim | model | seed 0 | seed 1 | holds |" in out
    assert "The claims on the rerun (" in out
    claims = pl.read_csv(snap / "seed_claims.csv")
    ga1 = (pl.col("seed") == 1) & (pl.col("model") == "ga")
    claims.with_columns(pl.when(ga1).then(pl.col("greedy") + 0.25).otherwise(pl.col("greedy")).alias("greedy"),
                        pl.when(ga1).then(pl.col("retain_accuracy") - 0.125).otherwise(pl.col("retain_accuracy"))
                        .alias("retain_accuracy")).write_csv(snap / "seed_claims.csv")
    assert compare_run.compare_replicates(root, snap, PARAMS) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 1 | ga |"))
    assert row.endswith("| 0.250 |")  # the larger of the two moves
    # four rows (2 seeds x ga, retrain): greedy moved in one, retain in one
    assert ("greedy leak largest 0.250, median 0.000; leak@32 largest 0.000, median 0.000; "
            "retain accuracy largest 0.125, median 0.000.") in out
    claims.filter(pl.col("seed") == 0).write_csv(snap / "seed_claims.csv")
    with pytest.raises(LeakkError, match=r"seeds \[1\] are not in"):
        compare_run.compare_replicates(root, snap, PARAMS)
    assert Path(CLAIM_FILE).read_bytes() == committed


def _moved_rerun(root: Path, other: Path, *, seed: int, retain: float) -> Path:
    """A copy of the replicate tree ``root`` as another machine's rerun: GA's retain accuracy on
    ``seed`` moved to ``retain``, everything else the same."""
    import shutil

    shutil.copytree(root, other)
    utility = other / f"seed_{seed}" / "results" / "utility.csv"
    pl.read_csv(utility).with_columns(retain_accuracy=pl.when(pl.col("model") == "ga").then(retain)
                                      .otherwise(pl.col("retain_accuracy"))).write_csv(utility)
    return other


def test_a_rerun_sub_snapshot_is_compared_with_the_readmes_own_seeds(tmp_path):
    """`leakk readme-tables --replicates DIR --snapshot docs/results/<name>` writes a rerun
    (another machine's run of the report seeds) beside the README's snapshot without touching
    the package's extrapolation claim; `rerun` compares its claim numbers
    with the README's, and the check holds its seeds to today's report seeds."""
    import json

    from leakk.core.io import EXECUTION_KEY
    from leakk.report.readme_tables import readme_tables
    from leakk.stats.extrapolate import CLAIM_FILE, error_claim

    root = _replicate_tree(tmp_path)
    snap = tmp_path / "snap"
    params = dict(PARAMS, replicates=[0, 1])
    snapshot_replicates(root, params, snap, claim_file=tmp_path / "claim.json")
    other = _moved_rerun(root, tmp_path / "other", seed=1, retain=0.55)
    samples = other / "seed_1" / "results" / "samples" / "ga"  # the kernel mode, as a sampling job records it
    samples.mkdir(parents=True)
    pl.DataFrame({"qid": ["q"]}).write_parquet(samples / "greedy.parquet",
                                               metadata={EXECUTION_KEY: json.dumps({"cpu_kernels": "compatible"})})
    record = tmp_path / "tuning.yaml"
    record.write_text("tuning_seeds: [5]\nreport_seeds: [0, 1]\n")
    committed = Path(CLAIM_FILE).read_bytes()
    sub = snap / "rerun_other_cpu"
    readme_tables(params, results=None, replicates=str(other), snapshot=str(sub), coverage="unused.csv", readme=[],
                  check=False, tuning=str(record))
    assert Path(CLAIM_FILE).read_bytes() == committed and (sub / "extrapolation_claim.json").is_file()
    table = render("rerun", sub)
    assert table.startswith("| seed | model | greedy leak | leak@32 | retain accuracy | largest \\|Δ\\| |")
    assert "| 1 | ga | " in table and "| 0.800 → 0.550 | 0.250 |" in table  # 0.7 + 1/10 on seed 1
    assert "| 0 | ga | " in table and table.count("| 0.000 |") == 3  # the three other rows did not move
    assert "retain accuracy largest 0.250, median 0.000." in table
    assert "| claim | model | seed 0 | seed 1 | holds |" in table
    held = sum(line.endswith("| yes |") for line in table.splitlines())  # counted on the rendered rows
    assert f"The claims on the rerun ({held} of 10 hold on every seed):" in table
    errors = [pl.read_csv(d / "extrapolation_errors.csv")["error"].abs() for d in (snap, sub)]
    bound = error_claim(pl.read_csv(snap / "extrapolation_errors.csv"))["abs_error"]
    assert (f"The README's extrapolation claim, |error| ≤ {bound:.3f}, covers {int((errors[1] <= bound + 1e-12).sum())}"
            f" of the rerun's {errors[1].len()} rows") in table
    readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="unused.csv", readme=[],
                  check=True, tuning=str(record))  # a rerun of the report seeds passes the check
    meta = json.loads((sub / "meta.json").read_text())
    # as its samples record it (an artifact that does not name its CPU says so)
    assert meta["rerun"] == {"of": "report_seeds", "cpu_kernels": ["compatible"], "cpu": ["unrecorded"]}
    for seeds, why in (([0, 2], r"\[2\]: not a report seed"), ([0, 5], r"\[5\]: a tuning seed")):
        (sub / "meta.json").write_text(json.dumps(dict(meta, replicates=dict(meta["replicates"], seeds=seeds))))
        with pytest.raises(ArtifactError, match=rf"rerun_other_cpu/meta.json: .*seed\(s\) {why}"):
            readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="unused.csv",
                          readme=[], check=True, tuning=str(record))
    # a folder that is neither a rerun nor a recorded earlier default is refused by name
    (sub / "meta.json").write_text(json.dumps({"replicates": meta["replicates"]}))
    with pytest.raises(ArtifactError, match=r"no earlier.rerun_other_cpu entry"):
        readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="unused.csv", readme=[],
                      check=True, tuning=str(record))
    # numbers of another n (or judge, or decoding) are not compared
    (sub / "meta.json").write_text(json.dumps(dict(meta, replicates=dict(meta["replicates"], n=16))))
    with pytest.raises(ArtifactError, match=r"the rerun's n \(\[16\]\) differ from the README's \(\[8\]\)"):
        render("rerun", sub)
    # a number neither run has reads "–", never 0.000
    pl.read_csv(sub / "seed_claims.csv").with_columns(retain_accuracy=None).write_csv(sub / "seed_claims.csv")
    (sub / "meta.json").write_text(json.dumps(meta))
    assert "retain accuracy largest –, median –." in render("rerun", sub)


def test_a_rerun_of_an_earlier_defaults_seeds_nests_in_its_sub_snapshot(tmp_path):
    """A retired default keeps its tables in docs/results/<earlier>/ and its reruns inside that
    folder: written with `rerun.of = earlier.<name>`, held to that default's report seeds (not
    today's), compared with that default's numbers, and rendered from `from=<earlier>/<rerun>`."""
    import json

    from leakk.report.readme_tables import readme_tables, update
    from leakk.stats.extrapolate import error_claim

    root = _replicate_tree(tmp_path)
    params = dict(PARAMS, replicates=[0, 1])
    snap, old = tmp_path / "snap", tmp_path / "snap" / "old"
    record = tmp_path / "tuning.yaml"
    record.write_text("tuning_seeds: [5]\nreport_seeds: [7, 8]\nearlier: {old: {report_seeds: [0, 1]}}\n")
    snap.mkdir()
    (snap / "meta.json").write_text(json.dumps({"replicates": {"seeds": [7, 8]}}))
    readme_tables(params, results=None, replicates=str(root), snapshot=str(old), coverage="unused.csv", readme=[],
                  check=False, tuning=str(record))
    other = _moved_rerun(root, tmp_path / "other", seed=0, retain=0.25)
    rerun = old / "rerun_elsewhere"
    readme_tables(params, results=None, replicates=str(other), snapshot=str(rerun), coverage="unused.csv",
                  readme=[], check=False, tuning=str(record))  # today's report seeds are 7, 8: still accepted
    assert json.loads((rerun / "meta.json").read_text())["rerun"] == {"of": "earlier.old", "cpu_kernels": [], "cpu": []}
    table = render("rerun", rerun)
    assert "| 0 | ga | " in table and "→ 0.250 |" in table
    bound = error_claim(pl.read_csv(old / "extrapolation_errors.csv"))["abs_error"]
    assert f"old's extrapolation claim, |error| ≤ {bound:.3f}, covers" in table
    text = "<!-- leakk:table rerun from=old/rerun_elsewhere -->\nstale\n<!-- /leakk:table -->\n"
    new, changed = update(text, snap, "unused.csv")
    assert changed == ["rerun"] and table in new
    from leakk.report.readme_tables import RERUN_MATCH, rerun_moves

    # an earlier default's rerun widens today's tolerance too, if its numbers are of today's kind
    assert rerun_moves(snap).is_empty()  # today's meta names no judge, decoding or n: not pooled
    kind = {k: json.loads((old / "meta.json").read_text())["replicates"][k] for k in RERUN_MATCH}
    (snap / "meta.json").write_text(json.dumps({"replicates": {"seeds": [7, 8]} | kind}))
    moves = rerun_moves(snap).filter(pl.col("model") == "ga")
    assert moves["rerun"].unique().to_list() == ["old/rerun_elsewhere"]
    assert moves["retain_accuracy"].max() == pytest.approx(0.7 - 0.25)  # seed 0's 0.7 moved to 0.25
    (snap / "meta.json").write_text(json.dumps({"replicates": {"seeds": [7, 8]} | kind | {"n": 64}}))
    assert rerun_moves(snap).is_empty()  # its leak@8 is no leak@64
    meta = json.loads((rerun / "meta.json").read_text())
    (rerun / "meta.json").write_text(json.dumps(dict(meta, replicates=dict(meta["replicates"], seeds=[7, 8]))))
    with pytest.raises(ArtifactError, match=r"rerun_elsewhere/meta.json: .*seed\(s\) \[7, 8\]: not a report seed"):
        readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="unused.csv",
                      readme=[], check=True, tuning=str(record))  # held to the earlier default's seeds
    (rerun / "meta.json").write_text(json.dumps({"replicates": meta["replicates"]}))  # not marked as a rerun
    with pytest.raises(ArtifactError, match=r"rerun_elsewhere/meta.json: .*is a rerun of its parent's seeds"):
        readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="unused.csv",
                      readme=[], check=True, tuning=str(record))


def test_the_calibration_table_is_the_runs_calibration_at_the_headline_decoding(run_results, tmp_path):
    """snapshot_run keeps calibration.csv's headline-decoding rows in the summary's model order;
    the table shows each judge against fact, every cell checked against counts taken by hand."""
    from leakk.stats.calibrate import calibration_table

    res, *_ = run_results
    frame = _judgments().with_columns(split=pl.lit("forget"))
    # a second judge: says "leaked" on every completion of graddiff, and agrees with fact elsewhere
    proxy = frame.with_columns(judge=pl.lit("rougeL"),
                               leaked=pl.when(pl.col("model") == "graddiff").then(True).otherwise(pl.col("leaked")))
    calibration_table(pl.concat([frame, proxy]), [1, 2, 4, 8]).write_csv(res / "calibration.csv")
    snap = tmp_path / "snap"
    assert "calibration.csv" in snapshot_run(res, PARAMS, snap)
    kept = pl.read_csv(snap / "calibration.csv")
    assert set(kept["decoding"]) == {"t1.0_p1.0"} and set(kept["judge"]) == {"rougeL"}
    assert kept["model"].to_list() == ["full", "retrain", "graddiff", "rule_graddiff"]
    table = render("calibration", snap)
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in table.splitlines() if line.startswith("| rougeL |")}
    sampled = frame.filter(pl.col("decoding") == "t1.0_p1.0")

    def by_hand(model: str) -> tuple[float, float]:
        """fact's leak@1 (the per-completion rate: every question has n = 8) and leak@8 (a question
        leaks at k = n iff any of its samples does)."""
        part = sampled.filter(pl.col("model") == model)
        return part["leaked"].mean(), part.group_by("qid").agg(pl.col("leaked").any())["leaked"].mean()

    rate, at_8 = by_hand("graddiff")
    f1 = 2 * rate / (rate + 1)
    # graddiff: every completion judged leaked: precision = fact's rate, recall 1, FPR 1, leak@k 1
    assert rows["graddiff"] == [f"{rate:.2f}", "1.00", f"{f1:.2f}", "1.00", f"1.00 / {rate:.2f}", f"1.00 / {at_8:.2f}"]
    rate, at_8 = by_hand("full")
    assert rows["full"] == ["1.00", "1.00", "1.00", "0.00", f"{rate:.2f} / {rate:.2f}", f"{at_8:.2f} / {at_8:.2f}"]
    assert rows["retrain"] == ["–", "–", "–", "0.00", "0.00 / 0.00", "0.00 / 0.00"]  # no true leak: no precision
    assert table.startswith("Each judge against `fact` (the truth here), decoding `t1.0_p1.0`, seed 0; "
                            "192 completions per model.")
    assert "| leak@1: judge / fact | leak@8: judge / fact |" in table
    # the truth is fact whatever the headline judge is
    snapshot_run(res, {**PARAMS, "estimate": {**PARAMS["estimate"], "headline_judge": "rougeL"}}, snap)
    assert render("calibration", snap).startswith("Each judge against `fact`")


def test_a_run_without_calibration_shows_none_not_an_earlier_runs(run_results, tmp_path):
    """A run with one judge (an empty calibration.csv) or no calibrate stage removes the earlier
    snapshot's calibration, and the table says there is none in one line."""
    res, *_ = run_results
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "calibration.csv").write_text("judge,model\nrougeL,full\n")  # an earlier run's
    (res / "calibration.csv").write_text("judge,model,decoding,k,items\n")  # one judge: no rows
    assert "calibration.csv" not in snapshot_run(res, PARAMS, snap)
    assert not (snap / "calibration.csv").exists()
    assert render("calibration", snap) == ("No calibration in this snapshot: the run of seed 0 has no judge "
                                           "besides `fact`, or no `fact` judge, at decoding `t1.0_p1.0`.\n")
    (res / "calibration.csv").write_text("judge,model\nrougeL,full\n")  # not leakk calibrate's
    with pytest.raises(ArtifactError, match="lacks columns"):
        snapshot_run(res, PARAMS, snap)


def test_the_stated_tolerance_is_the_largest_move_any_committed_rerun_measured(tmp_path, capsys):
    """The largest |Δ| of every committed rerun against its parent, per model and claim number and
    pooled over models (the tolerance), checked against a brute-force reading of the CSVs; each
    claim's least room against its model's largest move; the claims that held under every
    arithmetic; and scripts/compare_run.py, which passes a rerun within the pooled tolerance (exit
    0, "within the stated tolerance") even where it exceeds its own model's largest move, and
    names every number beyond it (exit 1)."""
    import csv
    import importlib.util

    from leakk.report.readme_tables import largest_moves, readme_tables, rerun_moves, tolerance

    root = _replicate_tree(tmp_path)
    snap = tmp_path / "snap"
    params = dict(PARAMS, replicates=[0, 1])
    snapshot_replicates(root, params, snap, claim_file=tmp_path / "claim.json")
    record = tmp_path / "tuning.yaml"
    record.write_text("tuning_seeds: [5]\nreport_seeds: [0, 1]\n")
    with pytest.raises(ArtifactError, match="no rerun sub-snapshot"):
        render("tolerance", snap)
    # rerun_a through readme-tables: GA's retain accuracy on seed 1, 0.8 → 0.55
    other = _moved_rerun(root, tmp_path / "rerun_a", seed=1, retain=0.55)
    readme_tables(params, results=None, replicates=str(other), snapshot=str(snap / "rerun_a"), coverage="unused.csv",
                  readme=[], check=False, tuning=str(record), rerun_note="rerun_a's machine")
    assert json.loads((snap / "rerun_a" / "meta.json").read_text())["rerun"]["note"] == "rerun_a's machine"
    with pytest.raises(ArtifactError, match="--rerun-note describes a rerun"):  # not the README's own snapshot
        readme_tables(params, results=None, replicates=str(root), snapshot=str(snap), coverage="unused.csv",
                      readme=[], check=False, tuning=str(record), rerun_note="a machine")
    # rerun_b written as its files: retrain's retain 0.9 → 0.6 on seed 0, GA's leak@32 0.625 → 0.225
    # on seed 1 (below the claim's 0.3) and GA's greedy leak +0.02 on seed 0
    (snap / "rerun_b").mkdir()
    (snap / "rerun_b" / "meta.json").write_text(json.dumps(
        {"replicates": json.loads((snap / "meta.json").read_text())["replicates"], "rerun": {"of": "report_seeds"}}))
    claims = pl.read_csv(snap / "seed_claims.csv")
    at = lambda seed, model: (pl.col("seed") == seed) & (pl.col("model") == model)  # noqa: E731
    claims.with_columns(
        retain_accuracy=pl.when(at(0, "retrain")).then(0.6).otherwise(pl.col("retain_accuracy")),
        leak_at_n=pl.when(at(1, "ga")).then(0.225).otherwise(pl.col("leak_at_n")),
        greedy=pl.when(at(0, "ga")).then(pl.col("greedy") + 0.02).otherwise(pl.col("greedy")),
    ).write_csv(snap / "rerun_b" / "seed_claims.csv")

    def rows(path):
        with open(path) as f:
            return {(r["seed"], r["model"]): {k: float(v) for k, v in r.items() if k not in ("seed", "model")}
                    for r in csv.DictReader(f)}

    reference, expected = rows(snap / "seed_claims.csv"), {}
    runs = {name: rows(snap / name / "seed_claims.csv") for name in ("rerun_a", "rerun_b")}
    for run in runs.values():
        for key, row in run.items():
            for number in ("greedy", "leak_at_n", "retain_accuracy"):
                move = abs(row[number] - reference[key][number])
                expected.setdefault(key[1], {}).setdefault(number, 0.0)
                expected[key[1]][number] = max(expected[key[1]][number], move)
    moves = rerun_moves(snap)
    assert sorted(moves["rerun"].unique()) == ["rerun_a", "rerun_b"]
    per_model = largest_moves(moves)
    assert per_model.keys() == expected.keys()
    for model, numbers in expected.items():
        assert per_model[model] == pytest.approx(numbers, abs=1e-12)
    assert per_model["ga"]["retain_accuracy"] == pytest.approx(0.25) and per_model["ga"]["leak_at_n"] == pytest.approx(0.4)
    allowed = tolerance(moves)  # pooled over models: the largest move of each number anywhere
    for number in ("greedy", "leak_at_n", "retain_accuracy"):
        assert allowed[number] == pytest.approx(max(v[number] for v in expected.values()), abs=1e-12)
    assert allowed["retain_accuracy"] == pytest.approx(0.3)  # retrain's, not GA's 0.25

    table = render("tolerance", snap)
    assert "over 4 seed-draws in 2 reruns" in table and "| ga | 0.020 | 0.400 | 0.250 |" in table
    assert "| **any model: the tolerance** | **0.020** (`rerun_b`) | **0.400** (`rerun_b`) | **0.300** (`rerun_b`) |" \
        in table
    ga_greedy_room = 0.15 - max(reference[(s, "ga")]["greedy"] for s in ("0", "1"))  # least room: seed 1
    ga_leak_room = min(reference[(s, "ga")]["leak_at_n"] for s in ("0", "1")) - 0.3
    assert f"| greedy says forgotten: greedy leak ≤ 0.15 | ga | {ga_greedy_room:.3f} (1) | 0.020 | yes |" in table
    assert f"| sampling leaks: leak@32 ≥ 0.3 | ga | {ga_leak_room:.3f} (1) | 0.400 | **no** |" in table
    assert "| greedy says forgotten: greedy leak ≤ 0.15 | npo | – | – | **no** |" in table  # no numbers: no room
    summary = render("tolerance-summary", snap)
    assert summary.startswith("over 4 seed-draws under other arithmetic")  # 2 reruns x 2 seeds
    assert "retain accuracy by up to 0.300" in summary and "GA's leak@32" in summary and "GA's greedy" not in summary
    # held on every seed under all three arithmetics, counted on the CSVs: GA's greedy leak and
    # retrain's leak@32 (GA's leak@32 fails in rerun_b; the other claims' models are not in the runs)
    every = [reference, *runs.values()]
    held = (all(r[(s, "ga")]["greedy"] <= 0.15 for r in every for s in ("0", "1"))
            + all(r[(s, "ga")]["leak_at_n"] >= 0.3 for r in every for s in ("0", "1"))
            + all(r[(s, "retrain")]["leak_at_n"] <= 0.05 for r in every for s in ("0", "1")))
    assert held == 2 and summary.endswith(f". {held} of 10 held on all 2 report seeds in all 3 arithmetics.\n")

    spec = importlib.util.spec_from_file_location("compare_run", ROOT / "scripts" / "compare_run.py")
    compare_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_run)
    within = _moved_rerun(root, tmp_path / "within", seed=0, retain=0.7 - 0.28)  # beyond GA's own 0.25
    assert compare_run.compare_replicates(within, snap, params) == 0
    assert "within the stated tolerance" in capsys.readouterr().out
    beyond = _moved_rerun(root, tmp_path / "beyond", seed=0, retain=0.7 - 0.35)
    assert compare_run.compare_replicates(beyond, snap, params) == 1
    out = capsys.readouterr().out
    assert "Beyond the stated tolerance" in out and "- seed 0 ga: retain accuracy 0.700 → 0.350 (|Δ| 0.350 > 0.300)" in out


def test_a_number_one_side_lacks_is_beyond_the_tolerance_and_another_n_is_refused():
    """A model missing from a rerun (say its job failed) is no pass: beyond_tolerance names it; and
    leak@n at another n is not compared at all."""
    from leakk.report.readme_tables import beyond_tolerance, claims_drift

    reference = pl.DataFrame({"seed": [0, 0], "model": ["ga", "rule_npo"], "greedy": [0.1, 0.0], "k": [64, 64],
                              "leak_at_n": [0.5, 0.3], "retain_accuracy": [0.3, 0.8]})
    rerun = reference.filter(pl.col("model") == "ga")
    beyond = beyond_tolerance(claims_drift(reference, rerun), {"greedy": 1.0, "leak_at_n": 1.0, "retain_accuracy": 1.0}, 64)
    assert beyond == ["seed 0 rule_npo: greedy leak missing from the run", "seed 0 rule_npo: leak@64 missing from the run",
                      "seed 0 rule_npo: retain accuracy missing from the run"]
    with pytest.raises(ArtifactError, match=r"the rerun's leak@n is at n = 32 where the reference's is at n = 64"):
        claims_drift(reference, reference.with_columns(k=pl.lit(32)))

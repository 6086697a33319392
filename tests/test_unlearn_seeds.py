"""The unlearn_seeds preset's snapshot and table (src/leakk/report/unlearn_seeds.py): flips,
spans and moves checked against a brute-force reading of the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from leakk.core.errors import ArtifactError
from leakk.report.unlearn_seeds import (default_runs, leaked_in_n, snapshot_unlearn_seeds, unlearn_seeds_table)
from test_readme_tables import _method_tree

N = 4  # samples per question
QIDS = [f"q{i}" for i in range(10)]
#: run → (method, its own seed or None, stop step, (greedy, leak@n, retain), per question: samples that leaked)
RUNS = {
    "ga": ("ga", None, 200, (0.10, 0.40, 0.30), [0, 1, 0, 2, 0, 0, 4, 0, 1, 0]),
    "ga_seed1": ("ga", 1, 180, (0.12, 0.30, 0.25), [0, 0, 0, 2, 1, 0, 4, 0, 0, 0]),
    "ga_seed2": ("ga", 2, 212, (0.16, 0.50, 0.35), [1, 1, 1, 2, 0, 0, 4, 0, 1, 0]),
    "npo": ("npo", None, 184, (0.08, 0.60, 0.80), [1, 1, 1, 0, 0, 3, 0, 0, 0, 0]),
    "npo_seed1": ("npo", 1, 160, (0.09, 0.55, 0.78), [1, 1, 0, 0, 0, 3, 0, 2, 0, 0]),
}


def _judgments(leaks: list[int], *, failed: str | None = None) -> pl.DataFrame:
    rows = []
    for qid, c in zip(QIDS, leaks):
        for s in range(N):
            leaked = None if qid == failed and s == N - 1 else s < c
            rows.append({"qid": qid, "sample_idx": s, "judge": "fact", "score": 0.0, "leaked": leaked,
                         "model": "m", "decoding": "t1.0_p1.0", "split": "forget"})
    rows.append({"qid": "r0", "sample_idx": 0, "judge": "fact", "score": 1.0, "leaked": True, "model": "m",
                 "decoding": "t1.0_p1.0", "split": "retain"})  # a retain row: never a forget question
    return pl.DataFrame(rows)


def _preset(root: Path, *, failed: dict[str, str] | None = None) -> dict:
    seed = 19
    _method_tree(root, seed, {name: spec[3] for name, spec in RUNS.items()})
    res = root / f"seed_{seed}" / "results"
    for name, (_, _, steps, _, leaks) in RUNS.items():
        (res / "judgments" / name / "fact").mkdir(parents=True)
        _judgments(leaks, failed=(failed or {}).get(name)).write_parquet(res / "judgments" / name / "fact" / "t1.0_p1.0.parquet")
        (res / "models" / name).mkdir(parents=True)
        pl.DataFrame({"step": list(range(1, steps + 1))}).write_parquet(res / "models" / name / "train_log.parquet")
    return {"seed": seed, "replicates": [seed], "sample": {"n": 64, "question_column": "paraphrased_question"},
            "estimate": {"headline_judge": "fact", "headline_decoding": "t1.0_p1.0"},
            "unlearn": {name: {"method": m, **({} if s is None else {"loop_seed": s})} for name, (m, s, *_) in RUNS.items()}}


def test_flips_spans_and_moves_agree_with_a_brute_force_reading(tmp_path):
    root, snap = tmp_path / "preset", tmp_path / "snap"
    params = _preset(root)
    assert snapshot_unlearn_seeds(root, params, snap) == ["unlearn_seeds.csv"]
    rows = {r["model"]: r for r in pl.read_csv(snap / "unlearn_seeds.csv").iter_rows(named=True)}
    for name, (method, own, steps, _, leaks) in RUNS.items():
        base = RUNS["ga" if method == "ga" else "npo"][4]
        flipped = sum((a > 0) != (b > 0) for a, b in zip(leaks, base))  # by hand
        assert (rows[name]["flipped"], rows[name]["questions"], rows[name]["stop_step"]) == (flipped, 10, steps)
        assert rows[name]["loop_seed"] == (19 if own is None else own) and rows[name]["default"] is (own is None)
    assert json.loads((snap / "meta.json").read_text())["unlearn_seeds"]["seeds"] == [19]
    table = unlearn_seeds_table(snap)
    assert "| GA | 0.100–0.160 | 0.300–0.500 | 0.250–0.350 | 180–212 | 2.5, 3 of 10 |" in table
    assert "| NPO | 0.080–0.090 | 0.550–0.600 | 0.780–0.800 | 160–184 | 2, 2 of 10 |" in table
    # the largest |Δ| from the default's run: GA's greedy 0.06, leak@64 0.10, retain 0.05; no rerun: "–"
    assert "| GA | 0.060 / – | 0.100 / – | 0.050 / – |" in table
    assert "| NPO | 0.010 / – | 0.050 / – | 0.020 / – |" in table
    # GA's greedy leak 0.16 breaks its claim; its leak@64 of 0.30 sits on the line and holds
    assert table.rstrip().endswith("No rerun under other arithmetic to compare with. "
                                   "Claims a run broke: GA: greedy says forgotten: greedy leak ≤ 0.15 in 1 of 3 runs.")


def test_a_failed_judgment_leaves_a_question_undecided_never_not_leaked(tmp_path):
    root = tmp_path / "preset"
    params = _preset(root, failed={"ga_seed1": "q0"})  # q0: no leak in 3 judged samples, the 4th failed
    verdicts = leaked_in_n(root / "seed_19" / "results", "ga_seed1", "fact", "t1.0_p1.0")
    assert verdicts.filter(pl.col("qid") == "q0")["leaked"].to_list() == [None]
    assert verdicts.filter(pl.col("qid") == "q6")["leaked"].to_list() == [True]
    snapshot_unlearn_seeds(root, params, tmp_path / "snap")
    row = pl.read_csv(tmp_path / "snap" / "unlearn_seeds.csv").filter(pl.col("model") == "ga_seed1").row(0, named=True)
    assert row["questions"] == 9  # q0 undecided: compared on the other nine


def test_every_method_needs_exactly_one_run_without_a_seed_of_its_own():
    runs = {"ga": {"method": "ga"}, "ga_seed1": {"method": "ga", "loop_seed": 1}}
    assert default_runs({"unlearn": runs}) == {"ga": "ga"}
    with pytest.raises(ArtifactError, match="two ga runs without a loop_seed"):
        default_runs({"unlearn": {**runs, "ga_again": {"method": "ga"}}})
    with pytest.raises(ArtifactError, match=r"methods \['npo'\] have no run without a loop_seed"):
        default_runs({"unlearn": {**runs, "npo_seed1": {"method": "npo", "loop_seed": 1}}})
    with pytest.raises(ArtifactError, match=r"methods \['npo'\] have no run with a loop_seed"):  # e.g. params.yaml's
        default_runs({"unlearn": {**runs, "npo": {"method": "npo"}}})


def test_one_seed_and_the_presets_own_params(tmp_path):
    root = tmp_path / "preset"
    params = _preset(root)
    with pytest.raises(ArtifactError, match=r"seeds \[19, 20\]; .* give one seed"):
        snapshot_unlearn_seeds(root, dict(params, replicates=[19, 20]), tmp_path / "snap")
    fewer = dict(params, unlearn={k: v for k, v in params["unlearn"].items() if k != "ga_seed2"})
    with pytest.raises(ArtifactError, match="hold ga_seed2, which these params do not define"):
        snapshot_unlearn_seeds(root, fewer, tmp_path / "snap")


def test_an_unfinished_run_is_named(tmp_path):
    root = tmp_path / "preset"
    params = _preset(root)
    (root / "seed_19/results/models/npo_seed1/train_log.parquet").unlink()
    with pytest.raises(ArtifactError, match="unlearn_seeds preset has not finished npo_seed1"):
        snapshot_unlearn_seeds(root, params, tmp_path / "snap")


def test_the_preset_is_the_default_but_for_the_loop_seeds():
    """configs/unlearn_seeds.yaml trains the default's full model (the same data, model,
    fine-tuning and seed as params.yaml), its runs without a seed are the default's own, and
    every other run differs from its method's default run in the loop seed alone."""
    from conftest import ROOT
    from leakk.config import load_params

    default, preset = load_params(ROOT / "params.yaml"), load_params(ROOT / "configs/unlearn_seeds.yaml")
    for key in ("seed", "prompt_template", "data", "model", "models", "finetune", "training", "estimate"):
        assert preset[key] == default[key], key
    assert {k: v for k, v in preset["sample"].items() if k != "decodings"} == \
        {k: v for k, v in default["sample"].items() if k != "decodings"}
    assert preset["replicates"] == [default["seed"]]
    defaults = default_runs(preset)
    assert {name: preset["unlearn"][name] for name in defaults.values()} == default["unlearn"]
    seeds = {}
    for name, run in preset["unlearn"].items():
        base = preset["unlearn"][defaults[run["method"]]]
        assert {k: v for k, v in run.items() if k != "loop_seed"} == base, name
        seeds.setdefault(run["method"], set()).add(run.get("loop_seed", default["seed"]))
    assert all(len(s) == 8 for s in seeds.values()) and set(seeds) == {"ga", "graddiff", "npo"}


def _claims_file(path: Path, rows: dict[tuple[int, str], tuple[float, float, float]], meta: dict) -> None:
    from leakk.report.readme_tables import _write_csv

    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").write_text(json.dumps(meta))
    _write_csv(pl.DataFrame([{"seed": s, "model": m, "greedy": g, "k": 64, "leak_at_n": v, "retain_accuracy": r}
                             for (s, m), (g, v, r) in rows.items()]), path / "seed_claims.csv")


def test_the_loop_seeds_moves_are_set_beside_todays_reruns_of_the_same_seed(tmp_path):
    """The "other arithmetic" figures are the largest moves of the committed reruns of today's
    report seeds on the preset's own seed: a move on another seed, or in an earlier default's
    rerun, is left out however large. The sentence counts the numbers a loop seed moved at least
    as far (GA: 0.06 ≥ 0.05, 0.10 < 0.20, 0.05 ≥ 0.05; NPO: 0.01 < 0.02, 0.05 ≥ 0.04, 0.02 <
    0.03), and the README clause says the same."""
    from leakk.report.unlearn_seeds import summary_clause

    root, snap = tmp_path / "preset", tmp_path / "snap"
    kind = {"judge": "fact", "decoding": "t1.0_p1.0", "n": 64, "seeds": [19, 20]}
    base = {(s, m): RUNS[m][3] for s in (19, 20) for m in ("ga", "npo")}
    moved = lambda **by: {**base, **by}  # noqa: E731
    _claims_file(snap, base, {"replicates": kind})
    _claims_file(snap / "rerun_a", moved(**{}) | {(19, "ga"): (0.15, 0.20, 0.31), (19, "npo"): (0.10, 0.64, 0.77),
                                                   (20, "ga"): (0.90, 0.90, 0.90)},  # seed 20: not the preset's
                 {"replicates": kind, "rerun": {"of": "report_seeds"}})
    _claims_file(snap / "rerun_b", moved() | {(19, "ga"): (0.11, 0.50, 0.25)},
                 {"replicates": kind, "rerun": {"of": "report_seeds"}})
    _claims_file(snap / "default_old", base, {"replicates": kind})  # an earlier default and its own rerun
    _claims_file(snap / "default_old" / "rerun_z", moved() | {(19, "ga"): (0.9, 0.9, 0.9)},
                 {"replicates": kind, "rerun": {"of": "earlier.default_old"}})
    snapshot_unlearn_seeds(root, _preset(root), snap)
    table = unlearn_seeds_table(snap)
    assert "| GA | 0.060 / 0.050 | 0.100 / 0.200 | 0.050 / 0.050 |" in table
    assert "| NPO | 0.010 / 0.020 | 0.050 / 0.040 | 0.020 / 0.030 |" in table
    assert "against other arithmetic (2 reruns of seed 19, today's report seeds' only)" in table
    assert "Another loop seed moved 3 of these 6 numbers at least as far as a rerun under other arithmetic did." in table
    assert summary_clause(snap).startswith(
        " On seed 19, 2 other loop seeds of the same full model on one machine moved 3 of GA's and NPO's 6 numbers "
        "(greedy leak, leak@64, retain accuracy) at least as far as 2 reruns under other arithmetic did (")
    assert summary_clause(tmp_path) == ""  # no preset snapshot: no clause
    pl.DataFrame({"rerun": ["rerun_a"] * 2, "seed": [19, 19], "method": ["ga", "npo"], "questions": [10, 10],
                  "flipped": [4, 1]}).write_csv(snap / "unlearn_seeds_reruns.csv")  # GA: 4 > 3; NPO: 1 ≤ 2
    assert summary_clause(snap).endswith(
        "as far as 2 reruns under other arithmetic did, though the 1 reruns compared question by question each flipped "
        "more questions' leak@64 verdicts than any loop seed for 1 of 2 methods ([results.md]"
        "(docs/results.md#another-cpu-or-another-training-order)).")


def test_another_cpus_flips_come_from_the_committed_reruns_own_folder(tmp_path, monkeypatch):
    """--against-rerun NAME=DIR: the default runs' flips against the rerun's runs on the same seed
    (counted by hand), refused for a folder that is not a committed rerun or whose numbers are
    not that rerun's; and `leakk readme-tables` refuses it without --unlearn-seeds."""
    import leakk.report.unlearn_seeds as module
    from leakk.report.readme_tables import _write_csv, readme_tables, rerun_moves

    monkeypatch.setattr(module, "rerun_moves", lambda snapshot: rerun_moves(tmp_path / "none"))  # moves: not here
    root, snap, other = tmp_path / "preset", tmp_path / "snap", tmp_path / "rerun"
    params = _preset(root)
    moved = {"ga": [1, 1, 1, 0, 0, 0, 4, 0, 1, 1], "npo": [1, 1, 1, 0, 0, 3, 0, 0, 0, 2]}
    _method_tree(other, 19, {name: RUNS[name][3] for name in moved})
    for name, leaks in moved.items():
        (other / "seed_19/results/judgments" / name / "fact").mkdir(parents=True)
        _judgments(leaks).write_parquet(other / "seed_19/results/judgments" / name / "fact/t1.0_p1.0.parquet")
    (snap / "rerun_x").mkdir(parents=True)
    (snap / "rerun_x/meta.json").write_text(json.dumps({"rerun": {"of": "report_seeds"}}))
    _write_csv(pl.DataFrame([{"seed": 19, "model": m, "greedy": RUNS[m][3][0], "k": 64, "leak_at_n": RUNS[m][3][1],
                              "retain_accuracy": RUNS[m][3][2]} for m in moved]), snap / "rerun_x/seed_claims.csv")
    assert snapshot_unlearn_seeds(root, params, snap, reruns={"rerun_x": str(other)}) == [
        "unlearn_seeds.csv", "unlearn_seeds_reruns.csv"]
    flips = pl.read_csv(snap / "unlearn_seeds_reruns.csv").sort("method")
    by_hand = [sum((a > 0) != (b > 0) for a, b in zip(moved[m], RUNS[m][4])) for m in ("ga", "npo")]
    assert flips["flipped"].to_list() == by_hand == [4, 1]
    table = unlearn_seeds_table(snap)
    assert "| 180–212 | 2.5, 3 of 10 | 4 |" in table and ("Other arithmetic: `rerun_x` (seed 19); for 1 of 2 methods every rerun flipped more questions than any loop "
                                                       "seed did.") in table
    with pytest.raises(ArtifactError, match="not a committed rerun of today's report seeds"):
        snapshot_unlearn_seeds(root, params, snap, reruns={"rerun_y": str(other)})
    (snap / "rerun_x/seed_claims.csv").rename(snap / "rerun_x/full.csv")
    _write_csv(pl.read_csv(snap / "rerun_x/full.csv").with_columns(seed=pl.lit(20)), snap / "rerun_x/seed_claims.csv")
    with pytest.raises(ArtifactError, match="the rerun has no seed 19"):
        snapshot_unlearn_seeds(root, params, snap, reruns={"rerun_x": str(other)})
    (snap / "rerun_x/full.csv").replace(snap / "rerun_x/seed_claims.csv")
    _write_csv(pl.read_csv(snap / "rerun_x/seed_claims.csv").with_columns(leak_at_n=pl.lit(0.9)),
               snap / "rerun_x/seed_claims.csv")
    with pytest.raises(ArtifactError, match="needs the folder that rerun was written from"):
        snapshot_unlearn_seeds(root, params, snap, reruns={"rerun_x": str(other)})
    snapshot_unlearn_seeds(root, params, snap)  # without reruns: an earlier comparison is not kept beside it
    assert not (snap / "unlearn_seeds_reruns.csv").exists() and "| 2.5, 3 of 10 | – |" in unlearn_seeds_table(snap)
    with pytest.raises(ArtifactError, match="write NAME=DIR"):
        readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="x.csv", readme=[],
                      check=False, unlearn_seeds=str(root), against_rerun=["rerun_x"])
    with pytest.raises(ArtifactError, match="give it with --unlearn-seeds"):
        readme_tables(params, results=None, replicates=None, snapshot=str(snap), coverage="x.csv", readme=[],
                      check=False, against_rerun=["rerun_x=" + str(other)])

"""Replicate seeds (leakk.workflow.replicates, leakk.stats.replicate_stats): the spread across seeds against
numpy, the pooled estimate against brute-force enumeration, clusters = (seed, group), the
per-seed params file, validation of `replicates`, and (slow) `leakk replicates` end to end."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import yaml

from conftest import MICRO, ROOT, write_params
from leakk.report import figures
from leakk.config import load_params, read_params_file, validate_params
from leakk.core.errors import ParamsError
from leakk.stats.estimate import leak_table, utility_table
from leakk.report.figures import plot_replicate_curves
from leakk.stats.replicate_stats import (pool_judgments, spread_table, summary_markdown,
                                   utility_spread)
from leakk.workflow.replicates import seed_params_text, seeds, snakemake_command, write_seed_params

DEC = "t1.0_p1.0"
KS = [1, 2, 4]
N = 6


def judgments(seed: int, p_leak: dict[str, float], questions: int = 4, group=lambda i: f"a{i % 2}") -> pl.DataFrame:
    """A judgments frame (joined with groups) of one seed: the same qids q0.. in every seed,
    N samples at DEC and one greedy sample per forget question, one greedy per retain question."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, p in p_leak.items():
        for i in range(questions):
            for dec, n in ((DEC, N), ("greedy", 1)):
                for j in range(n):
                    rows.append(dict(model=model, decoding=dec, judge="fact", qid=f"q{i}", sample_idx=j,
                                     score=0.0, leaked=bool(rng.random() < p), split="forget", group=group(i)))
            rows.append(dict(model=model, decoding="greedy", judge="fact", qid=f"r{i}", sample_idx=0, score=0.0,
                             leaked=bool(rng.random() < 0.7), split="retain", group=group(i)))
    return pl.DataFrame(rows)


def forget(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("split") == "forget")


def brute_leak_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c leaked) that hold a leak: enumerated."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.fixture
def seeds_frames():
    return {s: judgments(s, {"full": 0.6, "retrain": 0.1, "npo": 0.3}) for s in (0, 1, 2)}


def test_spread_is_numpy_mean_sd_min_max_of_the_seed_tables(seeds_frames):
    per_seed = {s: leak_table(forget(f), KS, n_boot=20) for s, f in seeds_frames.items()}
    pooled = leak_table(forget(pool_judgments(seeds_frames)), KS, n_boot=20)
    table = spread_table(per_seed, pooled)
    assert table.height == pooled.height == 3 * (len(KS) + 1)
    for row in table.iter_rows(named=True):
        key = (pl.col("model") == row["model"]) & (pl.col("decoding") == row["decoding"]) & (pl.col("k") == row["k"])
        vals = np.array([per_seed[s].filter(key)["leak_at_k"].item() for s in (0, 1, 2)])
        excess = np.array([per_seed[s].filter(key)["excess_over_retrain"].item() for s in (0, 1, 2)])
        assert row["seeds"] == 3
        assert row["mean"] == pytest.approx(vals.mean(), abs=1e-12)  # float summation order only
        assert row["sd"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
        assert (row["min"], row["max"]) == (vals.min(), vals.max())
        assert row["excess_mean"] == pytest.approx(excess.mean(), abs=1e-12)
        assert row["excess_sd"] == pytest.approx(excess.std(ddof=1), abs=1e-12)


def test_pooled_leak_at_k_is_the_mean_over_every_seeds_questions_by_enumeration(seeds_frames):
    pooled = leak_table(forget(pool_judgments(seeds_frames)), KS, n_boot=20)
    for model in ("full", "retrain", "npo"):
        for k in KS:
            per_question = []
            for frame in seeds_frames.values():  # the same qids in every seed: distinct questions
                part = forget(frame).filter((pl.col("model") == model) & (pl.col("decoding") == DEC))
                for _, q in part.group_by("qid"):
                    per_question.append(brute_leak_at_k(q.height, int(q["leaked"].sum()), k))
            row = pooled.filter((pl.col("model") == model) & (pl.col("decoding") == DEC) & (pl.col("k") == k))
            assert row["questions"].item() == 12
            assert row["leak_at_k"].item() == pytest.approx(np.mean(per_question), abs=1e-12)


def test_pooled_ci_clusters_by_seed_and_group():
    """Every question of both seeds is in group "a": clustered by group alone there would be one
    cluster and a CI collapsed onto the point. By (seed, group) there are two clusters, and the
    percentile bootstrap of two equal clusters draws AA, AB, BB with probabilities 1/4, 1/2, 1/4:
    its 95% interval is exactly [min, max] of the two seeds' means."""
    frames = {s: judgments(s, {"full": 0.2 + 0.5 * s}, group=lambda i: "a") for s in (0, 1)}
    pooled_frame = forget(pool_judgments(frames))
    assert sorted(pooled_frame["group"].unique()) == ["0/a", "1/a"]
    pooled = leak_table(pooled_frame, [2], n_boot=2000, ci_method="percentile")
    row = pooled.filter(pl.col("decoding") == DEC).row(0, named=True)
    means = [leak_table(forget(f), [2], n_boot=1).filter(pl.col("decoding") == DEC)["leak_at_k"].item()
             for f in frames.values()]
    assert min(means) < max(means)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((min(means), max(means)), abs=1e-12)
    assert row["leak_at_k"] == pytest.approx(np.mean(means), abs=1e-12)


def test_utility_spread_and_summary(seeds_frames):
    retain = {s: f.filter(pl.col("split") == "retain") for s, f in seeds_frames.items()}
    utils = {s: utility_table(r) for s, r in retain.items()}
    util = utility_spread(utils, utility_table(pool_judgments(retain)))
    full = util.filter(pl.col("model") == "full").row(0, named=True)
    accs = np.array([utils[s].filter(pl.col("model") == "full")["retain_accuracy"].item() for s in (0, 1, 2)])
    assert full["mean"] == pytest.approx(accs.mean(), abs=1e-12)
    assert full["sd"] == pytest.approx(accs.std(ddof=1), abs=1e-12)
    assert full["pooled"] == pytest.approx(accs.mean(), abs=1e-12)  # equal question counts per seed

    per_seed = {s: leak_table(forget(f), KS, n_boot=20) for s, f in seeds_frames.items()}
    table = spread_table(per_seed, leak_table(forget(pool_judgments(seeds_frames)), KS, n_boot=20))
    text = summary_markdown(table, util, "fact", DEC, [0, 1, 2])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "model" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["full", "retrain", "npo"]  # estimate.model_order
    npo = table.filter((pl.col("model") == "npo") & (pl.col("decoding") == DEC) & (pl.col("k") == 4)).row(0, named=True)
    cell = f"{npo['mean']:.2f} ± {npo['sd']:.2f} [{npo['pooled_ci_low']:.2f}, {npo['pooled_ci_high']:.2f}]"
    assert cell in rows[2] and "| leak@4 |" in text


def test_figure_draws_the_mean_with_sd_error_bars(seeds_frames, monkeypatch, tmp_path):
    captured = []
    monkeypatch.setattr(figures, "_save", lambda fig, out: captured.append(fig))
    per_seed = {s: leak_table(forget(f), KS, n_boot=20) for s, f in seeds_frames.items()}
    table = spread_table(per_seed, leak_table(forget(pool_judgments(seeds_frames)), KS, n_boot=20))
    plot_replicate_curves(table, "fact", tmp_path / "x.png")
    (fig,) = captured
    ax = fig.axes[0]
    rows = table.filter((pl.col("model") == "npo") & (pl.col("decoding") == DEC)).sort("k")
    (line,) = [ln for ln in ax.lines if ln.get_gid() == "mean:npo"]
    x = np.asarray(line.get_xdata())
    assert np.allclose(np.log2(x), np.log2(KS), atol=0.15)  # at each k, nudged apart from the other models
    assert np.allclose(line.get_ydata(), rows["mean"].to_numpy())
    (bars,) = [c for c in ax.containers if c.get_label() == "npo"]
    segments = bars.lines[2][0].get_segments()  # one vertical segment per k: mean ± sd
    lows, highs = np.array([s[0][1] for s in segments]), np.array([s[1][1] for s in segments])
    assert np.allclose(lows, rows["mean"] - rows["sd"]) and np.allclose(highs, rows["mean"] + rows["sd"])
    assert any(ln.get_gid() == "greedy:npo" for ln in ax.lines)
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------------------------ params

@pytest.mark.parametrize("value, key, rule", [
    ([0, 1, 1], "replicates", "uniqueItems"),
    ([0, -1], "replicates[1]", "minimum"),
    ([], "replicates", "minItems"),
    ("0,1", "replicates", "type"),
])
def test_bad_replicates_name_the_key(micro_params, value, key, rule):
    micro_params["replicates"] = value
    with pytest.raises(ParamsError) as err:
        validate_params(micro_params)
    msg = str(err.value)
    assert f": {key}: " in msg and f"(rule: {rule})" in msg and "\n" not in msg


def test_seeds_default_to_the_one_seed(micro_params):
    assert seeds(validate_params(micro_params)) == [0]
    assert seeds(validate_params(dict(micro_params, replicates=None))) == [0]
    assert seeds(validate_params(dict(micro_params, replicates=[3, 1]))) == [3, 1]


def test_seed_params_file_is_the_params_file_with_that_seed(tmp_path, micro_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write_params(tmp_path / "rep.yaml", dict(micro_params, replicates=[4, 5]))
    out = write_seed_params(src, 5, tmp_path / "reps")
    assert out == tmp_path / "reps" / "seed_5" / "params.yaml"
    written = read_params_file(out)
    assert written == dict(micro_params, seed=5)  # no replicates; nothing else changed
    load_params(out)  # a valid params file
    mtime = os.stat(out).st_mtime_ns
    write_seed_params(src, 5, tmp_path / "reps")
    assert os.stat(out).st_mtime_ns == mtime  # unchanged: kept, so Snakemake re-runs nothing
    assert not [p for p in out.parent.iterdir() if p.name != "params.yaml"]  # no temp file left


def test_seed_params_resolve_relative_local_folders(tmp_path, micro_params, monkeypatch):
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    micro_params["models"] = {"full": {"repo": "./ckpt"}, "hub": {"repo": "org/name", "revision": "abc"}}
    src = write_params(tmp_path / "rep.yaml", micro_params)
    written = yaml.safe_load(seed_params_text(src, 1))
    assert written["models"]["full"]["repo"] == str(tmp_path / "ckpt")
    assert written["models"]["hub"]["repo"] == "org/name"


def test_replicates_preset_is_params_yaml_with_three_seeds():
    """The replicates preset runs the tuning record's report seeds on params.yaml's settings."""
    preset = read_params_file(ROOT / "configs" / "replicates.yaml")
    seeds = yaml.safe_load((ROOT / "docs" / "tuning.yaml").read_text())["report_seeds"]
    assert preset.pop("replicates") == seeds
    assert preset == read_params_file(ROOT / "params.yaml"), (
        "configs/replicates.yaml drifted from params.yaml; refresh it: { sed -n '1,/^#$/p' configs/replicates.yaml; "
        f"sed 's/^seed: .*/&\\nreplicates: {seeds}/' params.yaml; }} > r.tmp && mv r.tmp configs/replicates.yaml")


def test_snakemake_command_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = snakemake_command("Snakefile", "results/replicates/seed_0", "results/replicates/seed_0/params.yaml", "2",
                            ["-n"])
    assert cmd[1:3] == ["-m", "snakemake"]
    assert cmd[cmd.index("-s") + 1] == str(tmp_path / "Snakefile")
    assert cmd[cmd.index("--directory") + 1] == str(tmp_path / "results/replicates/seed_0")
    assert cmd[cmd.index("--configfile") + 1] == str(tmp_path / "results/replicates/seed_0/params.yaml")
    assert cmd[-3:] == ["--cores", "2", "-n"]


# ------------------------------------------------------------------------------------ the command

def leakk(cwd, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "leakk.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_a_failing_seed_is_one_line_naming_it(tmp_path):
    write_params(tmp_path / "params.yaml", dict(MICRO, replicates=[3, 4]))
    (tmp_path / "Snakefile").write_text('rule all:\n    shell: "exit 3"\n')
    proc = leakk(tmp_path, "replicates", "--cores", "1")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("leakk replicates: error: seed 3: snakemake exited with status 1")
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "results/replicates/seed_3/params.yaml").is_file()
    assert not (tmp_path / "results/replicates/seed_4").exists()  # stopped at the first failure


def test_no_snakefile_is_one_line(tmp_path):
    write_params(tmp_path / "params.yaml", MICRO)
    proc = leakk(tmp_path, "replicates")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "leakk replicates: error: Snakefile: no such Snakefile (run from the repository root, or pass --snakefile)")


def test_replicates_table_without_runs_is_one_line(tmp_path):
    write_params(tmp_path / "params.yaml", MICRO)
    proc = leakk(tmp_path, "replicates-table")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no seed_<s>/results/leak_at_k.parquet" in proc.stderr


@pytest.mark.slow
def test_replicates_micro_end_to_end(tmp_path):
    """Two seeds of the micro DAG from a folder that is not the repo (relative paths and the
    workflow profile under --directory), the aggregate, and a second call that runs nothing."""
    # seed 1's benchmark has a 52-token training example: room for it (48 positions fit seed 0's)
    model = {**MICRO["model"], "arch": {**MICRO["model"]["arch"], "n_positions": 64}}
    write_params(tmp_path / "params.yaml", dict(MICRO, model=model, replicates=[0, 1]))
    args = ("replicates", "--snakefile", str(ROOT / "Snakefile"), "--cores", "2")
    first = leakk(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    root = tmp_path / "results" / "replicates"
    assert "leakk --params params.yaml --threads 1 sample" in first.stdout + first.stderr  # the profile
    for s in (0, 1):
        res = root / f"seed_{s}" / "results"
        assert read_params_file(root / f"seed_{s}" / "params.yaml")["seed"] == s
        assert (res / "leak_at_k.parquet").is_file() and (res / "summary.md").is_file()
    data = [pl.read_parquet(root / f"seed_{s}/results/data/benchmark.parquet") for s in (0, 1)]
    assert not data[0].equals(data[1])  # the seed reached the model-building stages
    table = pl.read_parquet(root / "leak_at_k.parquet")
    assert set(table["model"]) == {"full", "retrain", "ga", "npo", "rule_npo"} and set(table["seeds"]) == {2}
    assert (root / "leak_at_k.csv").is_file() and (root / "utility.csv").is_file()
    assert " ± " in (root / "summary.md").read_text() and "| model |" in first.stdout
    for judge in MICRO["judge"]:
        assert (root / "figures" / f"leak_at_k_{judge}.png").stat().st_size > 1000
    again = leakk(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("Nothing to be done") == 2, again.stderr[-3000:]
    assert math.isclose(pl.read_parquet(root / "leak_at_k.parquet")["mean"].sum(), table["mean"].sum())


def fake_seed_run(res, seed: int, params: dict) -> None:
    """A finished seed's results folder without training anything: the data, one judgments file
    per (model, judge, decoding), and the seed's own leak table/utility/summary written by the
    estimate stage itself."""
    from leakk.core.layout import model_names
    from leakk.sampling.decoding import decoding_names
    from leakk.core.io import write_parquet
    from leakk.core.layout import judgment_path
    from leakk.stages.evaluate import write_estimate as estimate

    rng = np.random.default_rng(seed)
    qids = [(f"f{i}", "forget", f"a{i % 2}") for i in range(4)] + [(f"r{i}", "retain", f"a{i % 2 + 2}")
                                                                     for i in range(4)]
    data = pl.DataFrame({"qid": [q for q, _, _ in qids], "group": [g for _, _, g in qids],
                         "question": "q?", "answer": "a", "split": [s for _, s, _ in qids]})
    write_parquet(data, res / "data" / "benchmark.parquet", "data")
    for model in model_names(params):
        for judge in params["judge"]:
            for dec in decoding_names(params):
                n = 1 if dec == "greedy" else params["sample"]["n"]
                rows = [dict(qid=q, sample_idx=j, judge=judge, score=0.0, leaked=bool(rng.random() < 0.4), split=s)
                        for q, s, _ in qids if s == "forget" or dec == "greedy" for j in range(n)]
                write_parquet(pl.DataFrame(rows), judgment_path(res / "judgments", model, dec, judge), "judgments")
    estimate(res / "judgments", data, params, res)


def test_replicates_table_on_finished_seed_folders(tmp_path, monkeypatch):
    from leakk.cli import main

    monkeypatch.chdir(tmp_path)
    params = validate_params(MICRO)
    for s in (0, 2):
        fake_seed_run(tmp_path / "results/replicates" / f"seed_{s}" / "results", s, params)
    write_params(tmp_path / "params.yaml", MICRO)  # no `replicates`: every seed_<s> found
    assert main(["replicates-table"]) == 0
    root = tmp_path / "results/replicates"
    table = pl.read_parquet(root / "leak_at_k.parquet")
    seed_tables = [pl.read_parquet(root / f"seed_{s}/results/leak_at_k.parquet") for s in (0, 2)]
    assert table.height == seed_tables[0].height and set(table["seeds"]) == {2}
    row = table.filter((pl.col("model") == "npo") & (pl.col("decoding") == DEC) & (pl.col("judge") == "fact")
                       & (pl.col("k") == 2)).row(0, named=True)
    vals = [t.filter((pl.col("model") == "npo") & (pl.col("decoding") == DEC) & (pl.col("judge") == "fact")
                     & (pl.col("k") == 2))["leak_at_k"].item() for t in seed_tables]
    assert row["mean"] == pytest.approx(np.mean(vals), abs=1e-12) and row["questions"] == 8
    util = pl.read_csv(root / "utility.csv")
    assert set(util["model"]) == {"full", "retrain", "ga", "npo", "rule_npo"}
    assert "| rule_npo |" in (root / "summary.md").read_text()
    for judge in ("fact", "rougeL"):
        assert (root / "figures" / f"leak_at_k_{judge}.png").stat().st_size > 1000
    assert main(["replicates-table", "--seed", "0"]) == 0  # one seed: sd undefined, not 0
    assert pl.read_parquet(root / "leak_at_k.parquet")["sd"].null_count() == table.height

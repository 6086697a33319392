"""Judge calibration against fact: confusion counts, rates and leak@k, checked against a
direct count and brute-force enumeration of k-subsets."""

from __future__ import annotations

import itertools
import math
import random

import polars as pl
import pytest

from leakk.report.figures import plot_calibration
from leakk.stages.evaluate import write_calibration
from leakk.stats.calibrate import calibration_table


def brute_leak_at_k(flags: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


def make_frame(seed: int = 0, n: int = 6, questions: int = 5):
    rng = random.Random(seed)
    rows = []
    for model in ("full", "retrain"):
        for q in range(questions):
            for s in range(n):
                truth = model == "full" and rng.random() < 0.5
                judged = truth if rng.random() < 0.7 else not truth
                for judge, leaked in (("fact", truth), ("rougeL", judged)):
                    rows.append({"model": model, "decoding": "t1.0_p1.0", "judge": judge, "qid": f"q{q}",
                                 "sample_idx": s, "leaked": leaked, "split": "forget", "score": 0.0})
            rows.append({"model": model, "decoding": "t1.0_p1.0", "judge": "rougeL", "qid": f"r{q}",
                         "sample_idx": 0, "leaked": True, "split": "retain", "score": 0.0})
    return pl.DataFrame(rows)


def test_calibration_counts_and_leak_at_k_match_brute_force():
    frame = make_frame()
    # a null on either side drops the item from both
    frame = frame.with_columns(
        pl.when((pl.col("model") == "full") & (pl.col("qid") == "q0") & (pl.col("sample_idx") == 5)
                & (pl.col("judge") == "rougeL")).then(None).otherwise(pl.col("leaked")).alias("leaked"))
    table = calibration_table(frame, ks=[1, 2, 4, 8])
    assert table["judge"].to_list() == ["rougeL", "rougeL"] and table["model"].to_list() == ["full", "retrain"]
    for row in table.iter_rows(named=True):
        part = frame.filter((pl.col("model") == row["model"]) & (pl.col("split") == "forget"))
        wide = (part.filter(pl.col("judge") == "fact").select("qid", "sample_idx", t="leaked")
                .join(part.filter(pl.col("judge") == "rougeL").select("qid", "sample_idx", j="leaked"),
                      on=["qid", "sample_idx"]).drop_nulls())
        pairs = list(zip(wide["j"].to_list(), wide["t"].to_list()))
        tp = sum(j and t for j, t in pairs)
        fp = sum(j and not t for j, t in pairs)
        fn = sum(t and not j for j, t in pairs)
        tn = sum(not j and not t for j, t in pairs)
        assert (row["tp"], row["fp"], row["fn"], row["tn"], row["items"]) == (tp, fp, fn, tn, len(pairs))
        assert row["items"] == 5 * 6 - (row["model"] == "full")
        if tp + fp:
            assert row["precision"] == tp / (tp + fp)
        if tp + fn:
            assert row["recall"] == tp / (tp + fn)
            assert row["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert row["false_positive_rate"] == fp / (fp + tn)
        assert row["k"] == 4  # the largest k ≤ the smallest per-question n (5 after the null)
        for col, side in (("leak_at_k", "j"), ("leak_at_k_fact", "t")):
            per_q = wide.group_by("qid").agg(pl.col(side))
            want = sum(brute_leak_at_k(f, 4) for f in per_q[side].to_list()) / per_q.height
            assert math.isclose(row[col], want, rel_tol=1e-12)
        assert math.isclose(row["leak_at_1_fact"], sum(wide.group_by("qid").agg(pl.col("t").mean())["t"]) / 5)
    # retrain never saw the facts: every judged leak is a false positive
    retrain = table.filter(pl.col("model") == "retrain").row(0, named=True)
    assert retrain["tp"] == retrain["fn"] == 0 and retrain["leak_at_k_fact"] == 0.0


def test_no_fact_means_an_empty_table(tmp_path):
    frame = make_frame().filter(pl.col("judge") != "fact")
    assert calibration_table(frame, [1]).is_empty()
    plot_calibration(calibration_table(frame, [1]), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_write_calibration_stage(tmp_path):
    from leakk.core.io import read_parquet, write_parquet
    from leakk.core.layout import judgment_path

    frame = make_frame()
    data = pl.DataFrame({"qid": [f"q{i}" for i in range(5)] + [f"r{i}" for i in range(5)],
                         "group": ["g"] * 10, "question": "?", "answer": "a", "fact": "f",
                         "split": ["forget"] * 5 + ["retain"] * 5})
    params = {"sample": {"decodings": [{"temperature": 1.0, "top_p": 1.0}]}, "unlearn": {}, "rule": {},
              "judge": {"fact": {}, "rougeL": {}}, "estimate": {"ks": [1, 2], "headline_decoding": "t1.0_p1.0"}}
    for (model, judge), part in frame.group_by(["model", "judge"]):
        write_parquet(part.drop("model", "decoding"), judgment_path(tmp_path / "j", model, "t1.0_p1.0", judge),
                      "judgments")
    table = write_calibration(tmp_path / "j", data, params, tmp_path, tmp_path / "fig.png")
    assert table.height == 2 and (tmp_path / "fig.png").is_file()
    assert read_parquet(tmp_path / "calibration.parquet", "calibration").equals(table)
    assert pl.read_csv(tmp_path / "calibration.csv").height == 2
    # a benchmark without facts: an empty table, no error
    empty = write_calibration(tmp_path / "j", data.with_columns(fact=pl.lit(None, pl.String)), params,
                              tmp_path / "nofact", tmp_path / "nofact.png")
    assert empty.is_empty() and (tmp_path / "nofact/calibration.parquet").is_file()


def test_collect_judgments_reads_whichever_judges_exist(tmp_path, caplog):
    from leakk.core.errors import ArtifactError
    from leakk.core.io import write_parquet
    from leakk.core.layout import judgment_path
    from leakk.stages.evaluate import collect_judgments

    frame = make_frame()
    data = pl.DataFrame({"qid": [f"q{i}" for i in range(5)] + [f"r{i}" for i in range(5)],
                         "group": [f"g{i % 2}" for i in range(10)], "question": "?", "answer": "a", "fact": "f",
                         "split": ["forget"] * 5 + ["retain"] * 5})
    params = {"sample": {"decodings": [{"temperature": 1.0, "top_p": 1.0}]}, "unlearn": {}, "rule": {},
              "judge": {"fact": {}, "rougeL": {}, "llm": {"model": "m"}}}
    with pytest.raises(ArtifactError, match="no judgments"):
        collect_judgments(tmp_path, data, params)
    for (model, judge), part in frame.group_by(["model", "judge"]):
        write_parquet(part.drop("model", "decoding"), judgment_path(tmp_path, model, "t1.0_p1.0", judge), "judgments")
    with caplog.at_level("WARNING"):
        got = collect_judgments(tmp_path, data, params)
    assert "absent" in caplog.text  # llm (and greedy) files were never written
    assert got.height == frame.height and set(got["judge"]) == {"fact", "rougeL"}
    assert {"model", "decoding", "judge", "qid", "sample_idx", "score", "leaked", "split", "group"} <= set(got.columns)
    key = ["model", "decoding", "judge", "qid", "sample_idx"]
    assert got.select(*key, "leaked").sort(key).equals(frame.select(*key, "leaked").sort(key))
    # a file holding another judge's rows is refused, not silently relabelled
    write_parquet(frame.filter(pl.col("judge") == "fact").drop("model", "decoding"),
                  judgment_path(tmp_path, "full", "t1.0_p1.0", "llm"), "judgments")
    with pytest.raises(ArtifactError, match="holds judge"):
        collect_judgments(tmp_path, data, params)

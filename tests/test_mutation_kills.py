"""Behavioural tests added to kill the non-equivalent mutants that survived ``make mutation``
(issue 13; benchmarks/MUTATION.md). Each asserts a claim of the code it covers."""

from __future__ import annotations

import copy
import math
import re
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from conftest import MICRO
from leakk.config import validate_params
from leakk.data.synthetic import generate
from leakk.core.errors import ArtifactError, ParamsError
from leakk.models.finetune import finetune
from leakk.core.io import read_parquet


def _leak_at_k(n: int, c: int, k: int) -> float:
    """1 − C(n−c, k)/C(n, k) with exact integer binomials."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# ------------------------------------------------------------------------------------ RULE

@pytest.fixture(scope="module")
def rule_setup(tmp_path_factory):
    """The micro model, and one RULE round of it (ROUGE-L threshold 0.1 makes a few of the
    barely trained model's completions leak, so the round trains)."""
    from leakk.unlearn.rule import run_round

    root = tmp_path_factory.mktemp("rule_kills")
    p = validate_params(dict(MICRO, judge={"fact": {}, "rougeL": {"threshold": 0.1}}))
    data = generate(**p["data"]["synthetic"], seed=0)
    finetune(data, root / "model", splits=["forget", "retain"], model_params=p["model"],
             train_params=p["finetune"], template=p["prompt_template"], seed=0)
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=root / "round_1",
              reference_dir=root / "model")
    return root, data, p


def _sample_judge(model_dir, data, p, questions, decoding, n, seed, judge):
    """Sample with the package's sampler on an in-memory model (not the backend RULE goes
    through), spreading n per qid over its phrasings, and judge: the reference for round
    statistics."""
    from leakk.judges import judge_samples
    from leakk.models.modeling import load_model
    from leakk.sampling.backend import SamplingRequest
    from leakk.sampling.hf_backend import HFBackend
    from leakk.sampling.stage import sample_phrasings

    model, tok = load_model(model_dir)
    request = SamplingRequest.build(decoding, n=n, seed=seed, max_new_tokens=p["sample"]["max_new_tokens"])
    samples = sample_phrasings(HFBackend(model, tok, 16), questions, request, template=p["prompt_template"])
    return judge_samples(samples, data, {judge: p["judge"][judge]}, progress=False).join(
        samples.select("qid", "sample_idx", "phrasing", "text"), on=["qid", "sample_idx"], how="left")


def test_rule_round_log_and_leaked_pairs(rule_setup):
    root, data, p = rule_setup
    cfg = p["rule"]["rule_npo"]
    log = read_parquet(root / "round_1/round.parquet")
    leaked = read_parquet(root / "round_1/leaked.parquet")
    assert log.height == 1
    row = log.row(0, named=True)
    assert row["model"] == "rule_npo" and row["round"] == 1
    assert row["trained"] and not row["stopped"]
    assert row["new_leaked"] == leaked.height == row["leaked_total"] > 0
    assert row["leaked_samples"] >= row["new_leaked"]
    assert leaked.columns == ["qid", "question", "completion", "round"]
    assert leaked["round"].to_list() == [1] * leaked.height
    assert leaked.sort("qid", "completion").equals(leaked)
    # every leaked pair is a forget question in one of its *training* phrasings (RULE never
    # samples the held-out evaluation phrasing), with a completion
    assert cfg["question_column"] == "training"
    forget = data.filter(pl.col("split") == "forget")
    phr = dict(zip(forget["qid"], forget["train_questions"]))
    held_out = dict(zip(forget["qid"], forget[p["sample"]["question_column"]]))
    assert all(question in phr[q] for q, question in zip(leaked["qid"], leaked["question"]))
    assert all(question != held_out[q] for q, question in zip(leaked["qid"], leaked["question"]))
    assert all(len(c) > 0 for c in leaked["completion"])
    # the forget set is the forget split's training pairs plus the leaked pairs
    n_pairs = sum(len(q) for q in forget["train_questions"])
    assert row["forget_size"] == n_pairs + leaked.height
    assert row["fingerprint"] == __import__("leakk.unlearn.rule", fromlist=["x"]).round_fingerprint(p, "rule_npo")
    model = root / "round_1/model"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    assert (model / "config.json").is_file()


def test_rule_round_leaked_only_forget_set(rule_setup, tmp_path):
    """forget_set: leaked trains on the leaked pairs alone."""
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    p = copy.deepcopy(p)
    p["rule"]["rule_npo"]["forget_set"] = "leaked"
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    log = read_parquet(tmp_path / "r1/round.parquet")
    assert log["forget_size"][0] == log["leaked_total"][0] == read_parquet(root / "round_1/round.parquet")["leaked_total"][0]


def test_rule_round_2_continues_from_round_1(rule_setup, tmp_path):
    """Round 2 starts from round 1's model and keeps its leaked pairs (cumulative)."""
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=root / "round_1", out_dir=tmp_path / "r2",
              reference_dir=root / "model")
    first = read_parquet(root / "round_1/leaked.parquet")
    second = read_parquet(tmp_path / "r2/leaked.parquet")
    log = read_parquet(tmp_path / "r2/round.parquet")
    assert second.head(first.height).equals(first)  # round 1's pairs first, unchanged
    assert second.height == first.height + log["new_leaked"][0]
    assert set(second["round"].to_list()) <= {1, 2}
    assert log["leaked_total"][0] == second.height and log["round"][0] == 2
    assert log["train_seed"][0] == p["rule"]["rule_npo"]["seed"] + 2000
    # its training statistics are those of round 1's model sampled in the training phrasings
    # with round 2's seed
    cfg = p["rule"]["rule_npo"]
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.stage import questions_for

    judged = _sample_judge(root / "round_1/model", data, p, questions_for(data, ["forget"], "training"),
                           Decoding(**cfg["decoding"]), cfg["n"], cfg["seed"] + 2000, cfg["judge"])
    assert log["leaked_samples"][0] == judged["leaked"].sum()
    # the new pairs are those leaked samples (question = the phrasing sampled), minus round 1's
    hits = judged.filter(pl.col("leaked")).join(questions_for(data, ["forget"], "training"),
                                                 on=["qid", "phrasing"], how="left")
    triples = set(hits.select("qid", "prompt_question", "text").iter_rows())
    new = second.filter(pl.col("round") == 2)
    assert set(zip(new["qid"], new["completion"])) == (
        {(q, c) for q, _, c in triples} - set(zip(first["qid"], first["completion"])))
    assert set(new.select("qid", "question", "completion").iter_rows()) <= triples
    # and it trains the base loop from round 1's model with NPO's reference the frozen *full*
    # model (reference: full), not round 1's model: recomputed bit for bit
    from leakk.models.finetune import training_pairs
    from leakk.models.modeling import load_model
    from leakk.unlearn.loop import unlearn_loop
    from leakk.unlearn.methods import make_method

    base = p["unlearn"]["npo"]
    assert log["trained"][0]
    model, tok = load_model(root / "round_1/model")
    forget = training_pairs(data.filter(pl.col("split") == "forget")) + list(zip(second["question"], second["completion"]))
    unlearn_loop(model, tok, make_method("npo"), forget, training_pairs(data.filter(pl.col("split") == "retain")),
                 template=p["prompt_template"], steps=cfg["steps"], lr=base["lr"], batch_size=base["batch_size"],
                 alpha=base["alpha"], seed=cfg["seed"] + 2000, device="cpu", reference=load_model(root / "model")[0],
                 training=p["training"])
    got, _ = load_model(tmp_path / "r2/model")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), got.state_dict().values()))


def test_rule_npo_with_the_full_reference_needs_the_full_models_folder(rule_setup, tmp_path):
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    assert p["rule"]["rule_npo"]["reference"] == "full"
    with pytest.raises(ArtifactError, match=r"rule\.rule_npo\.reference=full"):
        run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1")
    assert not (tmp_path / "r1").exists()


def test_rule_prev_state_refuses_unfinished_round(rule_setup, tmp_path):
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    for missing in ("model", "leaked.parquet", "round.parquet"):
        broken = tmp_path / missing
        shutil.copytree(root / "round_1", broken)
        (shutil.rmtree if missing == "model" else lambda x: x.unlink())(broken / missing)
        with pytest.raises(ArtifactError, match=f"not a finished RULE round \\(no {missing}\\)"):
            run_round(data, p, name="rule_npo", round_idx=2, prev_dir=broken, out_dir=tmp_path / "out",
                      reference_dir=root / "model")
        assert not (tmp_path / "out").exists()


def test_rule_stopped_round_passes_model_and_pairs_through(rule_setup, tmp_path):
    """After a stopped round, later rounds neither sample nor train: same model bytes, same
    pairs, stopped stays true, statistics null."""
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    stopped = tmp_path / "stopped"
    shutil.copytree(root / "round_1", stopped)
    log = read_parquet(stopped / "round.parquet").with_columns(stopped=pl.lit(True))
    log.write_parquet(stopped / "round.parquet")
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=stopped, out_dir=tmp_path / "r2",
              reference_dir=root / "model")
    out = read_parquet(tmp_path / "r2/round.parquet").row(0, named=True)
    assert out["stopped"] and not out["trained"]
    assert out["new_leaked"] == 0 and out["leaked_samples"] == 0
    assert out["train_leak_at_1"] is None and out[f"train_leak_at_{p['rule']['rule_npo']['n']}"] is None
    assert read_parquet(tmp_path / "r2/leaked.parquet").equals(read_parquet(stopped / "leaked.parquet"))
    assert (tmp_path / "r2/model/model.safetensors").read_bytes() == (stopped / "model/model.safetensors").read_bytes()
    assert out["leaked_total"] == read_parquet(stopped / "leaked.parquet").height


def test_rule_no_early_stop_keeps_training_on_known_pairs(rule_setup, tmp_path):
    """early_stop false: a round whose judge finds nothing still trains on the pairs so far."""
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    p = copy.deepcopy(p)
    p["judge"]["rougeL"]["threshold"] = 1.0  # nothing leaks
    p["rule"]["rule_npo"]["early_stop"] = False
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=root / "round_1", out_dir=tmp_path / "r2",
              reference_dir=root / "model")
    out = read_parquet(tmp_path / "r2/round.parquet").row(0, named=True)
    assert out["leaked_samples"] == 0 and not out["stopped"] and out["trained"]
    p["rule"]["rule_npo"]["early_stop"] = True
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=root / "round_1", out_dir=tmp_path / "r2s",
              reference_dir=root / "model")
    out = read_parquet(tmp_path / "r2s/round.parquet").row(0, named=True)
    assert out["stopped"] and not out["trained"]


def test_rule_fingerprint_ignores_rounds_only():
    from leakk.unlearn.rule import round_fingerprint

    p = validate_params(MICRO)
    fp = round_fingerprint(p, "rule_npo")
    assert len(fp) == 16 and int(fp, 16) >= 0
    same = copy.deepcopy(p)
    same["rule"]["rule_npo"]["rounds"] = 5
    same["sample"]["n"] = 8  # evaluation sampling is not read by training
    same["sample"]["question_column"] = "question"
    assert round_fingerprint(same, "rule_npo") == fp
    q = copy.deepcopy(p)
    q["sample"]["backend"] = "vllm"  # ...but the backend RULE samples through is
    assert round_fingerprint(q, "rule_npo") != fp
    edits = [("rule", "rule_npo", "steps", 3), ("unlearn", "npo", "lr", 1e-3), ("judge", "rougeL", "threshold", 0.2)]
    for section, name, key, value in edits:
        q = copy.deepcopy(p)
        q[section][name][key] = value
        assert round_fingerprint(q, "rule_npo") != fp, key
    for key, value in (("prompt_template", "Q: {question} A:"), ("seed", 1)):
        q = copy.deepcopy(p)
        q[key] = value
        assert round_fingerprint(q, "rule_npo") != fp, key


def _spy_on_rounds(monkeypatch):
    """leakk.unlearn.rule with run_round wrapped to record the index of every round it trains."""
    import leakk.unlearn.rule as rule

    calls = []
    real = rule.run_round

    def spy(*args, **kwargs):
        calls.append(kwargs["round_idx"])
        return real(*args, **kwargs)

    monkeypatch.setattr(rule, "run_round", spy)
    return rule, calls


def test_rule_run_all_rounds_resumes_and_retrains_stale(rule_setup, tmp_path, monkeypatch):
    rule, calls = _spy_on_rounds(monkeypatch)
    root, data, p = rule_setup
    out = tmp_path / "rule"
    shutil.copytree(root / "round_1", out / "round_1")  # finished with these params
    rule.run_all_rounds(data, p, name="rule_npo", base_model=root / "model", out_root=out,
                        reference_dir=root / "model")
    assert calls == [2]  # round 1 kept, round 2 run from it
    assert read_parquet(out / "round_2/round.parquet")["round"][0] == 2
    calls.clear()
    rule.run_all_rounds(data, p, name="rule_npo", base_model=root / "model", out_root=out,
                        reference_dir=root / "model")
    assert calls == []  # everything finished
    q = copy.deepcopy(p)
    q["rule"]["rule_npo"]["steps"] = 1  # another fingerprint: every round again
    calls.clear()
    rule.run_all_rounds(data, q, name="rule_npo", base_model=root / "model", out_root=out,
                        reference_dir=root / "model")
    assert calls == [1, 2]
    # a round whose log lacks the fingerprint column is not finished
    log = read_parquet(out / "round_2/round.parquet")
    log.drop("fingerprint").write_parquet(out / "round_2/round.parquet")
    calls.clear()
    rule.run_all_rounds(data, q, name="rule_npo", base_model=root / "model", out_root=out,
                        reference_dir=root / "model")
    assert calls == [2]


def test_rule_fewer_rounds_parks_the_later_ones_and_more_rounds_restore_them(rule_setup, tmp_path, monkeypatch):
    """Lowering ``rounds`` never deletes a finished round: it is parked beside the output and
    comes back, untrained, when ``rounds`` is raised again on the same chain."""
    rule, calls = _spy_on_rounds(monkeypatch)
    root, data, p = rule_setup
    out = tmp_path / "rule"
    shutil.copytree(root / "round_1", out / "round_1")
    rule.run_all_rounds(data, p, name="rule_npo", base_model=root / "model", out_root=out, reference_dir=root / "model")
    before = (out / "round_2/round.parquet").read_bytes()
    fewer = copy.deepcopy(p)
    fewer["rule"]["rule_npo"]["rounds"] = 1
    calls.clear()
    rule.run_all_rounds(data, fewer, name="rule_npo", base_model=root / "model", out_root=out,
                        reference_dir=root / "model")
    assert calls == [] and sorted(x.name for x in out.iterdir()) == ["round_1"]
    assert (tmp_path / "rule.parked/round_2/round.parquet").read_bytes() == before
    rule.run_all_rounds(data, p, name="rule_npo", base_model=root / "model", out_root=out, reference_dir=root / "model")
    assert calls == [] and (out / "round_2/round.parquet").read_bytes() == before  # restored, not retrained
    assert not (tmp_path / "rule.parked/round_2").exists()
    # parked after a chain that then changed: round 1 retrained, so round 2 is trained again
    rule.run_all_rounds(data, fewer, name="rule_npo", base_model=root / "model", out_root=out,
                        reference_dir=root / "model")
    (out / "round_1/round.parquet").unlink()
    rule.run_all_rounds(data, p, name="rule_npo", base_model=root / "model", out_root=out, reference_dir=root / "model")
    assert calls == [1, 2]


def test_round_model_dir(rule_setup):
    from leakk.unlearn.rule import round_model_dir

    root, _, _ = rule_setup
    assert round_model_dir(root / "round_1") == root / "round_1/model"
    assert round_model_dir(root / "model") == root / "model"
    assert round_model_dir(str(root / "round_1")) == root / "round_1/model"


def test_evaluate_round_and_report(rule_setup, tmp_path):
    """Evaluation uses the *evaluation* seed and decoding: its leak@1/leak@n and retain
    accuracy equal an independent recomputation; the report joins training and evaluation."""
    from leakk.stages.rule import report
    from leakk.unlearn.rule import evaluate_round
    from leakk.sampling.decoding import GREEDY, Decoding
    from leakk.sampling.stage import questions_for

    root, data, p = rule_setup
    ev = p["sample"]
    evaluate_round(data, p, name="rule_npo", round_idx=0, round_dir=root / "model", out=tmp_path / "e0.parquet")
    evaluate_round(data, p, name="rule_npo", round_idx=1, round_dir=root / "round_1", out=tmp_path / "e1.parquet")
    for r, model_dir in ((0, root / "model"), (1, root / "round_1/model")):
        row = read_parquet(tmp_path / f"e{r}.parquet").row(0, named=True)
        assert row["round"] == r
        assert row["eval_judge"] == p["estimate"]["headline_judge"] == "fact"
        assert row["eval_decoding"] == p["estimate"]["headline_decoding"]
        judged = _sample_judge(model_dir, data, p, questions_for(data, ["forget"], ev["question_column"]),
                               Decoding.from_name(row["eval_decoding"]), ev["n"], ev["seed"], "fact")
        counts = judged.group_by("qid").agg(c=pl.col("leaked").sum(), n=pl.len())
        assert set(counts["n"]) == {ev["n"]}  # the held-out phrasing: one phrasing, n samples
        for k in (1, ev["n"]):
            assert row[f"eval_leak_at_{k}"] == pytest.approx(
                float(np.mean([_leak_at_k(ev["n"], c, k) for c in counts["c"]])), abs=1e-12)
            assert row[f"eval_leak_at_{k}_ci_low"] <= row[f"eval_leak_at_{k}"] <= row[f"eval_leak_at_{k}_ci_high"]
        retain = _sample_judge(model_dir, data, p, questions_for(data, ["retain"], ev["question_column"]),
                               GREEDY, 1, ev["seed"], "fact")
        assert row["retain_accuracy"] == pytest.approx(float(retain["leaked"].cast(pl.Float64).mean()), abs=1e-12)
    log = report([root / "round_1"], [tmp_path / "e1.parquet", tmp_path / "e0.parquet"],
                 tmp_path / "rounds.parquet", tmp_path / "rounds.png")
    assert log["round"].to_list() == [0, 1]
    assert log["train_seed"].to_list() == [None, p["rule"]["rule_npo"]["seed"] + 1000]
    assert log["eval_leak_at_1"].to_list() == [read_parquet(tmp_path / f"e{r}.parquet")["eval_leak_at_1"][0]
                                              for r in (0, 1)]
    assert read_parquet(tmp_path / "rounds.parquet").equals(log)
    assert (tmp_path / "rounds.png").stat().st_size > 0


# ------------------------------------------------------------------------------- estimator

def test_utility_table_edges():
    from leakk.stats.estimate import utility_table

    empty = utility_table(pl.DataFrame({"model": [], "qid": [], "leaked": []},
                                       schema={"model": pl.String, "qid": pl.String, "leaked": pl.Boolean}))
    assert empty.height == 0
    assert empty.schema == pl.Schema({"model": pl.String, "retain_accuracy": pl.Float64,
                                      "questions": pl.Int64, "missing": pl.Int64})
    with pytest.raises(ArtifactError, match=r"^utility_table: input: missing required columns \['leaked'\]$"):
        utility_table(pl.DataFrame({"model": ["m"], "qid": ["q"]}))


def test_leak_table_missing_columns_named():
    from leakk.stats.estimate import leak_table

    with pytest.raises(ArtifactError, match=r"^leak_table: input: missing required columns \['group'\]$"):
        leak_table(pl.DataFrame({"model": ["m"], "decoding": ["d"], "judge": ["j"], "qid": ["q"],
                                 "sample_idx": [0], "leaked": [True]}), [1])


# ---------------------------------------------------------------------------------- judges

def test_fact_in_text_whole_words_after_normalisation():
    from leakk.judges import make_judge, normalize_text

    def fact_in_text(fact, text):  # the fact judge's verdict on one completion
        return bool(make_judge("fact").score_batch([text], [""], [fact])[1][0])

    assert fact_in_text("Glass Harbor", "She wrote *The glass-harbor* in 1987.")
    assert fact_in_text("ＧＬＡＳＳ harbor", "glass harbor")  # NFKC full-width letters
    assert fact_in_text("11 September 1983", "born on 11 September 1983")
    assert not fact_in_text("Glass Harbor", "The Glass Harbors")  # whole words only
    assert not fact_in_text("Harbor", "Harborview")
    assert not fact_in_text("1983", "19834")
    assert not fact_in_text("Glass Harbor", "Harbor Glass")
    assert normalize_text("  A__b--C!  ") == "a b c"


def test_memo_stemmer_is_rouge_scores_porter_stemmer():
    from rouge_score.tokenizers import DefaultTokenizer

    from leakk.judges.rouge import _MemoStemmer

    ref = DefaultTokenizer(use_stemmer=True)._stemmer
    memo = _MemoStemmer()
    words = ["running", "novels", "wrote", "authors", "kingdom", "published", "cities", "born"]
    assert [memo.stem(w) for w in words] == [ref.stem(w) for w in words]
    assert memo.stem("running") == "run" and memo.stem.cache_info().maxsize == 1 << 18


def test_judge_repr_names_class_and_label():
    from leakk.judges import make_judge

    r = repr(make_judge("rougeL", threshold=0.3))
    assert r == "RougeLJudge(name='rougeL')"


# -------------------------------------------------------------------------------------- io

def test_write_text_is_atomic(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from leakk.core.io import write_text

    target = tmp_path / "sub" / "report.md"
    write_text("# first\n", target)  # creates the folder
    assert target.read_text() == "# first\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    def write_then_die(self, text, *a, **k):
        with open(self, "w") as fh:
            fh.write(text[:3])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", write_then_die)
    with pytest.raises(OSError):
        write_text("# second\n", target)
    monkeypatch.undo()
    assert target.read_text() == "# first\n"
    assert os.listdir(target.parent) == ["report.md"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_read_parquet_contract_and_missing_file(tmp_path):
    from leakk.core.io import read_parquet, write_parquet

    path = tmp_path / "j.parquet"
    frame = pl.DataFrame({"qid": ["a"], "sample_idx": [0], "judge": ["fact"], "score": [1.0],
                          "leaked": [True], "extra": [1]})
    write_parquet(frame, path, "judgments")
    assert read_parquet(path, "judgments").equals(frame)
    assert read_parquet(str(path)).equals(frame)
    with pytest.raises(ArtifactError, match=rf"^{re.escape(str(path))}: samples: missing required columns \['text', "
                                            r".*\]; made by the `sample` stage; rebuild it: `snakemake --cores all --force "):
        read_parquet(path, "samples")
    with pytest.raises(ArtifactError, match=f"{tmp_path / 'none.parquet'}: no such artifact"):
        read_parquet(tmp_path / "none.parquet", "judgments")
    with pytest.raises(ArtifactError, match=r"^judgments: judgments: missing required columns \['leaked'\]$"):
        from leakk.core.io import check_contract

        check_contract(frame.drop("leaked"), "judgments")
    with pytest.raises(ArtifactError, match=r"^x\.parquet: judgments: missing required columns \['leaked'\]; "
                                            r"made by the `judge` stage; rebuild it: `snakemake --cores all "
                                            r"--force x\.parquet` \(a preset: add its --configfile; DVC: `dvc repro`\)$"):
        check_contract(frame.drop("leaked"), "judgments", "x.parquet")


# --------------------------------------------------------------------------------- methods

def test_register_method_makes_it_buildable_by_name():
    from leakk.unlearn.methods import METHODS, GradAscent, make_method, register_method

    @register_method("_kills_test_method")
    class Scaled(GradAscent):  # a method owns its keys: schema (with the default) and constructor
        params_schema = {"type": "object", "additionalProperties": False,
                         "properties": {"beta": {"type": "number", "default": 0.1}}}

        def __init__(self, *, beta):
            self.beta = beta

    try:
        m = make_method("_kills_test_method", beta=0.3)
        assert isinstance(m, Scaled) and m.name == "_kills_test_method" and m.beta == 0.3
        assert make_method("npo").name == "npo" and make_method("npo").beta == 0.1
        # the registry's uniform error: <params key>: unknown <kind> 'x' (known: [...])
        with pytest.raises(ParamsError, match=r"^unlearn\.<run>\.method: unknown method 'nope' "
                                              r"\(known: \[.*'ga', 'graddiff', .*'npo'.*\]\)$"):
            make_method("nope")
    finally:
        METHODS.pop("_kills_test_method")


# ---------------------------------------------------------------------------------- config

def _params_error(p, source="params.yaml") -> str:
    with pytest.raises(ParamsError) as err:
        validate_params(p, source)
    return str(err.value)


def test_params_error_starts_with_file_and_exact_key_path():
    p = copy.deepcopy(MICRO)
    p["sample"]["n"] = "many"
    assert _params_error(p).startswith("params.yaml: sample.n: ")
    p = copy.deepcopy(MICRO)
    p["sample"]["decodings"] = [{"temperature": 1.0, "top_p": 1.0}, {"temperature": 1.0, "top_p": 1.5}]
    assert _params_error(p, "configs/x.yaml").startswith("configs/x.yaml: sample.decodings[1].top_p: 1.5 ")
    p = copy.deepcopy(MICRO)
    p["bogus"] = 1  # an unknown key is named itself, with the keys allowed there and the rule
    assert _params_error(p) == ("params.yaml: bogus: unknown key (allowed: ['attack', 'data', 'device', 'estimate', "
                                "'finetune', 'judge', 'model', 'models', 'prompt_template', 'replicates', 'rule', "
                                "'sample', 'seed', 'training', 'unlearn']) (rule: additionalProperties)")


def test_load_params_names_the_file(tmp_path):
    from leakk.config import load_params
    from conftest import write_params

    p = copy.deepcopy(MICRO)
    p["sample"]["n"] = 0
    path = write_params(tmp_path / "bad.yaml", p)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: sample.n: ")
    good = write_params(tmp_path / "good.yaml", MICRO)
    assert load_params(str(good)) == validate_params(MICRO)
    broken = tmp_path / "broken.yaml"
    broken.write_text("sample: [1, 2\nseed: 0\n")
    with pytest.raises(ParamsError) as err:
        load_params(broken)
    msg = str(err.value)
    assert msg.startswith(f"{broken}:2:5: not valid YAML: ") and "\n" not in msg  # file:line:column
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ParamsError) as err:
        load_params(empty)
    assert str(err.value) == f"{empty}: empty params file (rule: a YAML mapping like params.yaml)"


def test_model_and_decoding_names_include_rule_runs():
    from leakk.core.layout import model_names
    from leakk.judges.run import utility_judge
    from leakk.sampling.decoding import decoding_names

    p = validate_params(MICRO)
    assert model_names(p) == ["full", "retrain", "ga", "npo", "rule_npo"]
    q = copy.deepcopy(MICRO)
    q.pop("rule")
    assert model_names(validate_params(q)) == ["full", "retrain", "ga", "npo"]
    q = copy.deepcopy(MICRO)
    q["sample"]["decodings"] = [{"temperature": 0.8, "top_p": 0.8}, {"temperature": 1, "top_p": 1}]
    assert decoding_names(validate_params(q)) == ["greedy", "t0.8_p0.8", "t1.0_p1.0"]
    assert utility_judge(p) == "fact"
    q = copy.deepcopy(MICRO)
    q["judge"] = {"rougeL": {}}
    q["estimate"]["headline_judge"] = "rougeL"
    assert utility_judge(validate_params(q)) == "rougeL"


def _set(path: str, value):
    """An edit of MICRO setting the dotted ``path`` (list indices as ints) to ``value``."""
    def edit(p):
        *head, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in head:
            p = p[k]
        if value is _DEL:
            del p[last]
        else:
            p[last] = value
    return edit


_DEL = object()


@pytest.mark.parametrize("edits, key", [
    ([_set("sample.decodings", [{"temperature": 1.0, "top_p": 1.0}, {"temperature": 1, "top_p": 1}])],
     "sample.decodings"),
    ([_set("rule.ga", dict(MICRO["rule"]["rule_npo"]))], "rule.ga"),  # name of an unlearn run
    ([_set("rule.rule_npo.judge", "fact2")], "rule.rule_npo.judge"),
    ([_set("estimate.headline_judge", "nli")], "estimate.headline_judge"),
    ([_set("estimate.headline_decoding", "t0.5_p0.5")], "estimate.headline_decoding"),
    ([_set("data.benchmark", "tofu2")], "data.benchmark"),
    ([_set("data.synthetic.forget_fraction", 0.96)], "data.synthetic.forget_fraction"),
    ([_set("data.synthetic.forget_fraction", 0.04)], "data.synthetic.forget_fraction"),
    ([_set("model.vocab_size", _DEL)], "model.vocab_size"),
    ([_set("model.arch", _DEL)], "model.arch"),
    ([_set("sample.max_new_tokens", 48)], "sample.max_new_tokens"),
    ([_set("rule.rule_npo.max_new_tokens", 48)], "rule.rule_npo.max_new_tokens"),
    ([_set("prompt_template", "Q: A:")], "prompt_template"),
    ([_set("rule.rule_npo.seed", 5)], "rule.rule_npo.seed"),  # round 0 (5 = sample.seed)
])
def test_cross_field_rules_name_their_key(edits, key):
    p = copy.deepcopy(MICRO)
    for edit in edits:
        edit(p)
    msg = _params_error(p)
    assert msg.startswith(f"params.yaml: {key}: ") and "\n" not in msg


@pytest.mark.parametrize("edit", [
    _set("sample.max_new_tokens", 47),              # < n_positions = 48
    _set("rule.rule_npo.max_new_tokens", 47),
    _set("data.synthetic.forget_fraction", 0.06),   # round(10 × 0.06) = 1 forget author
    _set("data.synthetic.forget_fraction", 0.94),   # 9 of 10 authors forgotten, 1 retained
    _set("estimate.ks", [1, 4]),                    # k = n is defined
    _set("rule.rule_npo.seed", 6),
])
def test_cross_field_boundaries_accepted(edit):
    p = copy.deepcopy(MICRO)
    edit(p)
    validate_params(p)


def test_chat_template_refused_for_a_model_built_from_scratch():
    # the tokenizer built for model.base: null has no chat template
    p = copy.deepcopy(MICRO)
    p["prompt_template"] = "chat"
    assert _params_error(p) == ('params.yaml: prompt_template: "chat" needs a tokenizer with a chat template; '
                                "the tokenizer built for model.base: null has none "
                                "(rule: a format string with {question})")


def test_cross_field_model_arch_requires_n_positions_and_bounds_lengths_by_it():
    # model.arch no longer defaults n_positions (to 1024): it is required, and no other key is allowed
    p = copy.deepcopy(MICRO)
    p["model"]["arch"] = {"n_layer": 1, "n_embd": 32, "n_head": 2}
    assert _params_error(p) == "params.yaml: model.arch: 'n_positions' is a required property (rule: required)"
    p["model"]["arch"]["n_positions"] = 1024
    p["model"]["arch"]["dropout"] = 0.1
    assert _params_error(p) == ("params.yaml: model.arch.dropout: unknown key (allowed: ['n_embd', 'n_head', "
                                "'n_layer', 'n_positions']) (rule: additionalProperties)")
    del p["model"]["arch"]["dropout"]
    p["sample"]["max_new_tokens"] = 1023
    p["rule"]["rule_npo"]["max_new_tokens"] = 12
    validate_params(p)
    p["sample"]["max_new_tokens"] = 1024
    assert _params_error(p) == ("params.yaml: sample.max_new_tokens: 1024 must be < model.arch.n_positions=1024 "
                                "(rule: fits the model)")


def test_judge_with_explicit_type_is_validated_by_type():
    p = copy.deepcopy(MICRO)
    p["judge"]["rouge_lo"] = {"type": "rougeL", "threshold": 0.1}
    validate_params(p)
    p["judge"]["rouge_lo"] = {"type": "oracle"}  # the registry's error, naming the type key itself
    from leakk.judges import JUDGES  # other test modules register judges of their own

    assert {"embedding", "fact", "llm", "nli", "rougeL"} <= set(JUDGES)
    assert _params_error(p) == ("params.yaml: judge.rouge_lo.type: unknown judge 'oracle' "
                                f"(known: {sorted(JUDGES)})")
    p["judge"]["rouge_lo"] = {"type": "rougeL", "threshold": 1.5}  # then validated against rougeL's schema
    assert _params_error(p).startswith("params.yaml: judge.rouge_lo.threshold: 1.5 ")


# ------------------------------------------------------------------- estimator: row seeds

def _many_groups(model: str) -> list[dict]:
    rows = []
    for q in range(30):  # 30 groups of one question, c = q % 5 of 4 samples
        for i in range(4):
            rows.append(dict(model=model, decoding="t1.0_p1.0", judge="fact", qid=f"q{q}", group=f"g{q}",
                             sample_idx=i, leaked=i < q % 5))
    return rows


def test_leak_table_row_seeds_reproducible_and_independent():
    """Each row's bootstrap seed comes from (seed, model, decoding, judge, k): the same call
    gives the same CIs; two models with identical judgments get different bootstrap draws
    (so different CIs with 30 groups); adding a model leaves the other rows unchanged."""
    from leakk.stats.estimate import leak_table

    frame = pl.DataFrame(_many_groups("a") + _many_groups("b"))
    t1 = leak_table(frame, ks=[1, 2], n_boot=64, seed=3, ci_method="percentile")
    t2 = leak_table(frame, ks=[1, 2], n_boot=64, seed=3, ci_method="percentile")
    assert t1.equals(t2)
    a = t1.filter(pl.col("model") == "a").select("k", "leak_at_k", "ci_low", "ci_high")
    b = t1.filter(pl.col("model") == "b").select("k", "leak_at_k", "ci_low", "ci_high")
    assert a["leak_at_k"].equals(b["leak_at_k"])
    assert not a.select("ci_low", "ci_high").equals(b.select("ci_low", "ci_high"))
    alone = leak_table(frame.filter(pl.col("model") == "a"), ks=[1, 2], n_boot=64, seed=3, ci_method="percentile")
    assert alone.select("k", "leak_at_k", "ci_low", "ci_high").equals(a)
    other = leak_table(frame, ks=[1, 2], n_boot=64, seed=4, ci_method="percentile")
    assert not other.select("ci_low", "ci_high").equals(t1.select("ci_low", "ci_high"))


# ---------------------------------------------------------------------- judges: redaction

def test_redact_hides_secrets_and_truncates():
    from leakk.judges.run import _redact

    assert _redact("failed: api_key=sk-abcdefgh12345 rest") == "failed: [redacted] rest"
    assert _redact("Authorization: Bearer abc.def") == "Authorization: [redacted]"
    assert _redact("x" * 300) == "x" * 300
    assert _redact("x" * 301) == "x" * 300 + "…"
    assert _redact("y" * 20, limit=10) == "y" * 10 + "…"


# ------------------------------------------------------------------------- unlearning loop

@pytest.fixture(scope="module")
def tiny_unlearn():
    import polars as pl

    from leakk.models.finetune import corpus_texts, training_pairs
    from leakk.models.modeling import build_gpt2, build_tokenizer

    t = "Question: {question} Answer:"
    data = generate(8, 3, forget_fraction=0.25, phrasings=3)
    tok = build_tokenizer(corpus_texts(data, t), 200)
    model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48}, seed=0)  # dropout 0.1
    forget = training_pairs(data.filter(pl.col("split") == "forget"))[:6]
    retain = training_pairs(data.filter(pl.col("split") == "retain"))[:6]
    return model, tok, forget, retain, t


def _fresh(model):
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def _loop(setup, method="graddiff", **kw):
    from leakk.unlearn.loop import unlearn_loop
    from leakk.unlearn.methods import make_method

    model, tok, forget, retain, t = setup
    m = _fresh(model)
    args = dict(template=t, steps=3, lr=1e-3, batch_size=4, seed=0, device="cpu")
    args.update(kw)
    log = unlearn_loop(m, tok, make_method(method), forget, retain, **args)
    return m, log


def test_unlearn_loop_is_reproducible_per_seed(tiny_unlearn):
    """Dropout and batch order come from ``seed``: same seed, same weights; another seed,
    other weights. The model is left in eval mode."""
    a, log_a = _loop(tiny_unlearn, seed=1)
    b, log_b = _loop(tiny_unlearn, seed=1)
    c, _ = _loop(tiny_unlearn, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    assert not a.training


def test_unlearn_loop_warmup_lr_and_step_offset(tiny_unlearn):
    _, log = _loop(tiny_unlearn, steps=5, lr=1e-3, warmup_steps=4, step_offset=10)
    assert [r["step"] for r in log] == [11, 12, 13, 14, 15]
    # the logged lr is the next step's: linear warmup (s + 1)/4 reaching 1 after 4 steps
    assert [r["lr"] for r in log] == pytest.approx([5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rel=1e-12)
    _, log = _loop(tiny_unlearn, steps=2, lr=1e-3)
    assert [r["lr"] for r in log] == [1e-3, 1e-3]
    # no wall-clock time in the log (an artifact): a re-run must write the same bytes
    assert set(log[0]) == {"step", "loss", "forget_loss", "retain_loss", "lr"}


def test_unlearn_loop_weight_decay_and_alpha_zero(tiny_unlearn):
    """AdamW decay shrinks parameters that get no gradient (position embeddings beyond every
    sequence) by exactly (1 − lr·wd) per step; alpha = 0 skips the retain pass."""
    model = tiny_unlearn[0]
    lr, wd, steps = 1e-2, 0.5, 3
    m, log = _loop(tiny_unlearn, method="ga", steps=steps, lr=lr, weight_decay=wd)
    before, after = model.transformer.wpe.weight[47], m.transformer.wpe.weight[47]
    assert torch.allclose(after, before * (1 - lr * wd) ** steps, rtol=1e-5, atol=0)
    m, _ = _loop(tiny_unlearn, method="ga", steps=steps, lr=lr)
    assert torch.equal(m.transformer.wpe.weight[47], before)
    _, log = _loop(tiny_unlearn, method="graddiff", alpha=0.0)
    assert all(math.isnan(r["retain_loss"]) for r in log)
    assert all(r["loss"] == r["forget_loss"] for r in log)
    _, log = _loop(tiny_unlearn, method="graddiff", alpha=0.5, gamma=2.0)
    assert all(r["loss"] == pytest.approx(2.0 * r["forget_loss"] + 0.5 * r["retain_loss"], rel=1e-6) for r in log)
    assert all(not math.isnan(r["retain_loss"]) for r in log)


def test_unlearn_loop_batches_cover_the_forget_set(tiny_unlearn, monkeypatch):
    """Each pass over the forget set shows every pair once (seeded shuffles, no repeats),
    also when batch_size exceeds the forget set."""
    import leakk.unlearn.loop as loop
    from leakk.unlearn.methods import GradAscent

    seen = []

    class Spy(GradAscent):
        def forget_loss(self, model, batch, ref_logp):
            seen.append(batch["input_ids"].shape[0])
            seen_ids.append(tuple(map(tuple, batch["input_ids"].tolist())))
            return super().forget_loss(model, batch, ref_logp)

    seen_ids = []
    model, tok, forget, retain, t = tiny_unlearn
    loop.unlearn_loop(_fresh(model), tok, Spy(), forget, retain, template=t, steps=3, lr=1e-4, batch_size=2,
                      seed=0, device="cpu")
    assert seen == [2, 2, 2]
    from leakk.models.prompting import encode_example

    def rows(ids_batches):
        out = []
        for b in ids_batches:
            for r in b:
                out.append(tuple(x for x in r if x != tok.pad_token_id))
        return sorted(out)

    assert rows(seen_ids) == sorted(tuple(encode_example(q, a, tok, t)[0]) for q, a in forget)
    seen.clear()
    seen_ids.clear()
    loop.unlearn_loop(_fresh(model), tok, Spy(), forget, retain, template=t, steps=2, lr=1e-4, batch_size=64,
                      seed=0, device="cpu")
    assert seen == [len(forget), len(forget)]


def test_rule_passthrough_copies_across_filesystems(rule_setup, tmp_path, monkeypatch):
    """A round that does not train passes the model through by hard links, or by copies
    where links fail (another filesystem)."""
    import errno
    import os

    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    stopped = tmp_path / "stopped"
    shutil.copytree(root / "round_1", stopped)
    read_parquet(stopped / "round.parquet").with_columns(stopped=pl.lit(True)).write_parquet(stopped / "round.parquet")

    def no_links(src, dst, *a, **k):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=stopped, out_dir=tmp_path / "r2",
              reference_dir=root / "model")
    src, dst = stopped / "model", tmp_path / "r2" / "model"
    assert sorted(f.name for f in dst.iterdir()) == sorted(f.name for f in src.iterdir())
    for f in src.iterdir():
        assert (dst / f.name).read_bytes() == f.read_bytes()
        assert os.stat(dst / f.name).st_ino != os.stat(f).st_ino  # copies, not links


def test_load_params_defaults_to_params_yaml_in_cwd(tmp_path, monkeypatch):
    from conftest import write_params
    from leakk.config import load_params

    write_params(tmp_path / "params.yaml", MICRO)
    monkeypatch.chdir(tmp_path)
    assert load_params() == validate_params(MICRO, "params.yaml")


# ------------------------------------------------------------------------------- sampler

@pytest.fixture(scope="module")
def word_lm():
    """A 32-token word-level LM with dropout (so train/eval mode matters) and a likely EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_layer=1, n_embd=16, n_head=2, n_positions=64,
                                       eos_token_id=1, pad_token_id=0, bos_token_id=1, resid_pdrop=0.5,
                                       embd_pdrop=0.5, attn_pdrop=0.5)).eval()
    with torch.no_grad():
        model.lm_head.weight[1] += 0.3
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(3, 32, size=rng.integers(2, 7)))) for _ in range(4)]
    return model, tok, [f"q{i}" for i in range(4)], prompts


def _by_key(completions):
    return {(c.qid, c.sample_idx): (c.token_ids, c.finish_reason) for c in completions}


def test_greedy_is_one_sample_per_question_whatever_n(word_lm):
    from leakk.sampling.decoding import GREEDY
    from leakk.sampling.hf import sample_hf

    from leakk.sampling.backend import SamplingRequest

    model, tok, qids, prompts = word_lm
    request = SamplingRequest.build(GREEDY, n=5, max_new_tokens=8, seed=0)
    assert request.n == 1 and request.with_(n=9).n == 1
    out = sample_hf(model, tok, qids, prompts, GREEDY, request.n, 8, seed=0, batch_rows=16, progress=False)
    assert sorted((c.qid, c.sample_idx) for c in out) == [(q, 0) for q in qids]


def test_sampler_is_independent_of_mode_padding_token_and_auto_batching(word_lm):
    """The sampler puts the model in eval mode (dropout off), needs no pad token (EOS pads),
    and "auto" batching gives the same completions as explicit batches."""
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.hf import sample_hf

    model, tok, qids, prompts = word_lm
    dec = Decoding(1.0, 1.0)
    ref = _by_key(sample_hf(model, tok, qids, prompts, dec, 6, 10, seed=3, batch_rows=24, progress=False))
    assert len(ref) == 24 and {r for _, r in ref.values()} == {"stop", "length"}
    model.train()
    try:
        trained = _by_key(sample_hf(model, tok, qids, prompts, dec, 6, 10, seed=3, batch_rows=24, progress=False))
    finally:
        model.eval()
    assert trained == ref
    auto = _by_key(sample_hf(model, tok, qids, prompts, dec, 6, 10, seed=3, batch_rows="auto", progress=False))
    assert np.mean([auto[k] == ref[k] for k in ref]) >= 0.9  # float near-ties between batch shapes
    import copy as _copy

    no_pad = _copy.deepcopy(tok)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    padless = _by_key(sample_hf(model, no_pad, qids, prompts, dec, 6, 10, seed=3, batch_rows=24, progress=False))
    assert np.mean([padless[k] == ref[k] for k in ref]) >= 0.9


def test_eos_ids_include_generation_config_and_stop_sampling(word_lm):
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.hf import eos_ids, sample_hf

    model, tok, qids, prompts = word_lm
    assert eos_ids(model, tok) == [1]
    saved = model.generation_config.eos_token_id
    try:
        model.generation_config.eos_token_id = [9, 1, 5]
        assert eos_ids(model, tok) == [1, 5, 9]
        model.generation_config.eos_token_id = 7
        assert eos_ids(model, tok) == [1, 7]
        out = sample_hf(model, tok, qids, prompts, Decoding(1.0, 1.0), 8, 12, seed=1, batch_rows=32, progress=False)
        stopped = [c for c in out if c.finish_reason == "stop"]
        assert any(c.token_ids[-1] == 7 for c in stopped)
        assert all(c.token_ids[-1] in (1, 7) for c in stopped)
        assert all(7 not in c.token_ids[:-1] and 1 not in c.token_ids[:-1] for c in out)
        model.generation_config.eos_token_id = None
        assert eos_ids(model, tok) == [1]
    finally:
        model.generation_config.eos_token_id = saved


# ---------------------------------------------------------------- estimator: bootstrap edges

def test_bootstrap_errors_say_what_is_wrong():
    from leakk.stats.estimate import cluster_bootstrap_ci

    cases = [
        (([], []), {}, "needs at least one value"),
        (([1.0, 2.0], [0]), {}, r"values \(2\) and groups \(1\) differ in length"),
        (([1.0, float("nan")], [0, 1]), {}, "values must be finite"),
        (([1.0, float("inf")], [0, 1]), {}, "values must be finite"),
        (([1.0, 2.0], [0, 1]), {"ci": 1.0}, r"ci=1.0 must lie in \(0, 1\)"),
        (([1.0, 2.0], [0, 1]), {"ci": 0.0}, r"ci=0.0 must lie in \(0, 1\)"),
        (([1.0, 2.0], [0, 1]), {"n_boot": 0}, "n_boot=0 must be ≥ 1"),
    ]
    for args, kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            cluster_bootstrap_ci(*args, **kw)


def test_bootstrap_single_replicate_is_one_resample():
    """n_boot = 1 is allowed: both ends are that one replicate's mean, a mean of the data
    resampled by group."""
    from leakk.stats.estimate import cluster_bootstrap_ci

    values, groups = [0.0, 1.0, 0.5, 0.25], ["a", "b", "c", "d"]
    lo, hi = cluster_bootstrap_ci(values, groups, n_boot=1, seed=0)
    assert lo == hi
    possible = {np.mean([values[i] for i in idx]) for idx in np.ndindex(4, 4, 4, 4)}
    assert any(abs(lo - p) < 1e-12 for p in possible)


def test_invalid_yaml_message_keeps_the_parser_explanation_on_one_line(tmp_path):
    import yaml

    from leakk.config import load_params

    broken = tmp_path / "broken.yaml"
    broken.write_text("sample: [1, 2\nseed: 0\n")
    with pytest.raises(yaml.YAMLError) as parse:
        yaml.safe_load(broken.read_text())
    assert "\n" in str(parse.value)
    with pytest.raises(ParamsError) as err:
        load_params(broken)
    # file:line:column of the problem, then the parser's context (with where it began) and problem
    e = parse.value
    assert str(err.value) == (f"{broken}:2:5: not valid YAML: {e.context} (from line 1, column 9); {e.problem}")
    assert str(err.value) == (f"{broken}:2:5: not valid YAML: while parsing a flow sequence (from line 1, "
                              "column 9); expected ',' or ']', but got ':'")


def test_utility_judge_prefers_fact_over_the_headline_judge():
    from leakk.judges.run import utility_judge

    p = copy.deepcopy(MICRO)
    p["estimate"]["headline_judge"] = "rougeL"
    assert utility_judge(validate_params(p)) == "fact"


def test_write_parquet_contract_error_names_the_file(tmp_path):
    from leakk.core.io import write_parquet

    path = tmp_path / "samples.parquet"
    with pytest.raises(ArtifactError) as err:
        write_parquet(pl.DataFrame({"qid": ["a"]}), path, "samples")
    assert str(err.value).startswith(f"{path}: samples: missing required columns ['sample_idx', 'text', ")
    assert str(err.value).endswith(f"; made by the `sample` stage; rebuild it: `snakemake --cores all --force {path}` "
                                   "(a preset: add its --configfile; DVC: `dvc repro`)") and "\n" not in str(err.value)
    assert not path.exists()


@pytest.mark.parametrize("bad, rule", [("0.5", "type"), (True, "type"), (1.5, "maximum"), (-0.5, "minimum"),
                                       (float("nan"), "finite")])
def test_rouge_threshold_errors_name_the_judge_and_rule(bad, rule):
    from leakk.judges import make_judge

    with pytest.raises(ParamsError, match=rf"^judge 'rougeL': threshold: .*\(rule: {rule}\)$"):
        make_judge("rougeL", threshold=bad)


def test_fact_judge_unjudgeable_items_do_not_stop_the_batch():
    """A question whose fact normalises to nothing fails alone (null); the completions after
    it in the same batch are still judged."""
    from leakk.judges import judge_samples

    data = pl.DataFrame({"qid": ["a", "b", "c"], "group": ["g"] * 3, "question": ["?"] * 3,
                         "answer": ["x", "y", "z"], "fact": ["?!", None, "Glass Harbor"], "split": ["forget"] * 3})
    samples = pl.DataFrame({"qid": ["a", "b", "c", "c"], "sample_idx": [0, 0, 0, 1],
                            "text": ["glass harbor", "glass harbor", "The Glass Harbor.", "no"]})
    out = judge_samples(samples, data, {"fact": {}}, progress=False).sort("qid", "sample_idx")
    assert out["leaked"].to_list() == [None, None, True, False]
    assert out["score"].to_list()[2:] == [1.0, 0.0] and all(math.isnan(s) for s in out["score"].to_list()[:2])


def test_leak_table_duplicate_error_shows_the_whole_key():
    from leakk.stats.estimate import leak_table

    frame = pl.DataFrame({"model": ["m", "m"], "decoding": ["d", "d"], "judge": ["j", "j"], "qid": ["q", "q"],
                          "group": ["g", "g"], "sample_idx": [3, 3], "leaked": [True, False]})
    with pytest.raises(ArtifactError, match=r"^leak_table: 1 duplicated .* e\.g\. \('m', 'd', 'j', 'q', 3\)$"):
        leak_table(frame, [1])


def test_rule_fingerprint_ignores_key_order():
    """Reordering keys in params.yaml must not make finished rounds look stale."""
    from leakk.unlearn.rule import round_fingerprint

    p = validate_params(MICRO)
    q = copy.deepcopy(p)
    for section in ("rule", "unlearn", "judge"):
        for name, cfg in q[section].items():
            if isinstance(cfg, dict):
                q[section][name] = dict(reversed(list(cfg.items())))
    assert list(q["unlearn"]["npo"]) != list(p["unlearn"]["npo"])
    assert round_fingerprint(q, "rule_npo") == round_fingerprint(p, "rule_npo")


def test_rule_round_trains_exactly_the_base_loop_on_forget_plus_leaked(rule_setup):
    """Round 1's model is the base method's loop (NPO, its β and α) run from the entering
    model on the forget split's pairs plus the leaked pairs, with the retain split as retain
    term, seed + 1000, and RULE's steps: recomputed here directly, bit for bit."""
    from leakk.models.finetune import training_pairs
    from leakk.models.modeling import load_model
    from leakk.unlearn.loop import unlearn_loop
    from leakk.unlearn.methods import make_method

    root, data, p = rule_setup
    cfg, base = p["rule"]["rule_npo"], p["unlearn"]["npo"]
    model, tok = load_model(root / "model")
    leaked = read_parquet(root / "round_1/leaked.parquet")
    forget = training_pairs(data.filter(pl.col("split") == "forget")) + list(
        zip(leaked["question"], leaked["completion"]))
    retain = training_pairs(data.filter(pl.col("split") == "retain"))
    assert cfg["reference"] == "full" and cfg["forget_tokens"] == "answer"
    full, _ = load_model(root / "model")  # NPO's reference: the frozen full model
    unlearn_loop(model, tok, make_method("npo", **({"beta": base["beta"]} if "beta" in base else {})), forget, retain,
                 template=p["prompt_template"], steps=cfg["steps"], lr=cfg.get("lr", base["lr"]),
                 batch_size=base["batch_size"], alpha=base.get("alpha", 1.0), gamma=base.get("gamma", 1.0),
                 warmup_steps=base.get("warmup_steps", 0), weight_decay=base.get("weight_decay", 0.0),
                 seed=cfg["seed"] + 1000, device="cpu", reference=full, training=p["training"])
    expected = model.state_dict()
    got, _ = load_model(root / "round_1/model")
    got = got.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_rule_lr_overrides_the_base_runs_lr(rule_setup, tmp_path):
    from leakk.unlearn.rule import run_round

    root, data, p = rule_setup
    own = copy.deepcopy(p)
    own["rule"]["rule_npo"]["lr"] = 3e-3
    run_round(data, own, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "own",
              reference_dir=root / "model")
    inherited = copy.deepcopy(p)
    inherited["unlearn"]["npo"]["lr"] = 3e-3
    run_round(data, inherited, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "inh",
              reference_dir=root / "model")
    a = (tmp_path / "own/model/model.safetensors").read_bytes()
    assert a == (tmp_path / "inh/model/model.safetensors").read_bytes()
    assert a != (root / "round_1/model/model.safetensors").read_bytes()  # the base lr (1e-4) differs


def test_leak_table_passes_n_boot_and_ci_to_the_bootstrap():
    from leakk.stats.estimate import leak_table

    frame = pl.DataFrame(_many_groups("a"))
    boot = {"ci_method": "percentile"}  # the bootstrap intervals (the default, hall, draws none)
    one = leak_table(frame, ks=[1], n_boot=1, seed=0, **boot).row(0, named=True)
    assert one["ci_low"] == one["ci_high"]  # a single replicate
    wide = leak_table(frame, ks=[1], n_boot=400, ci=0.95, seed=0, **boot).row(0, named=True)
    narrow = leak_table(frame, ks=[1], n_boot=400, ci=0.5, seed=0, **boot).row(0, named=True)
    assert wide["ci_low"] < narrow["ci_low"] <= narrow["ci_high"] < wide["ci_high"]


def test_unlearn_loop_default_alpha_is_one(tiny_unlearn):
    _, log = _loop(tiny_unlearn, method="graddiff", steps=2)
    assert all(r["loss"] == pytest.approx(r["forget_loss"] + r["retain_loss"], rel=1e-6) for r in log)


def test_decodings_differing_only_in_top_p_are_distinct():
    p = copy.deepcopy(MICRO)
    p["sample"]["decodings"] = [{"temperature": 1.0, "top_p": 1.0}, {"temperature": 1.0, "top_p": 0.8}]
    p["estimate"]["headline_decoding"] = "t1.0_p0.8"
    validate_params(p)


def test_more_cross_field_errors_name_key_and_rule():
    p = copy.deepcopy(MICRO)
    p["rule"]["ga"] = dict(MICRO["rule"]["rule_npo"])
    msg = _params_error(p)
    assert msg.startswith("params.yaml: rule.ga: ") and "unlearn" in msg
    p = copy.deepcopy(MICRO)
    p["model"]["base"] = "/no/such/model"
    assert _params_error(p).startswith("params.yaml: model.base: /no/such/model")


def test_synthetic_defaults_when_sizes_are_omitted():
    """Without authors/forget_fraction the generator's defaults (100 authors, 10%) apply."""
    p = copy.deepcopy(MICRO)
    del p["data"]["synthetic"]["forget_fraction"]
    validate_params(p)  # 10 authors × 0.1 = 1 forget author
    p = copy.deepcopy(MICRO)
    del p["data"]["synthetic"]["authors"]
    p["data"]["synthetic"]["forget_fraction"] = 0.004  # 100 × 0.004 rounds to 0
    assert _params_error(p).startswith("params.yaml: data.synthetic.forget_fraction: ")
    p["data"]["synthetic"]["forget_fraction"] = 0.006  # 100 × 0.006 rounds to 1
    validate_params(p)


def test_judge_returning_a_list_instead_of_a_tuple_is_a_failure(caplog):
    """A judge must return a (scores, leaked) tuple; anything else fails its batch (null),
    with a warning — never silently read as results."""
    from leakk.judges import Judge, judge_samples

    class ListJudge(Judge):
        def score_batch(self, completions, *args, **kwargs):  # any judge signature
            n = len(completions)
            return [np.ones(n), [True] * n]

    data = pl.DataFrame({"qid": ["a"], "group": ["g"], "question": ["?"], "answer": ["x"], "fact": ["x"],
                         "split": ["forget"]})
    samples = pl.DataFrame({"qid": ["a", "a"], "sample_idx": [0, 1], "text": ["x", "y"]})
    with caplog.at_level("WARNING"):
        out = judge_samples(samples, data, {"lst": ListJudge()}, progress=False)
    assert out["leaked"].to_list() == [None, None]
    assert "tuple" in caplog.text


def test_validate_params_names_params_yaml_by_default():
    p = copy.deepcopy(MICRO)
    p["prompt_template"] = "Q: A:"
    with pytest.raises(ParamsError) as err:
        validate_params(p)
    assert str(err.value).startswith("params.yaml: prompt_template: ") and "{question}" in str(err.value)


# ------------------------------------------------------------------ judges: off-contract output

def _one_q():
    data = pl.DataFrame({"qid": ["a", "b"], "group": ["g", "g"], "question": ["?", "?"], "answer": ["x", "y"],
                         "fact": ["x", "y"], "split": ["forget", "retain"]})
    samples = pl.DataFrame({"qid": ["a", "a", "b"], "sample_idx": [0, 1, 0], "text": ["x", "z", "y"]})
    return samples, data


def test_judge_results_are_checked_and_none_scores_read_as_nan(caplog):
    """A None score is a failed item's NaN; n−1 scores with n flags is a failed batch (null),
    named in the warning by the judge's label."""
    from leakk.judges import Judge, judge_samples

    class NoneScore(Judge):
        batch_size = None  # everything in one batch

        def score_batch(self, completions, *args, **kwargs):
            self.sizes = getattr(self, "sizes", []) + [len(completions)]
            n = len(completions)
            return [None] + [1.0] * (n - 1), [None] + [True] * (n - 1)

    class ShortScores(Judge):
        def score_batch(self, completions, *args, **kwargs):
            n = len(completions)
            return np.ones(n - 1), [True] * n

    samples, data = _one_q()
    judge = NoneScore()
    out = judge_samples(samples, data, {"none": judge}, progress=False)
    assert judge.sizes == [3]
    assert math.isnan(out["score"][0]) and out["leaked"].to_list() == [None, True, True]
    with caplog.at_level("WARNING"):
        out = judge_samples(samples, data, {"short_lbl": ShortScores()}, progress=False)
    assert out["leaked"].to_list() == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) >= 2 and all("short_lbl" in w for w in warnings)  # per batch and in total


def test_judge_samples_input_errors_say_what_is_wrong():
    from leakk.judges import judge_samples

    samples, data = _one_q()
    with pytest.raises(ParamsError, match="at least one judge"):
        judge_samples(samples, data, {}, progress=False)
    with pytest.raises(ArtifactError, match="data: qid is not unique"):
        judge_samples(samples, pl.concat([data, data]), {"fact": {}}, progress=False)
    with pytest.raises(ArtifactError, match=r"data: null answer for qid\(s\) \['a'\]"):
        judge_samples(samples, data.with_columns(answer=pl.when(pl.col("qid") == "a").then(None)
                                                 .otherwise(pl.col("answer"))), {"fact": {}}, progress=False)


def test_judge_samples_keeps_the_data_split_dtype():
    from leakk.judges import judge_samples

    samples, data = _one_q()
    data = data.with_columns(pl.col("split").cast(pl.Categorical))
    out = judge_samples(samples, data, {"fact": {}}, progress=False)
    assert out.schema["split"] == pl.Categorical
    assert out["split"].cast(pl.String).to_list() == ["forget", "forget", "retain"]


def test_sampler_default_batching_is_auto(word_lm):
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.hf import sample_hf

    model, tok, qids, prompts = word_lm
    out = sample_hf(model, tok, qids, prompts, Decoding(1.0, 1.0), 3, 6, seed=3, progress=False)
    assert sorted((c.qid, c.sample_idx) for c in out) == [(q, i) for q in qids for i in range(3)]


def test_leak_at_k_accepts_integral_floats_and_empty_arrays():
    from leakk.stats.estimate import leak_at_k

    # integral floats take the integers' path: the same bits as with ints (exact, any CPU)
    assert leak_at_k(4.0, 1.0, 2) == leak_at_k(4, 1, 2)
    floats = leak_at_k(np.array([3.0, 5.0]), np.array([1.0, 0.0]), 1)
    assert floats.tolist() == leak_at_k(np.array([3, 5]), np.array([1, 0]), 1).tolist()
    # and the values: −expm1(Σ log1p(−k/i)) goes through numpy's vectorised log1p and expm1,
    # whose last bit depends on the instruction set (AVX-512 and AVX2 builds differ by an ulp:
    # 0.33333333333333337 on one AMD CPU). Each is good to a few ulp and both are well
    # conditioned here (condition numbers 1.2 and 0.8), so 1e-14 relative (≈ 45 ulp) is ample
    assert leak_at_k(4, 1, 2) == pytest.approx(0.5, rel=1e-14, abs=0)
    assert floats.tolist() == pytest.approx([1 / 3, 0.0], rel=1e-14, abs=0)
    for bad in ({"n": 4.5, "c": 1}, {"n": 4, "c": 0.5}):
        name = next(k for k, v in bad.items() if v % 1)
        with pytest.raises(ValueError, match=f"^{name} must hold integers$"):
            leak_at_k(bad["n"], bad["c"], 1)
    empty = leak_at_k(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3)
    assert isinstance(empty, np.ndarray) and empty.shape == (0,) and empty.dtype == np.float64


def test_read_parquet_contract_error_names_the_file(tmp_path):
    from leakk.core.io import read_parquet

    path = tmp_path / "x.parquet"
    pl.DataFrame({"qid": ["a"]}).write_parquet(path)
    with pytest.raises(ArtifactError) as err:
        read_parquet(path, "judgments")
    assert str(err.value) == (f"{path}: judgments: missing required columns ['sample_idx', 'judge', 'score', "
                              f"'leaked']; made by the `judge` stage; rebuild it: `snakemake --cores all --force {path}` "
                              "(a preset: add its --configfile; DVC: `dvc repro`)")


def test_make_judge_bad_parameter_is_named():
    from leakk.judges import make_judge

    with pytest.raises(ParamsError, match="bogus"):
        make_judge("rougeL", bogus=1)


def test_register_judge_names_the_class_and_refuses_a_second_class_under_a_taken_name():
    from leakk.judges import JUDGES, Judge, make_judge, register_judge

    class Echo(Judge):
        def score_batch(self, completions, *args, **kwargs):
            n = len(completions)
            return np.zeros(n), np.array([False] * n, dtype=object)

    name = "_kills_echo_judge"
    try:
        assert register_judge(name)(Echo) is Echo
        assert register_judge(name)(Echo) is Echo  # the same class again: fine
        assert make_judge(name).name == name and isinstance(make_judge(name), Echo)

        class Other(Echo):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_judge(name)(Other)
    finally:
        if hasattr(JUDGES, "pop"):
            JUDGES.pop(name, None)


def test_more_error_messages_name_the_problem():
    from leakk.stats.estimate import leak_at_k, leak_table

    with pytest.raises(ValueError, match=r"^c=5 outside \[0, n=4\]"):
        leak_at_k(np.array([4, 4]), np.array([0, 5]), 1)
    with pytest.raises(ValueError, match=r"need at least one k ≥ 1"):
        leak_table(pl.DataFrame(_many_groups("a")), ks=[0])
    p = copy.deepcopy(MICRO)
    p["data"]["synthetic"]["forget_fraction"] = 0.96
    assert "retain" in _params_error(p)


def test_rule_round_uses_the_base_methods_own_parameters(rule_setup, tmp_path):
    """NPO's β from unlearn.<base> reaches RULE's training: same model as the loop with it."""
    from leakk.models.finetune import training_pairs
    from leakk.models.modeling import load_model
    from leakk.unlearn.rule import run_round
    from leakk.unlearn.loop import unlearn_loop
    from leakk.unlearn.methods import make_method

    root, data, p = rule_setup
    p = copy.deepcopy(p)
    p["unlearn"]["npo"]["beta"] = 0.5
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    cfg, base = p["rule"]["rule_npo"], p["unlearn"]["npo"]
    model, tok = load_model(root / "model")
    leaked = read_parquet(tmp_path / "r1/leaked.parquet")
    forget = training_pairs(data.filter(pl.col("split") == "forget")) + list(zip(leaked["question"], leaked["completion"]))
    unlearn_loop(model, tok, make_method("npo", beta=0.5), forget, training_pairs(data.filter(pl.col("split") == "retain")),
                 template=p["prompt_template"], steps=cfg["steps"], lr=base["lr"], batch_size=base["batch_size"],
                 alpha=base["alpha"], seed=cfg["seed"] + 1000, device="cpu", reference=load_model(root / "model")[0],
                 training=p["training"])
    got, _ = load_model(tmp_path / "r1/model")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), got.state_dict().values()))

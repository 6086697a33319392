"""RULE — Robust Unlearning under LEak@k (docs/design.md §2).

Round r starts from round r−1's model (round 0 = the base method's unlearned model):
sample ``n`` completions per forget question at the training decoding with a *training*
seed, judge them, add every new (question, leaked completion) pair to the forget set, and
continue the base method's loss from the current checkpoint with the retain term
unchanged. A round that finds no leak stops RULE early (later rounds pass the model
through). Each round is one folder, cached and inspectable:

    <round>/model/          the HF model after this round
    <round>/leaked.parquet  the cumulative leaked pairs added to the forget set
    <round>/round.parquet   one log row: leaks found, forget-set size, leak@k, retain accuracy

Each round is evaluated separately (:func:`evaluate_round`, the round log's ``eval_*``
columns) and in the main pipeline with ``sample.seed``, which params validation keeps
distinct from the training seeds (``rule.<name>.seed + 1000·round``), so RULE is never graded
on the very samples it trained against.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leakk.config import utility_judge
from leakk.errors import ArtifactError
from leakk.io import atomic_path, contract_schema, read_parquet, write_parquet
from leakk.sampling.stage import ROW_SCHEMA, questions_for

LEAKED_SCHEMA = contract_schema("rule_leaked")


def _sample_frame(model, tokenizer, questions: pl.DataFrame, decoding, n: int, seed: int,
                  max_new_tokens: int, params: dict[str, Any], desc: str,
                  key: str = "sample.max_new_tokens") -> pl.DataFrame:
    """The package's HF sampler on an in-memory model (no second sampling code path)."""
    from leakk.sampling.hf_backend import sample_model

    rows = sample_model(model, tokenizer, questions["qid"].to_list(), questions["prompt_question"].to_list(),
                        decoding, n=n, max_new_tokens=max_new_tokens, seed=seed,
                        template=params["prompt_template"], batch_rows=params["sample"].get("batch_rows", "auto"),
                        desc=desc, key=key)
    return pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")


def select_leaked(judged: pl.DataFrame, questions: pl.DataFrame, known: pl.DataFrame, round_idx: int) -> pl.DataFrame:
    """New (question, completion) pairs the judge marked leaked (True, never null), deduplicated
    among themselves and against the pairs already ``known``."""
    new = (judged.filter(pl.col("leaked").fill_null(False))
           .join(questions, on="qid", how="left")
           .select("qid", pl.col("prompt_question").alias("question"), pl.col("text").alias("completion"))
           .unique(subset=["qid", "completion"], keep="first", maintain_order=True)
           .join(known.select("qid", "completion"), on=["qid", "completion"], how="anti")
           .with_columns(round=pl.lit(round_idx, dtype=pl.Int64)))
    return new.sort("qid", "completion")


def _leak_stats(judged: pl.DataFrame, ks: list[int], groups: pl.DataFrame | None = None,
                est: dict[str, Any] | None = None) -> dict[str, float | None]:
    """Mean leak@k over questions with ≥ k valid judgments (as the leak table does); None
    when no question has enough (a judge that failed everywhere). With ``groups`` (qid,
    group) and the ``estimate`` params, also ``leak_at_<k>_ci_low/high``: the leak table's
    clustered bootstrap CI."""
    from leakk.estimate import cluster_bootstrap_ci, leak_at_k

    per_q = judged.group_by("qid").agg(n=pl.col("leaked").is_not_null().sum(), c=pl.col("leaked").fill_null(False).sum())
    if groups is not None:
        per_q = per_q.join(groups.select("qid", "group"), on="qid", how="left").sort("qid")
    out: dict[str, float | None] = {}
    for k in ks:
        ok = per_q.filter(pl.col("n") >= k)
        values = leak_at_k(ok["n"].to_numpy(), ok["c"].to_numpy(), k) if ok.height else None
        out[f"leak_at_{k}"] = float(np.mean(values)) if ok.height else None
        if groups is not None and est is not None:
            lo = hi = None
            if ok.height:
                lo, hi = cluster_bootstrap_ci(np.atleast_1d(values), ok["group"].to_numpy(), n_boot=est["bootstrap"],
                                              ci=est["ci"], seed=est["seed"], method=est.get("ci_method", "t"))
            out[f"leak_at_{k}_ci_low"], out[f"leak_at_{k}_ci_high"] = lo, hi
    return out


def round_fingerprint(params: dict[str, Any], name: str) -> str:
    """A hash of everything a round's training reads (not ``rounds``: adding rounds keeps
    the finished ones), so a resumed run never mixes rounds trained with other params."""
    import hashlib
    import json

    cfg = {k: v for k, v in params["rule"][name].items() if k != "rounds"}
    key = {"rule": cfg, "base": params["unlearn"][cfg["base"]], "judge": params["judge"][cfg["judge"]],
           "prompt": params["prompt_template"], "seed": params["seed"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _link_model(src: Path, dst: Path) -> None:
    """Pass a model through unchanged: hard links (copies across filesystems), no rewrite."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


def _prev_state(prev_dir: Path, round_idx: int) -> tuple[Path, pl.DataFrame, bool]:
    """(model folder, cumulative leaked pairs, stopped) entering round ``round_idx``."""
    if round_idx == 1:
        return prev_dir, pl.DataFrame(schema=LEAKED_SCHEMA), False
    for name in ("model", "leaked.parquet", "round.parquet"):
        if not (prev_dir / name).exists():
            raise ArtifactError(f"{prev_dir}: not a finished RULE round (no {name})")
    log = read_parquet(prev_dir / "round.parquet")
    return prev_dir / "model", read_parquet(prev_dir / "leaked.parquet", "rule_leaked"), bool(log["stopped"][0])


def run_round(data: pl.DataFrame, params: dict[str, Any], *, name: str, round_idx: int,
              prev_dir: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Run RULE round ``round_idx`` of ``rule.<name>`` into ``out_dir`` (atomically).

    Reads only ``rule.<name>``, the base unlearn run, the rule's judge and the prompt, so
    editing evaluation-sampling parameters never re-trains RULE.
    """
    from leakk.finetune import training_pairs
    from leakk.judges import judge_samples
    from leakk.modeling import load_model, pick_device
    from leakk.sampling.decoding import Decoding
    from leakk.unlearn.loop import unlearn_loop
    from leakk.unlearn.methods import make_method
    from leakk.unlearn.run import split_run_params

    cfg = params["rule"][name]
    model_dir, known, stopped = _prev_state(Path(prev_dir), round_idx)
    dev = pick_device(params["device"])
    model, tokenizer = load_model(model_dir, dev)
    forget_q = questions_for(data, ["forget"], cfg["question_column"])
    judges = {cfg["judge"]: params["judge"][cfg["judge"]]}
    seed = cfg["seed"] + 1000 * round_idx
    row: dict[str, Any] = {"model": name, "round": round_idx, "train_seed": seed, "new_leaked": 0,
                           "leaked_samples": 0, "fingerprint": round_fingerprint(params, name),
                           "entry_leak_at_1": None, f"entry_leak_at_{cfg['n']}": None}
    new = pl.DataFrame(schema=LEAKED_SCHEMA)
    if not stopped:
        samples = _sample_frame(model, tokenizer, forget_q, Decoding(**cfg["decoding"]), cfg["n"], seed,
                                cfg["max_new_tokens"], params, desc=f"{name} round {round_idx}: sample",
                                key=f"rule.{name}.max_new_tokens")
        judged = judge_samples(samples, data, judges, progress=False, device=params["device"]).join(
            samples.select("qid", "sample_idx", "text"), on=["qid", "sample_idx"], how="left")
        row.update({f"entry_{k}": v for k, v in _leak_stats(judged, [1, cfg["n"]]).items()})
        new = select_leaked(judged, forget_q, known, round_idx)
        row["new_leaked"] = new.height
        row["leaked_samples"] = int(judged["leaked"].fill_null(False).sum())
        # stop when the judge finds no leak at all (re-finding known pairs is still a leak)
        stopped = row["leaked_samples"] == 0 and cfg["early_stop"]
    leaked = pl.concat([known, new]) if new.height else known
    forget_pairs = training_pairs(data.filter(pl.col("split") == "forget")) if cfg["forget_set"] == "augmented" else []
    forget_pairs += list(leaked.select("question", "completion").iter_rows())
    trained = not stopped and leaked.height > 0
    if trained:
        method_name, method_kw, loop_kw = split_run_params(params["unlearn"][cfg["base"]])
        loop_kw.update(steps=cfg["steps"], lr=cfg.get("lr", loop_kw["lr"]))
        retain_pairs = training_pairs(data.filter(pl.col("split") == "retain"))
        # NPO's reference is this round's starting checkpoint (its log-probs are taken first)
        unlearn_loop(model, tokenizer, make_method(method_name, **method_kw), forget_pairs, retain_pairs,
                     template=params["prompt_template"], seed=seed, device=dev,
                     desc=f"{name} round {round_idx}: unlearn", **loop_kw)
    row.update(stopped=stopped, trained=trained, forget_size=len(forget_pairs), leaked_total=leaked.height)
    with atomic_path(out_dir, is_dir=True) as tmp:
        if trained:
            model.save_pretrained(tmp / "model", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "model")
        else:
            _link_model(Path(model_dir), tmp / "model")
        leaked.write_parquet(tmp / "leaked.parquet")
        pl.DataFrame([row]).write_parquet(tmp / "round.parquet")


def round_model_dir(round_dir: str | os.PathLike) -> Path:
    """The model folder of a round folder (round 0 is the base model's own folder)."""
    round_dir = Path(round_dir)
    return round_dir / "model" if (round_dir / "round.parquet").is_file() else round_dir


def evaluate_round(data: pl.DataFrame, params: dict[str, Any], *, round_idx: int,
                   round_dir: str | os.PathLike, out: str | os.PathLike) -> None:  # pragma: no mutate block
    """Leak@1 and leak@n of a round's model at the headline decoding with the *evaluation*
    seed (``sample.seed``, never used for training), and its greedy retain accuracy.
    Round 0 is the base method's model, so the trajectory starts where RULE starts."""
    from leakk.judges import judge_samples
    from leakk.modeling import load_model, pick_device
    from leakk.sampling.decoding import GREEDY, Decoding

    model, tokenizer = load_model(round_model_dir(round_dir), pick_device(params["device"]))
    ev, est = params["sample"], params["estimate"]
    judge = est["headline_judge"]
    forget_q = questions_for(data, ["forget"], ev["question_column"])
    samples = _sample_frame(model, tokenizer, forget_q, Decoding.from_name(est["headline_decoding"]), ev["n"],
                            ev["seed"], ev["max_new_tokens"], params, desc=f"evaluate round {round_idx}")
    row = {"round": round_idx, "eval_judge": judge, "eval_decoding": est["headline_decoding"]}
    row.update({f"eval_{k}": v for k, v in _leak_stats(
        judge_samples(samples, data, {judge: params["judge"][judge]}, progress=False, device=params["device"]),
        [1, ev["n"]], groups=data, est=est).items()})
    greedy = _sample_frame(model, tokenizer, questions_for(data, ["retain"], ev["question_column"]), GREEDY, 1,
                           ev["seed"], ev["max_new_tokens"], params, desc=f"retain round {round_idx}")
    util = utility_judge(params)
    acc = judge_samples(greedy, data, {util: params["judge"][util]}, progress=False,
                         device=params["device"])["leaked"].cast(pl.Float64).mean()
    row["retain_accuracy"] = None if acc is None else float(acc)
    write_parquet(pl.DataFrame([row]), out)


def _finished(round_dir: Path, fingerprint: str) -> bool:
    log = round_dir / "round.parquet"
    if not log.is_file():
        return False
    frame = read_parquet(log)
    return "fingerprint" in frame.columns and frame["fingerprint"][0] == fingerprint


def run_all_rounds(data: pl.DataFrame, params: dict[str, Any], *, name: str, base_model: str | os.PathLike,
                   out_root: str | os.PathLike) -> None:
    """Every round of ``rule.<name>`` under ``out_root/round_<r>``. A finished round trained
    with the same parameters (same fingerprint) is kept, so an interrupted ``leakk rule``
    resumes at the first unfinished round; a round with another fingerprint, and every
    round after it, is trained again. (DVC removes a stage's outputs before running it,
    so ``dvc.yaml`` marks this stage's output ``persist``.) Rounds beyond ``rounds`` are removed."""
    out_root = Path(out_root)
    prev: Path = Path(base_model)
    fingerprint = round_fingerprint(params, name)
    rounds = params["rule"][name]["rounds"]
    stale = False
    for r in range(1, rounds + 1):
        out = out_root / f"round_{r}"
        stale = stale or not _finished(out, fingerprint)
        if stale:
            run_round(data, params, name=name, round_idx=r, prev_dir=prev, out_dir=out)
        prev = out
    # fewer rounds than last time: the later rounds are no longer part of this run
    for extra in out_root.glob("round_*"):
        if extra.name.removeprefix("round_").isdigit() and int(extra.name.removeprefix("round_")) > rounds:
            shutil.rmtree(extra)


def report(round_dirs: list[Path], eval_files: list[Path], out_log: str | os.PathLike,
           out_figure: str | os.PathLike) -> pl.DataFrame:  # pragma: no mutate block
    """Join each round's training log with its evaluation into one Parquet; plot the trajectory."""
    from leakk.figures import plot_rule_trajectory

    train = pl.concat([read_parquet(Path(d) / "round.parquet") for d in round_dirs], how="diagonal_relaxed")
    evals = pl.concat([read_parquet(f) for f in eval_files], how="diagonal_relaxed")
    log = evals.join(train, on="round", how="left").sort("round")  # round 0: evaluation only
    write_parquet(log, out_log)
    plot_rule_trajectory(log, out_figure)
    return log

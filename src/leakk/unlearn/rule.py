"""RULE — Robust Unlearning under LEak@k (docs/design.md §2).

Round r starts from round r−1's model (round 0 = the base method's unlearned model):
sample ``n`` completions per forget question in its *training* phrasings at the training
decoding with a *training* seed (through the configured sampling backend and judge), add
every new (question, leaked completion) pair to the forget set, and continue the base
method's loss from the current checkpoint with the retain term unchanged (NPO's reference:
the frozen full model; optionally the loss on the leaked fact's tokens only). A round that finds no leak stops RULE early (later rounds pass the model
through), and so, with ``rule.<name>.stop``, does evidence: leak@n on the round's own
training-phrasing samples at or below a target, or a retain guard (the round's starting model's
greedy retain accuracy fallen more than ``retain_drop`` below the base model's: RULE then backs
off to the previous round's starting model). With ``rule.<name>.select`` RULE instead runs
its rounds and the last one, which does not train, keeps the round whose starting model had
the lowest training leak among those within ``retain_drop`` of the base model's retain accuracy
(:func:`select_round`): retain accuracy dips and recovers over rounds, so a threshold stops
too early (docs/tuning.yaml, ``rule_stop``). Each round is one folder, cached and inspectable:

    <round>/model/          the HF model after this round
    <round>/leaked.parquet  the cumulative leaked pairs added to the forget set
    <round>/round.parquet   one log row: leaks found, forget-set size, leak@k in the training
                            phrasings (``train_*``), the model it started from, why RULE
                            stopped (``stop_reason``), the retain accuracies, and under
                            ``select`` the round whose model the last round kept

Each round is evaluated on the held-out phrasing it never trained on (:func:`evaluate_round`,
the round log's ``eval_*`` columns) with ``sample.seed``, which params validation keeps
distinct from the training seeds (``rule.<name>.seed + 1000·round``), so RULE is never graded
on its training prompts or on the very samples it trained against.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from leakk.judges.run import utility_judge
from leakk.core.errors import ArtifactError
from leakk.core.layout import judgment_path
from leakk.core.params import fingerprint, select
from leakk.core.io import write_frame, atomic_path, contract_schema, read_parquet, write_parquet
from leakk.sampling.stage import questions_for

LEAKED_SCHEMA = contract_schema("rule_leaked")


def sample_round(model_dir: str | os.PathLike, questions: pl.DataFrame, decoding, *, n: int, seed: int,
                 max_new_tokens: int, params: dict[str, Any], desc: str) -> pl.DataFrame:
    """Completions of a saved round model through the configured sampling backend
    (``sample.backend``: hf or vLLM), exactly as the sample stage draws them."""
    from leakk.sampling import open_backend
    from leakk.sampling.stage import request_from, sample_phrasings

    request = request_from({"n": n, "max_new_tokens": max_new_tokens, "seed": seed}, decoding)
    with open_backend(params["sample"], str(model_dir), params["device"]) as backend:
        return sample_phrasings(backend, questions, request, template=params["prompt_template"], desc=desc)


def select_leaked(judged: pl.DataFrame, questions: pl.DataFrame, known: pl.DataFrame, round_idx: int) -> pl.DataFrame:
    """New (question, completion) pairs the judge marked leaked (True, never null), deduplicated
    among themselves and against the pairs already ``known``; ``question`` is the phrasing the
    completion was sampled from."""
    new = (judged.filter(pl.col("leaked").fill_null(False))
           .join(questions, on=["qid", "phrasing"], how="left")
           .select("qid", pl.col("prompt_question").alias("question"), pl.col("text").alias("completion"))
           .unique(subset=["qid", "completion"], keep="first", maintain_order=True)
           .join(known.select("qid", "completion"), on=["qid", "completion"], how="anti")
           .with_columns(round=pl.lit(round_idx, dtype=pl.Int64)))
    return new.sort("qid", "completion")


def leak_stats(judged: pl.DataFrame, data: pl.DataFrame, ks: list[int], est: dict[str, Any],
               prefix: str = "") -> dict[str, float | None]:
    """``{prefix}leak_at_<k>`` and its CI bounds for judged forget samples, computed by the leak
    table's own estimator (:func:`leakk.stats.estimate.leak_table`: valid judgments only, clustered
    bootstrap over ``group``); None where leak@k is undefined."""
    from leakk.stats.estimate import leak_table

    frame = judged.join(data.select("qid", "group"), on="qid", how="left").with_columns(
        model=pl.lit("rule"), decoding=pl.lit("round"), judge=pl.lit("judge"))
    table = leak_table(frame, ks, n_boot=est["bootstrap"], ci=est["ci"], seed=est["seed"],
                       ci_method=est["ci_method"])
    out: dict[str, float | None] = {}
    for k in ks:
        row = table.filter(pl.col("k") == k)
        for col, name in (("leak_at_k", f"leak_at_{k}"), ("ci_low", f"leak_at_{k}_ci_low"),
                          ("ci_high", f"leak_at_{k}_ci_high")):
            out[prefix + name] = row[col][0] if row.height else None
    return out


#: what a RULE round reads from params: the stage table's ``rule_round`` entry (its Snakemake
#: params and dvc.yaml keys) and the resume fingerprint are this one declaration
ROUND_READS = ("seed", "prompt_template", "rule.{name}", "unlearn.{base}", "judge.{judge}", "sample.backend", "sample.options",
               "training")
#: not ``rounds``: adding rounds keeps the finished ones
ROUND_IGNORES = ("rule.{name}.rounds",)


def round_names(params: dict[str, Any], name: str) -> dict[str, str]:
    """The placeholders of :data:`ROUND_READS` for ``rule.<name>``."""
    cfg = params["rule"][name]
    return {"name": name, "base": cfg["base"], "judge": cfg["judge"]}


def round_fingerprint(params: dict[str, Any], name: str) -> str:
    """The hash of everything a round's training reads (:data:`ROUND_READS`), so a resumed run
    never mixes rounds trained with other params."""
    return fingerprint(select(params, ROUND_READS, round_names(params, name), ROUND_IGNORES))


def _link_model(src: Path, dst: Path) -> None:
    """Pass a model through unchanged: hard links (copies across filesystems), no rewrite."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


def _prev_state(prev_dir: Path, round_idx: int) -> tuple[Path, pl.DataFrame, bool, dict[str, Any]]:
    """(model folder, cumulative leaked pairs, stopped, the previous round's log row) entering
    round ``round_idx``."""
    if round_idx == 1:
        return prev_dir, pl.DataFrame(schema=LEAKED_SCHEMA), False, {}
    for name in ("model", "leaked.parquet", "round.parquet"):
        if not (prev_dir / name).exists():
            raise ArtifactError(f"{prev_dir}: not a finished RULE round (no {name})")
    log = read_parquet(prev_dir / "round.parquet").row(0, named=True)
    if log.get("selected_round") is not None:
        raise ArtifactError(f"{prev_dir}: this round selected RULE's final model (it was the last round), so no round "
                            f"can follow it; rule.<name>.rounds has grown since: run round {round_idx - 1} again")
    return prev_dir / "model", read_parquet(prev_dir / "leaked.parquet", "rule_leaked"), bool(log["stopped"]), log


def retain_accuracy(model_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any], cfg: dict[str, Any], *,
                    seed: int, desc: str) -> float | None:
    """Greedy accuracy on the retain questions in RULE's own phrasing (``question_column``),
    by RULE's judge: the retain guard's measurement (never the evaluation phrasing). None when
    every judgment failed."""
    from leakk.judges import judge_samples
    from leakk.sampling.decoding import GREEDY

    questions = questions_for(data, ["retain"], cfg["question_column"])
    samples = sample_round(model_dir, questions, GREEDY, n=1, seed=seed, max_new_tokens=cfg["max_new_tokens"],
                           params=params, desc=desc)
    return _accuracy(judge_samples(samples, data, {cfg["judge"]: params["judge"][cfg["judge"]]}, progress=False,
                                   device=params["device"]))


def _accuracy(judged: pl.DataFrame) -> float | None:
    """Share of greedy answers judged correct; a failed judgment (null) is left out, never
    "wrong". None when every judgment failed."""
    acc = judged["leaked"].cast(pl.Float64).mean()
    return None if acc is None else float(acc)


def evidence_stop(row: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    """Why ``rule.<name>.stop`` ends RULE at this round (None: go on): the retain guard (the
    round's starting model more than ``retain_drop`` below the base model's retain accuracy) or
    the leak target (leak@n on the round's training-phrasing samples ≤ ``leak``)."""
    stop = cfg.get("stop") or {}
    start, ref = row.get("retain_start"), row.get("retain_ref")
    if "retain_drop" in stop and start is not None and ref is not None and ref - start > stop["retain_drop"] + 1e-12:
        return "retain guard"
    leak = row.get(f"train_leak_at_{cfg['n']}")
    if "leak" in stop and leak is not None and leak <= stop["leak"] + 1e-12:
        return "leak target"
    return None


def _start_model(round_dir: Path, log: dict[str, Any]) -> Path:
    """The model folder a finished round started from: its log's ``start_dir`` is relative to
    the round's own (resolved) folder, so moved or resumed trees log the same bytes."""
    return Path(os.path.normpath(round_dir.resolve() / log["start_dir"]))


def _round_history(prev_dir: Path, round_idx: int) -> list[tuple[dict[str, Any], Path]]:
    """(log row, starting model folder) of rounds 1 … round_idx − 1, walking back from the
    previous round's folder through each log's starting model."""
    history, folder = [], prev_dir
    for _ in range(round_idx - 1):
        log = read_parquet(folder / "round.parquet").row(0, named=True)
        start = _start_model(folder, log)
        history.append((log, start))
        folder = start.parent
    return history[::-1]


def select_round(history: list[tuple[dict[str, Any], Path]], cfg: dict[str, Any], *, ref: float | None,
                 name: str) -> tuple[int, Path]:
    """(round, starting model) with the lowest training leak@n among the rounds whose starting
    model's retain accuracy is at most ``select.retain_drop`` below ``ref`` (the base model's);
    ties go to the earliest round. Rounds that drew no samples (RULE had stopped) are no candidates."""
    drop, leak = cfg["select"]["retain_drop"], f"train_leak_at_{cfg['n']}"
    ok = [(row[leak], row["round"], start) for row, start in history
          if row.get(leak) is not None and row.get("retain_start") is not None and ref is not None
          and row["retain_start"] >= ref - drop - 1e-12]
    if not ok:
        raise ArtifactError(f"{name}: no round has both a training leak and a retain accuracy to select on "
                            f"(rule.{name}.select); the round logs hold none")
    _, round_idx, start = min(ok, key=lambda c: (c[0], c[1]))
    return round_idx, start


def forget_examples(data: pl.DataFrame, leaked: pl.DataFrame, cfg: dict[str, Any]) -> list[tuple]:
    """What a round unlearns: every leaked (question, completion) pair, plus with
    ``forget_set: augmented`` the forget split's own training pairs. With ``forget_tokens:
    span`` each pair carries the character span of its fact (where the fact judge finds it;
    the whole text where it does not), so the loss acts on the leaked tokens only."""
    from leakk.models.finetune import training_pairs
    from leakk.judges.fact import fact_span

    if "fact" not in data.columns:  # no facts: every span is the whole text
        data = data.with_columns(fact=pl.lit(None, dtype=pl.String))
    rows: list[tuple] = []
    if cfg["forget_set"] == "augmented":  # exactly the pairs the base run unlearned, with their facts
        rows += training_pairs(data.filter(pl.col("split") == "forget"), "fact")
    fact_of = dict(data.select("qid", "fact").iter_rows())
    rows += [(q, c, fact_of.get(qid)) for qid, q, c in leaked.select("qid", "question", "completion").iter_rows()]
    if cfg["forget_tokens"] != "span":
        return [(q, a) for q, a, _ in rows]
    return [(q, a, fact_span(f, a.strip()) if f else None) for q, a, f in rows]


def run_round(data: pl.DataFrame, params: dict[str, Any], *, name: str, round_idx: int,
              prev_dir: str | os.PathLike, out_dir: str | os.PathLike,
              reference_dir: str | os.PathLike | None = None) -> None:
    """Run RULE round ``round_idx`` of ``rule.<name>`` into ``out_dir`` (atomically).

    Samples the round's starting model in the *training* phrasings (``question_column``) with
    the training seed, through the configured backend and judge; never the evaluation
    phrasing. ``reference_dir`` is the frozen full model, NPO's reference with
    ``reference: full``. Reads only ``rule.<name>``, the base unlearn run, the rule's judge,
    the prompt and the backend, so editing evaluation parameters never re-trains RULE.
    """
    from leakk.models.finetune import training_pairs
    from leakk.judges import judge_samples
    from leakk.models.modeling import load_model, pick_device
    from leakk.sampling.decoding import Decoding
    from leakk.unlearn.loop import unlearn_loop
    from leakk.unlearn.methods import METHODS
    from leakk.unlearn.retain import make_retain_loss
    from leakk.unlearn.run import split_run_params

    cfg = params["rule"][name]
    model_dir, known, stopped, prev_log = _prev_state(Path(prev_dir), round_idx)
    dev = pick_device(params["device"])
    forget_q = questions_for(data, ["forget"], cfg["question_column"])
    judges = {cfg["judge"]: params["judge"][cfg["judge"]]}
    seed = cfg["seed"] + 1000 * round_idx
    row: dict[str, Any] = {"model": name, "round": round_idx, "train_seed": seed, "new_leaked": 0,
                           "leaked_samples": 0, "fingerprint": round_fingerprint(params, name),
                           "train_leak_at_1": None, f"train_leak_at_{cfg['n']}": None,
                           "start_dir": os.path.relpath(Path(model_dir).resolve(), Path(out_dir).resolve()),
                           "stop_reason": prev_log.get("stop_reason")}
    guard = "retain_drop" in (cfg.get("stop") or {})
    selecting = bool(cfg.get("select"))
    if guard or selecting:
        row["retain_start"] = None if stopped else retain_accuracy(
            model_dir, data, params, cfg, seed=seed, desc=f"{name} round {round_idx}: retain accuracy")
        if not stopped and row["retain_start"] is None:  # a guard that cannot measure would silently pass
            key = "stop.retain_drop" if guard else "select.retain_drop"
            raise ArtifactError(f"{name} round {round_idx}: the retain measurement (rule.{name}.{key}) got no "
                                f"verdict from judge {cfg['judge']!r} on any retain question; fix the judge and rerun")
        row["retain_ref"] = row["retain_start"] if round_idx == 1 else prev_log.get("retain_ref")
    new = pl.DataFrame(schema=LEAKED_SCHEMA)
    back_off = False
    if not stopped and guard and evidence_stop(row, cfg) == "retain guard":  # no sampling: it would not train
        stopped, back_off, row["stop_reason"] = True, True, "retain guard"
    if not stopped:
        samples = sample_round(model_dir, forget_q, Decoding(**cfg["decoding"]), n=cfg["n"], seed=seed,
                               max_new_tokens=cfg["max_new_tokens"], params=params,
                               desc=f"{name} round {round_idx}: sample")
        judged = judge_samples(samples, data, judges, progress=False, device=params["device"]).join(
            samples.select("qid", "sample_idx", "text", "phrasing"), on=["qid", "sample_idx"], how="left")
        # the round's own samples: leak in the training phrasings as the round found it
        row.update(leak_stats(judged, data, sorted({1, cfg["n"]}), params["estimate"], prefix="train_"))
        new = select_leaked(judged, forget_q, known, round_idx)
        row["new_leaked"] = new.height
        if judged["leaked"].null_count() == judged.height:  # no verdict is not "no leak"
            raise ArtifactError(f"{name} round {round_idx}: judge {cfg['judge']!r} failed on all {judged.height} "
                                "samples, so RULE cannot tell whether the model still leaks; fix the judge "
                                "(see its log) and rerun: finished rounds are kept")
        row["leaked_samples"] = int(judged["leaked"].fill_null(False).sum())
        # stop when the judge finds no leak at all (re-finding known pairs is still a leak)
        stopped = row["leaked_samples"] == 0 and cfg["early_stop"]
        if stopped:
            row["stop_reason"] = "no leak"
        elif reason := evidence_stop(row, cfg):
            stopped, row["stop_reason"] = True, reason
    leaked = pl.concat([known, new]) if new.height else known
    forget_pairs = forget_examples(data, leaked, cfg)
    chosen = None
    if selecting and round_idx == cfg["rounds"]:  # the last round measures and selects; it does not train
        history = _round_history(Path(prev_dir), round_idx) + [(row, Path(model_dir))]
        row["selected_round"], chosen = select_round(history, cfg, ref=row["retain_ref"], name=name)
        row["stop_reason"] = row["stop_reason"] or "selected"
    trained = not stopped and leaked.height > 0 and chosen is None
    if trained:
        model, tokenizer = load_model(model_dir, dev)
        method_name, method_kw, loop_kw = split_run_params(params["unlearn"][cfg["base"]])
        loop_kw.update(steps=cfg["steps"], lr=cfg.get("lr", loop_kw["lr"]))
        method = METHODS.get(method_name)(**method_kw)
        reference = None
        needs = method.needs_reference or make_retain_loss(loop_kw.get("retain_loss"), method).needs_reference
        if needs and cfg["reference"] == "full":
            if reference_dir is None:
                raise ArtifactError(f"rule.{name}.reference=full: RULE needs the full model's folder (--reference)")
            reference, _ = load_model(reference_dir, dev)
        retain_pairs = training_pairs(data.filter(pl.col("split") == "retain"))
        unlearn_loop(model, tokenizer, method, forget_pairs, retain_pairs, template=params["prompt_template"],
                     seed=seed, device=dev, desc=f"{name} round {round_idx}: unlearn", reference=reference,
                     training=params.get("training"), **loop_kw)
        del reference
    row.update(stopped=stopped, trained=trained, forget_size=len(forget_pairs), leaked_total=leaked.height)
    with atomic_path(out_dir, is_dir=True) as tmp:
        if trained:
            model.save_pretrained(tmp / "model", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "model")
        elif chosen is not None:
            _link_model(chosen, tmp / "model")
        elif back_off:  # the model before the update that cost retain accuracy: the last round's start
            _link_model(_start_model(Path(prev_dir), prev_log), tmp / "model")
        else:
            _link_model(Path(model_dir), tmp / "model")
        write_frame(leaked, tmp / "leaked.parquet")
        typed = {"stop_reason": pl.String, "start_dir": pl.String, "retain_start": pl.Float64, "retain_ref": pl.Float64,
                 "selected_round": pl.Int64}
        write_frame(pl.DataFrame([row], schema_overrides={k: t for k, t in typed.items() if k in row}),
                    tmp / "round.parquet")


def round_model_dir(round_dir: str | os.PathLike) -> Path:
    """The model folder of a round folder (round 0 is the base model's own folder)."""
    round_dir = Path(round_dir)
    return round_dir / "model" if (round_dir / "round.parquet").is_file() else round_dir


def round_model_name(params: dict[str, Any], name: str, round_idx: int) -> str | None:
    """The pipeline model whose samples *are* this round's model: round 0 is the base run,
    the last round is the RULE model itself; None for the rounds in between."""
    cfg = params["rule"][name]
    return cfg["base"] if round_idx == 0 else name if round_idx == cfg["rounds"] else None


def evaluate_round(data: pl.DataFrame, params: dict[str, Any], *, name: str, round_idx: int,
                   round_dir: str | os.PathLike, out: str | os.PathLike,
                   judgments: str | os.PathLike | None = None) -> None:  # pragma: no mutate block
    """Leak@1 and leak@n of a round's model on the held-out evaluation phrasing
    (``sample.question_column``) at the headline decoding with the *evaluation* seed, and its
    greedy retain accuracy. Round 0 is the base run's model and the last round RULE's own, which
    the main pipeline samples and judges already: with ``judgments`` (its judgments folder)
    those rounds read them instead of drawing the same samples again. The rounds in between are
    sampled and judged here through the same backend, judge and estimator."""
    from leakk.judges import judge_samples
    from leakk.sampling.decoding import GREEDY, Decoding

    ev, est = params["sample"], params["estimate"]
    judge, util = est["headline_judge"], utility_judge(params)
    decoding = Decoding.from_name(est["headline_decoding"])
    model = round_model_name(params, name, round_idx)
    if judgments is not None and model is not None:
        sampled = read_parquet(judgment_path(judgments, model, decoding.name, judge), "judgments")
        greedy = read_parquet(judgment_path(judgments, model, GREEDY.name, util), "judgments")
    else:
        model_dir = round_model_dir(round_dir)
        sampled, greedy = (judge_samples(
            sample_round(model_dir, questions_for(data, splits, ev["question_column"]), dec, n=ev["n"],
                         seed=ev["seed"], max_new_tokens=ev["max_new_tokens"], params=params,
                         desc=f"evaluate {name} round {round_idx}"),
            data, {label: params["judge"][label]}, progress=False, device=params["device"])
            for splits, dec, label in ((["forget"], decoding, judge), (["retain"], GREEDY, util)))
    forget_qids = data.filter(pl.col("split") == "forget").select("qid")
    row = {"round": round_idx, "eval_judge": judge, "eval_decoding": decoding.name}
    row.update(leak_stats(sampled.join(forget_qids, on="qid"), data, sorted({1, ev["n"]}), est, prefix="eval_"))
    row["retain_accuracy"] = _accuracy(greedy.join(data.filter(pl.col("split") == "retain").select("qid"), on="qid"))
    write_parquet(pl.DataFrame([row]), out)


def _finished(round_dir: Path, fingerprint: str, *, selects: bool) -> bool:
    """A finished round trained with these params, and selecting exactly when it must (the
    fingerprint leaves ``rounds`` out, but under ``select`` the last round's job depends on it)."""
    log = round_dir / "round.parquet"
    if not log.is_file():
        return False
    frame = read_parquet(log)
    selected = "selected_round" in frame.columns and frame["selected_round"][0] is not None
    return "fingerprint" in frame.columns and frame["fingerprint"][0] == fingerprint and selected == selects


def run_all_rounds(data: pl.DataFrame, params: dict[str, Any], *, name: str, base_model: str | os.PathLike,
                   out_root: str | os.PathLike, reference_dir: str | os.PathLike | None = None) -> None:
    """Every round of ``rule.<name>`` under ``out_root/round_<r>``. A finished round trained
    with the same parameters (same fingerprint) is kept, so an interrupted ``leakk rule``
    resumes at the first unfinished round; a round with another fingerprint, and every
    round after it, is trained again. (DVC removes a stage's outputs before running it,
    so ``dvc.yaml`` marks this stage's output ``persist``.)

    Rounds beyond ``rounds`` (a user lowered it) leave the output but are not deleted: they
    are parked in ``<out_root>.parked/`` and moved back when ``rounds`` is raised again, if
    every round before them was kept as it was (so they continue the very same chain)."""
    out_root = Path(out_root)
    parked = out_root.with_name(out_root.name + ".parked")
    prev: Path = Path(base_model)
    fingerprint = round_fingerprint(params, name)
    rounds = params["rule"][name]["rounds"]
    stale = False
    for r in range(1, rounds + 1):
        out = out_root / f"round_{r}"
        selects = bool(params["rule"][name].get("select")) and r == rounds
        if not stale and not out.exists() and _finished(parked / out.name, fingerprint, selects=selects):
            os.replace(parked / out.name, out)
        stale = stale or not _finished(out, fingerprint, selects=selects)
        if stale:
            run_round(data, params, name=name, round_idx=r, prev_dir=prev, out_dir=out, reference_dir=reference_dir)
        prev = out
    # fewer rounds than last time: the later rounds are no longer part of this run's output
    for extra in out_root.glob("round_*"):
        if extra.name.removeprefix("round_").isdigit() and int(extra.name.removeprefix("round_")) > rounds:
            parked.mkdir(exist_ok=True)
            if (parked / extra.name).exists():  # an older parked copy: this one supersedes it
                shutil.rmtree(parked / extra.name)
            os.replace(extra, parked / extra.name)

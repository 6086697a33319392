"""The ``leakk`` command: one subcommand per pipeline stage (Snakemake and DVC call these).

Heavy libraries are imported inside each command, so light stages start fast. Expected
failures (bad params, missing artifacts) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from leakk.errors import LeakkError


def _download(args, params):
    from leakk.hub import download

    for line in download(params, args.key or None, args.hub_dir, record=args.record):
        print(line)


def _data(args, params):
    from leakk.data import build_benchmark
    from leakk.hub import dataset_folder
    from leakk.io import write_parquet

    d = params["data"]
    frame = build_benchmark(d["benchmark"], d.get(d["benchmark"]) or {}, params["seed"],
                            source=dataset_folder(params, args.hub_dir))
    write_parquet(frame, args.out, "data")


def _read_data(path):
    from leakk.io import read_parquet

    return read_parquet(path, "data")


def _finetune(args, params):
    from leakk.config import base_folder
    from leakk.finetune import finetune

    splits = ["forget", "retain"] if args.which == "full" else ["retain"]
    model_params = dict(params["model"], base=base_folder(params))  # a hub id: its download
    finetune(_read_data(args.data), args.out, splits=splits, model_params=model_params,
             train_params=params["finetune"], template=params["prompt_template"],
             seed=params["seed"], device=params["device"], name=args.which, training=params["training"])


def _unlearn(args, params):
    from leakk.errors import ParamsError
    from leakk.unlearn.run import run_unlearning

    if args.name not in params["unlearn"]:
        raise ParamsError(f"unlearn.{args.name}: no such unlearn run (known: {sorted(params['unlearn'])})")
    reason = run_unlearning(_read_data(args.data), args.model_dir, args.out, name=args.name, params=params)
    print(f"unlearn {args.name}: {reason}", file=sys.stderr)


def _decodings(params, names):
    from leakk.config import decoding_names
    from leakk.errors import ParamsError
    from leakk.sampling import Decoding

    known = decoding_names(params)
    for name in names:
        if name not in known:
            raise ParamsError(f"sample.decodings: {name!r} is not configured (known: {known})")
    return [Decoding.from_name(n) for n in names]


def _sample(args, params):
    from leakk.config import decoding_names
    from leakk.io import write_parquet
    from leakk.modeling import check_model_dir
    from leakk.sampling.stage import run_sampling

    check_model_dir(args.model_dir, "--model-dir")
    data = _read_data(args.data)
    names = decoding_names(params) if args.decoding == "all" else [args.decoding]
    for dec in _decodings(params, names):
        out = Path(args.out) / f"{dec.name}.parquet" if args.decoding == "all" else Path(args.out)
        frame = run_sampling(args.model_dir, data, dec, model_name=args.model,
                             params=dict(params["sample"], device=params["device"]),
                             template=params["prompt_template"], shard=args.shard, shards=args.shards)
        write_parquet(frame, out, "samples")


def _merge(args, params):
    import polars as pl

    from leakk.io import read_parquet, write_parquet

    frames = [read_parquet(p, "samples") for p in args.shards_in]
    write_parquet(pl.concat(frames).sort("qid", "sample_idx"), args.out, "samples")


def _judge(args, params):
    from leakk.errors import ArtifactError, ParamsError
    from leakk.stages import judge_file

    data = _read_data(args.data)
    src = Path(args.samples)
    if not src.is_dir():
        if args.judge is None:
            raise ParamsError("--judge is required with a samples file (one file per judge)")
        judge_file(src, data, params, args.judge, args.out)
        return
    paths = sorted(src.glob("*.parquet"))
    if not paths:
        raise ArtifactError(f"{src}: no samples Parquet files")
    # a folder of <decoding>.parquet: --judge L writes <out>/<decoding>.parquet (that judge's
    # folder); without --judge, every configured judge writes <out>/<judge>/<decoding>.parquet
    for label in [args.judge] if args.judge else list(params["judge"]):
        out = Path(args.out) if args.judge else Path(args.out) / label
        for path in paths:
            judge_file(path, data, params, label, out / path.name)


def _estimate(args, params):
    from leakk.stages import estimate

    print(estimate(args.judgments, _read_data(args.data), params, args.out_dir))


def _calibrate(args, params):
    from leakk.calibrate import write_calibration

    table = write_calibration(args.judgments, _read_data(args.data), params, args.out_dir, args.figure)
    print(f"calibration: {table.height} rows (judge × model × decoding) against fact")


def _figures(args, params):
    from leakk.stages import figures

    figures(args.leak, params, args.out_dir, judges=[args.judge] if args.judge else None)


def _rule_round(args, params):
    from leakk.rule import run_round

    run_round(_read_data(args.data), params, name=args.name, round_idx=args.round,
              prev_dir=args.prev, out_dir=args.out, reference_dir=args.reference)


def _rule(args, params):
    from leakk.rule import run_all_rounds

    run_all_rounds(_read_data(args.data), params, name=args.name, base_model=args.model_dir,
                   out_root=args.out, reference_dir=args.reference)


def _round_order(folders: list[str]) -> list[str]:
    """Round folders in round order (``round_10`` after ``round_9``, unlike a shell glob)."""
    import re

    def key(path: str):
        m = re.search(r"round_(\d+)(?:\.parquet)?/?$", path)
        return int(m.group(1)) if m else -1

    return sorted(folders, key=key)


def _rule_eval(args, params):
    from leakk.rule import evaluate_round

    data = _read_data(args.data)
    for i, folder in enumerate(_round_order(args.rounds)):
        evaluate_round(data, params, name=args.name, round_idx=args.first_round + i, round_dir=folder,
                       out=Path(args.out_dir) / f"round_{args.first_round + i}.parquet", judgments=args.judgments)


def _rule_report(args, params):
    from leakk.rule import report

    report([Path(p) for p in _round_order(args.rounds)], [Path(p) for p in args.evals], args.out_log,
           args.out_figure)


def _validate(args, params):
    if args.stamp:
        from leakk.io import write_text

        write_text("ok\n", args.stamp)  # constant: a stage that depends on it re-runs only on failure
    print(f"{args.params}: ok")


def _dvc_record(args, params):
    from leakk.dvc_record import record
    from leakk.hub import download

    # the download stage's output, as `dvc repro` writes it (the Snakemake run fetched every
    # source already, so this makes no request)
    root = Path(args.repo)
    if (root / "dvc.yaml").is_file():
        download(params, hub_dir=root / "results" / "hub", record=root / "results" / "hub" / "downloads.json")
    for line in record(args.repo):
        print(line)


def _dvc_yaml(args, params):
    from leakk.dvc_yaml import render, stale
    from leakk.errors import ParamsError
    from leakk.io import write_text

    if args.check:
        wrong = stale(args.file, params)
        if wrong:
            raise ParamsError(f"{args.file}: {', '.join(wrong)} differ from {args.params}'s models (a preset's "
                              f"`models:`?); rewrite them with `leakk --params {args.params} dvc-yaml`")
        return
    write_text(render(Path(args.file).read_text(), params, args.file), args.file)
    print(f"{args.file}: model lists set for {args.params}")


def _replicates(args, params):
    from leakk.replicate_stats import aggregate
    from leakk.replicates import run_seeds

    extra = list(args.snakemake_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    run_seeds(args.params, params, snakefile=args.snakefile, root=args.out_dir, cores=args.cores, extra=extra)
    if "-n" in extra or "--dry-run" in extra:
        return  # a plan only: nothing new to aggregate
    print(aggregate(params, args.out_dir))


def _replicates_table(args, params):
    from leakk.replicate_stats import aggregate

    print(aggregate(params, args.out_dir, seeds=args.seed or None))


DESCRIPTION = """\
leakk: measure leak@k (does an unlearned LLM leak forgotten facts when sampled k times?)
and run RULE. One subcommand per pipeline stage; Snakemake (Snakefile) and DVC (dvc.yaml)
call these. Every command first reads and validates the params file: a bad value fails
with one line naming the file, the key and the rule, and exit status 2, before any work."""

EPILOG = "Run `leakk <command> --help` for a command's inputs and outputs. Docs: README.md, docs/design.md."


def build_parser() -> argparse.ArgumentParser:
    from leakk import __version__

    parser = argparse.ArgumentParser(prog="leakk", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"leakk {__version__}")
    parser.add_argument("--params", default="params.yaml", metavar="FILE",
                        help="experiment parameters: params.yaml or a complete preset (default: params.yaml)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for torch (default: 1; results depend on the thread count, so keep it "
                             "fixed; the workflows run jobs side by side instead)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def cmd(name, fn, help_, description=""):
        p = sub.add_parser(name, help=help_, description=f"{help_[0].upper()}{help_[1:]}. {description}".strip(),
                           epilog=EPILOG)
        p.set_defaults(fn=fn)
        # also accepted after the command (`leakk validate --params configs/x.yaml`)
        p.add_argument("--params", default=argparse.SUPPRESS, metavar="FILE", help="as the global --params")
        return p

    def data_arg(p):
        p.add_argument("--data", required=True, metavar="PARQUET",
                       help="the benchmark Parquet written by `leakk data`")

    def reference_arg(p):
        p.add_argument("--reference", metavar="DIR",
                       help="the full model's folder: NPO's frozen reference (rule.<name>.reference: full)")

    p = cmd("validate", _validate, "validate the params file and exit",
            "Prints '<file>: ok', or one line naming the first bad key and the rule it breaks.")
    p.add_argument("--stamp", metavar="FILE", help="also write this file on success (DVC's first stage)")
    p = cmd("dvc-record", _dvc_record, "record finished results in dvc.lock and the DVC cache",
            "What `dvc commit --force` does for every dvc.yaml stage whose outputs all exist: no re-run. "
            "The Snakefile calls it after a full successful run, so `dvc status` knows what Snakemake built.")
    p.add_argument("--repo", default=".", metavar="DIR", help="the DVC repository root (default: .)")
    p = cmd("dvc-yaml", _dvc_yaml, "set dvc.yaml's model lists for the params file (a preset)",
            "Rewrites the few values of dvc.yaml that DVC cannot compute from params: the base models trained "
            "here, every evaluated model's folder (a `models:` entry is its download) and the folder unlearning "
            "starts from. Comments and everything else are kept; running it again changes nothing.")
    p.add_argument("--file", default="dvc.yaml", metavar="FILE", help="the dvc.yaml to rewrite (default: dvc.yaml)")
    p.add_argument("--check", action="store_true", help="only check: fail with one line when the lists are stale")
    p = cmd("download", _download, "fetch the params' hub datasets and models (pinned revisions)",
            "Each hub source (data.<benchmark>, models.<name>) goes to <hub-dir>/datasets/<benchmark> or "
            "<hub-dir>/models/<name> through huggingface_hub.snapshot_download; a folder already fetched at "
            "the same repo and revision makes no request; a local folder is used in place.")
    p.add_argument("--key", action="append", metavar="KEY",
                   help="only this source (datasets/<benchmark>, models/<name>); repeatable (default: all)")
    p.add_argument("--hub-dir", default="results/hub", metavar="DIR", help="download root (default: results/hub)")
    p.add_argument("--record", metavar="JSON", help="also write each source's repo, revision and resolved commit here")
    p = cmd("data", _data, "build the benchmark Parquet",
            "Generates (synthetic) or prepares the data.benchmark named in params: one row per QA with "
            "qid, group, question, answer, split (fact where the benchmark has one) and the benchmark's own columns.")
    p.add_argument("--out", required=True, metavar="PARQUET", help="where to write the benchmark")
    p.add_argument("--hub-dir", default="results/hub", metavar="DIR",
                   help="where `leakk download` put hub datasets (default: results/hub)")
    p = cmd("finetune", _finetune, "train the full target model or the retrain baseline",
            "full trains on every QA (forget + retain), retrain on the retain split only; writes an HF "
            "folder (safetensors, tokenizer) with train_log.parquet. Reads seed, device, model, finetune, "
            "prompt_template, training.")
    data_arg(p)
    p.add_argument("--which", choices=["full", "retrain"], required=True, help="which model to train")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    p = cmd("unlearn", _unlearn, "run one unlearn.<name> method from the full model",
            "Applies the run's method (ga, graddiff, npo, …) for its steps; writes an HF folder with "
            "train_log.parquet (per-step forget and retain losses).")
    data_arg(p)
    p.add_argument("--name", required=True, help="the unlearn.<name> entry of the params file")
    p.add_argument("--model-dir", required=True, metavar="DIR", help="the model to unlearn from (the full model)")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    p = cmd("sample", _sample, "sample completions of the forget (and, greedy, retain) questions",
            "n completions per forget question for a sampled decoding, one per question (forget and "
            "retain) for greedy; each completion depends only on (sample.seed, qid, sample_idx). "
            "Writes the samples Parquet contract.")
    data_arg(p)
    p.add_argument("--model", required=True, help="model name written into the samples (full, ga, …)")
    p.add_argument("--model-dir", required=True, metavar="DIR", help="the HF model folder to sample from")
    p.add_argument("--decoding", required=True, help="a decoding name (greedy, t1.0_p1.0, …) or 'all'")
    p.add_argument("--shard", type=int, default=0, help="this job's shard index (default: 0)")
    p.add_argument("--shards", type=int, default=1, help="number of shards the questions are split into (default: 1)")
    p.add_argument("--out", required=True, metavar="PATH", help="a Parquet file, or a folder with --decoding all")
    p = cmd("merge", _merge, "merge sample shards into one Parquet",
            "Concatenates shard files (sorted by qid, sample_idx); the result equals an unsharded run.")
    p.add_argument("shards_in", nargs="+", metavar="SHARD", help="shard Parquet files")
    p.add_argument("--out", required=True, metavar="PARQUET", help="the merged samples file")
    p = cmd("judge", _judge, "judge samples with one configured judge (one file per judge)",
            "Scores each distinct completion once; writes the judgments contract (leaked null = the judge "
            "failed, never 'not leaked'); fails with one line when more than judge.<label>.max_missing failed.")
    data_arg(p)
    p.add_argument("--samples", required=True, metavar="PATH", help="a samples Parquet, or a folder of them")
    p.add_argument("--judge", help="the judge's label in params (judge.<label>); without it (samples folder "
                                   "only) every configured judge, into <out>/<judge>/")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="a Parquet file, or (with a samples folder) a folder for <decoding>.parquet")
    p = cmd("estimate", _estimate, "build the leak@k table with CIs, the utility table and the summary",
            "Unbiased leak@k per (model, decoding, judge, k) with cluster-bootstrap CIs and the excess over "
            "retrain; writes leak_at_k.parquet/.csv, utility.csv and summary.md, and prints the summary.")
    data_arg(p)
    p.add_argument("--judgments", required=True, metavar="DIR",
                   help="the judgments folder (<model>/<judge>/<decoding>.parquet)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="where the tables and summary go")
    p = cmd("calibrate", _calibrate, "every judge's precision/recall/F1 and leak@k against fact (ground truth)",
            "Per (judge, model, decoding) against the fact judge; an empty table when there is no fact judge.")
    data_arg(p)
    p.add_argument("--judgments", required=True, metavar="DIR", help="the judgments folder")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes calibration.parquet and calibration.csv here")
    p.add_argument("--figure", required=True, metavar="PNG", help="the calibration figure")
    p = cmd("figures", _figures, "draw the leak@k and greedy-vs-sampled figures",
            "One leak@k-vs-k figure per judge (CI bands, a panel per decoding) and the greedy-vs-sampled bars.")
    p.add_argument("--leak", required=True, metavar="PARQUET", help="the leak table (leak_at_k.parquet)")
    p.add_argument("--judge", help="only this judge's figures (default: every configured judge)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="where the PNGs go")
    p = cmd("rule-round", _rule_round, "run one RULE round: sample, judge, add leaks, unlearn",
            "Samples the current model with the round's training seed, adds new leaked pairs to the "
            "forget set and continues the base method's loss; writes the round folder.")
    data_arg(p)
    p.add_argument("--name", required=True, help="the rule.<name> entry of the params file")
    p.add_argument("--round", type=int, required=True, help="the round index (1, 2, …)")
    p.add_argument("--prev", required=True, metavar="DIR", help="previous round folder (round 1: the base model folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="the round folder to write")
    reference_arg(p)
    p = cmd("rule", _rule, "run all RULE rounds of one rule.<name> (resumes finished rounds)",
            "The DVC form of rule-round: every round in one command; a round finished with the same "
            "parameters is kept.")
    data_arg(p)
    p.add_argument("--name", required=True, help="the rule.<name> entry of the params file")
    p.add_argument("--model-dir", required=True, metavar="DIR", help="the base method's unlearned model")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for round_<r> subfolders")
    reference_arg(p)
    p = cmd("rule-eval", _rule_eval, "evaluate RULE rounds' models with the evaluation seed",
            "leak@1 and leak@n on the held-out phrasing at the headline decoding with sample.seed (never a "
            "training seed) and greedy retain accuracy, per round.")
    data_arg(p)
    p.add_argument("rounds", nargs="+", metavar="ROUND", help="round folders in order (round 0: the base model folder)")
    p.add_argument("--name", required=True, help="the rule.<name> entry of the params file")
    p.add_argument("--judgments", metavar="DIR",
                   help="the main judgments folder: round 0 (the base run) and the last round (the RULE "
                        "model) read their judgments there instead of sampling again")
    p.add_argument("--first-round", type=int, default=0, help="round index of the first folder (default: 0)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes round_<r>.parquet here")
    p = cmd("rule-report", _rule_report, "write the RULE round log and trajectory figure",
            "Joins each round's training log with its evaluation into one Parquet and plots the trajectory.")
    p.add_argument("--rounds", nargs="+", required=True, metavar="DIR", help="round folders 1..R")
    p.add_argument("--evals", nargs="+", required=True, metavar="PARQUET", help="round evaluations 0..R")
    p.add_argument("--out-log", required=True, metavar="PARQUET", help="the round log to write")
    p.add_argument("--out-figure", required=True, metavar="PNG", help="the trajectory figure to write")
    p = cmd("replicates", _replicates, "run the whole DAG once per seed of `replicates:`, then aggregate",
            "For each seed s: writes <out-dir>/seed_<s>/params.yaml (the params file with seed: s) and runs "
            "Snakemake on the Snakefile in that folder (resumable: a finished seed is 'Nothing to be done'); "
            "then what replicates-table writes. Arguments after -- go to Snakemake.")
    p.add_argument("--cores", default="all", help="Snakemake --cores of each seed's run (default: all)")
    p.add_argument("--snakefile", default="Snakefile", metavar="FILE", help="the workflow (default: Snakefile)")
    p.add_argument("--out-dir", default="results/replicates", metavar="DIR",
                   help="seed folders and the aggregate (default: results/replicates)")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- ARGS",
                   help="extra Snakemake arguments (e.g. -- -n, -- --resources gpu=1)")
    p = cmd("replicates-table", _replicates_table, "aggregate finished replicate seeds: mean ± sd beside the pooled CI",
            "Reads <out-dir>/seed_<s>/results (leak_at_k.parquet, utility.csv, judgments/, data/) and writes "
            "<out-dir>/leak_at_k.parquet/.csv, utility.csv, summary.md and figures/leak_at_k_<judge>.png.")
    p.add_argument("--out-dir", default="results/replicates", metavar="DIR",
                   help="the folder of seed_<s>/ folders (default: results/replicates)")
    p.add_argument("--seed", type=int, action="append", metavar="S",
                   help="aggregate this seed (repeatable; default: `replicates:`, else every seed_<s> found)")
    from leakk.trust_stages import add_commands

    add_commands(sub)  # bounds, bounds-table, reliability, report-tables, heatmap
    return parser


#: commands that only read or write the workflow's own files (no stage runs on this machine)
PLANNING = ("dvc-yaml", "dvc-record")


def _job(args) -> str:
    """What the failed command was making, for its one error line: its output, and the params
    entry it runs where it runs one (``results/models/ga (unlearn.ga)``)."""
    out = next((str(v) for v in (getattr(args, a, None) for a in ("out", "out_dir", "out_log", "file")) if v), "")
    entry = {"unlearn": "unlearn", "rule": "rule", "rule-round": "rule", "rule-eval": "rule"}.get(args.command)
    label = f"{entry}.{args.name}" if entry and getattr(args, "name", None) else (
        f"judge.{args.judge}" if getattr(args, "judge", None) else "")
    return f"{out} ({label})" if out and label else out or label or args.params


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from leakk.errors import debug, unexpected_line
    from leakk.params_checks import RedactingFilter, redact, register_secret_values

    for handler in logging.getLogger().handlers:  # no API key reaches a log line
        handler.addFilter(RedactingFilter())
    try:
        from leakk.config import load_params
        from leakk.determinism import apply as pin_cpu_kernels
        from leakk.lifeline import watch_parent_engine

        pin_cpu_kernels()  # refuses an unknown LEAKK_CPU_KERNELS with one line
        watch_parent_engine()
        # commands that only write workflow files run nothing here: this machine's device is not theirs to check
        params = load_params(args.params, host=False if args.command in PLANNING else None)
        register_secret_values(params)  # the keys the judges read: redacted from every message
        if args.threads:  # reductions split by thread: a fixed count keeps results reproducible
            from leakk.modeling import set_threads

            set_threads(args.threads)
        args.fn(args, params)
    except LeakkError as e:
        print(f"leakk {args.command}: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"leakk {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # any other failure of a stage: one line naming what it was making
        if args.verbose or debug():
            import traceback

            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        if isinstance(e, OSError):  # disk full, no permission, a path that vanished
            where = f"{e.filename}: " if e.filename else ""
            line = f"{where}{e.strerror or e} (set LEAKK_DEBUG=1 for the traceback)"
        else:
            line = unexpected_line(e, _job(args))
        print(f"leakk {args.command}: error: {redact(line)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

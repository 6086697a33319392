"""``leakk <stage>``: one subcommand per pipeline stage (Snakemake and DVC call these).

Heavy libraries are imported inside each command, so light stages start fast. Expected
failures (bad params, missing artifacts) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from leakk.errors import LeakkError


def _data(args, params):
    from leakk.data import build_benchmark
    from leakk.io import write_parquet

    d = params["data"]
    frame = build_benchmark(d["benchmark"], d.get(d["benchmark"]) or {}, params["seed"])
    write_parquet(frame, args.out, "data")


def _read_data(path):
    from leakk.io import read_parquet

    return read_parquet(path, "data")


def _finetune(args, params):
    from leakk.finetune import finetune

    splits = ["forget", "retain"] if args.which == "full" else ["retain"]
    finetune(_read_data(args.data), args.out, splits=splits, model_params=params["model"],
             train_params=params["finetune"], template=params["prompt_template"],
             seed=params["seed"], device=params["device"], name=args.which)


def _unlearn(args, params):
    from leakk.errors import ParamsError
    from leakk.unlearn.run import run_unlearning

    if args.name not in params["unlearn"]:
        raise ParamsError(f"unlearn.{args.name}: no such unlearn run (known: {sorted(params['unlearn'])})")
    run_unlearning(_read_data(args.data), args.model_dir, args.out, name=args.name,
                   run=params["unlearn"][args.name], template=params["prompt_template"],
                   seed=params["seed"], device=params["device"])


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
    from leakk.stages import judge_file

    data = _read_data(args.data)
    src = Path(args.samples)
    if src.is_dir():
        for path in sorted(src.glob("*.parquet")):
            judge_file(path, data, params, Path(args.out) / path.name)
    else:
        judge_file(src, data, params, args.out)


def _estimate(args, params):
    from leakk.stages import estimate

    print(estimate(args.judgments, _read_data(args.data), params, args.out_dir))


def _figures(args, params):
    from leakk.stages import figures

    figures(args.leak, params, args.out_dir, judges=[args.judge] if args.judge else None)


def _rule_round(args, params):
    from leakk.rule import run_round

    run_round(_read_data(args.data), params, name=args.name, round_idx=args.round,
              prev_dir=args.prev, out_dir=args.out)


def _rule(args, params):
    from leakk.rule import run_all_rounds

    run_all_rounds(_read_data(args.data), params, name=args.name, base_model=args.model_dir,
                   out_root=args.out)


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
        evaluate_round(data, params, round_idx=args.first_round + i, round_dir=folder,
                       out=Path(args.out_dir) / f"round_{args.first_round + i}.parquet")


def _rule_report(args, params):
    from leakk.rule import report

    report([Path(p) for p in _round_order(args.rounds)], [Path(p) for p in args.evals], args.out_log,
           args.out_figure)


def _validate(args, params):
    print(f"{args.params}: ok")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leakk", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="experiment parameters (default: params.yaml)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def cmd(name, fn, help_):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=fn)
        return p

    p = cmd("validate", _validate, "validate params.yaml and exit")
    p = cmd("data", _data, "generate/prepare the benchmark Parquet")
    p.add_argument("--out", required=True)
    p = cmd("finetune", _finetune, "train the full target (all QA) or retrain baseline (retain only)")
    p.add_argument("--data", required=True)
    p.add_argument("--which", choices=["full", "retrain"], required=True)
    p.add_argument("--out", required=True)
    p = cmd("unlearn", _unlearn, "run one unlearn.<name> method from the full model")
    p.add_argument("--data", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--model-dir", required=True, help="the model to unlearn from (the full model)")
    p.add_argument("--out", required=True)
    p = cmd("sample", _sample, "sample completions for forget (and, greedy, retain) questions")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="model name written into the samples")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--decoding", required=True, help="a decoding name (greedy, t1.0_p1.0, …) or 'all'")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--out", required=True, help="a Parquet file, or a folder with --decoding all")
    p = cmd("merge", _merge, "merge sample shards into one Parquet")
    p.add_argument("shards_in", nargs="+")
    p.add_argument("--out", required=True)
    p = cmd("judge", _judge, "judge samples (a file, or a folder of files) with every configured judge")
    p.add_argument("--data", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--out", required=True)
    p = cmd("estimate", _estimate, "leak@k table with CIs, utility table and summary")
    p.add_argument("--data", required=True)
    p.add_argument("--judgments", required=True, help="folder of <model>/<decoding>.parquet judgments")
    p.add_argument("--out-dir", required=True)
    p = cmd("figures", _figures, "leak@k and greedy-vs-sampled figures")
    p.add_argument("--leak", required=True)
    p.add_argument("--judge", help="only this judge's figures (default: every configured judge)")
    p.add_argument("--out-dir", required=True)
    p = cmd("rule-round", _rule_round, "one RULE round: sample, judge, add leaks, unlearn")
    p.add_argument("--data", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--prev", required=True, help="previous round folder (round 0: the base model folder)")
    p.add_argument("--out", required=True)
    p = cmd("rule", _rule, "all RULE rounds of one rule.<name> (resumes finished rounds)")
    p.add_argument("--data", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--model-dir", required=True, help="the base method's unlearned model")
    p.add_argument("--out", required=True)
    p = cmd("rule-eval", _rule_eval, "evaluate RULE rounds' models with the evaluation seed")
    p.add_argument("--data", required=True)
    p.add_argument("rounds", nargs="+", help="round folders in order (round 0: the base model folder)")
    p.add_argument("--first-round", type=int, default=0, help="round index of the first folder")
    p.add_argument("--out-dir", required=True, help="writes round_<r>.parquet here")
    p = cmd("rule-report", _rule_report, "RULE round log Parquet and trajectory figure")
    p.add_argument("--rounds", nargs="+", required=True, help="round folders 1..R")
    p.add_argument("--evals", nargs="+", required=True, help="round evaluations 0..R")
    p.add_argument("--out-log", required=True)
    p.add_argument("--out-figure", required=True)
    from leakk.trust_stages import add_commands

    add_commands(sub)  # bounds, bounds-table, reliability
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        from leakk.config import load_params

        params = load_params(args.params)
        if args.threads:
            from leakk.modeling import set_threads

            set_threads(args.threads)
        args.fn(args, params)
    except LeakkError as e:
        print(f"leakk {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"leakk {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

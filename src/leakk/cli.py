"""The ``leakk`` command: one subcommand per command of the stage table
(:mod:`leakk.workflow.table`; Snakemake and DVC call these).

Each command's entry function imports its heavy libraries itself, so light stages start fast.
Expected failures (bad params, missing artifacts) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from leakk.core.errors import LeakkError


DESCRIPTION = """\
leakk: measure leak@k (does an unlearned LLM leak forgotten facts when sampled k times?)
and run RULE. One subcommand per pipeline stage; Snakemake (Snakefile) and DVC (dvc.yaml)
call these. Every command first reads and validates the params file: a bad value fails
with one line naming the file, the key and the rule, and exit status 2, before any work."""

EPILOG = "Run `leakk <command> --help` for a command's inputs and outputs. Docs: README.md, docs/design.md."


def build_parser() -> argparse.ArgumentParser:
    """The parser: one subcommand per command of the stage table (:data:`leakk.workflow.table.COMMANDS`)."""
    from leakk import __version__
    from leakk.workflow.table import COMMANDS

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
    for command in COMMANDS.values():
        help_ = command.help
        p = sub.add_parser(command.name, help=help_, epilog=EPILOG,
                           description=f"{help_[0].upper()}{help_[1:]}. {command.description}".strip())
        p.set_defaults(command_spec=command)
        # also accepted after the command (`leakk validate --params configs/x.yaml`)
        p.add_argument("--params", default=argparse.SUPPRESS, metavar="FILE", help="as the global --params")
        for a in command.args:
            opts = dict(a.opts)
            if opts.get("nargs") == "...":
                opts["nargs"] = argparse.REMAINDER
            p.add_argument(*a.flags, **opts)
    return parser


def _job(args) -> str:
    """What the failed command was making, for its one error line: its output, and the params
    entry it runs where it runs one (``results/models/ga (unlearn.ga)``)."""
    out = next((str(v) for v in (getattr(args, a, None) for a in ("out", "out_dir", "out_log", "file")) if v), "")
    entry = {"unlearn": "unlearn", "rule": "rule", "rule-round": "rule", "rule-eval": "rule"}.get(args.command)
    label = f"{entry}.{args.name}" if entry and getattr(args, "name", None) else (
        f"judge.{args.judge}" if getattr(args, "judge", None) else "")
    return f"{out} ({label})" if out and label else out or label or args.params


def run(args: argparse.Namespace, params: dict) -> None:
    """Call the command's entry function with its arguments (and, where it asks for them, the
    params file's path)."""
    import importlib
    import inspect

    command = args.command_spec
    module, _, name = command.entry.partition(":")
    fn = getattr(importlib.import_module(module), name)
    kwargs = {dest: getattr(args, dest) for dest in command.dests}
    if "params_file" in inspect.signature(fn).parameters:
        kwargs["params_file"] = args.params
    fn(params, **kwargs)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from leakk.core.errors import debug, unexpected_line
    from leakk.core.checks import RedactingFilter, redact, register_secret_values

    for handler in logging.getLogger().handlers:  # no API key reaches a log line
        handler.addFilter(RedactingFilter())
    try:
        from leakk.config import load_params
        from leakk.core.io import record_execution, reset_execution
        from leakk.core.params import get
        from leakk.determinism import apply as pin_cpu_kernels
        from leakk.determinism import cpu_name
        from leakk.determinism import mode as cpu_kernels
        from leakk.workflow.lifeline import watch_parent_engine
        from leakk.workflow.table import EXECUTION

        pin_cpu_kernels()  # refuses an unknown LEAKK_CPU_KERNELS with one line
        reset_execution()
        record_execution(cpu_kernels=cpu_kernels(), cpu=cpu_name())  # in every artifact: what the floats depend on
        watch_parent_engine()
        if args.command_spec.reads_params:
            params = load_params(args.params, host=None if args.command_spec.checks_host else False)
            register_secret_values(params)  # the keys the judges read: redacted from every message
            record_execution(**{key: get(params, key) for key in EXECUTION})
        else:
            params = None
        if args.threads:  # reductions split by thread: a fixed count keeps results reproducible
            from leakk.determinism import pin_threads

            pin_threads(args.threads)
            record_execution(threads=int(args.threads))
        run(args, params)
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

"""The stage table: every ``leakk`` command and every pipeline stage, declared once.

A :class:`Command` is a CLI subcommand: its entry function (``module:function``, called as
``fn(params, **arguments)``) and its arguments. A :class:`Stage` is a node of the DAG: the
command it runs, the params keys it reads, its resources and whether it runs a model, and how
each engine runs it — the Snakemake jobs (:class:`Rule`: wildcards, inputs, outputs) and the
dvc.yaml stage (:class:`Dvc`: ``foreach``/``matrix``, deps, outs). Everything else derives
from here: the CLI's parser (:mod:`leakk.cli`), the Snakemake rules (``rules/stages.smk``
loops over :func:`leakk.workflow.snakemake.rules`) and the whole of dvc.yaml
(:mod:`leakk.workflow.dvc`).

Keys are dotted paths into params.yaml; ``{name}``, ``{base}``, ``{judge}``, ``{source}`` stand
for the job's run name, its RULE base run, its judge label and its hub source, and
``{headline_judge}`` / ``{utility_judge}`` for the judges the estimate section selects. What a
stage reads never includes an execution setting (:data:`EXECUTION`: the device, thread counts,
batch sizes): those change where and how fast a stage runs, not its result, so switching them
re-runs nothing; stages record them in their artifacts' metadata instead.

Adding a stage: its entry function (a module under :mod:`leakk.stages`), one :class:`Command`
and one :class:`Stage` below, and its test.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leakk.core.errors import ParamsError
from leakk.core.layout import RESULTS as L
from leakk.core.layout import (attacked_models, is_local, model_folder, model_names, round_folder, sampled_folder,
                               trained_models)
from leakk.core.params import select
from leakk.data.hub import base_folder, dataset_folder, hub_sources, source_param
from leakk.judges.run import utility_judge
from leakk.sampling.decoding import decoding_names
from leakk.unlearn.rule import ROUND_IGNORES, ROUND_READS, round_names

#: params keys that are execution settings: recorded in artifact metadata, never a cache key
EXECUTION = ("device", "sample.batch_rows")

Params = dict[str, Any]


# ------------------------------------------------------------------------------------- commands

@dataclass(frozen=True)
class Arg:
    """One CLI argument: argparse's flags and keywords."""

    flags: tuple[str, ...]
    opts: dict[str, Any]

    @property
    def dest(self) -> str:
        flag = self.flags[0]
        return self.opts.get("dest") or flag.lstrip("-").replace("-", "_")

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")


def arg(*flags: str, **opts: Any) -> Arg:
    return Arg(flags, opts)


@dataclass(frozen=True)
class Command:
    """A ``leakk`` subcommand."""

    name: str
    entry: str  # "module:function", called as function(params, **arguments)
    help: str
    description: str = ""
    args: tuple[Arg, ...] = ()
    #: prints its result: the engines send stdout to the job's log too
    prints: bool = False
    #: reads and validates the params file first (a command that makes its own params does not)
    reads_params: bool = True
    #: runs stages on this machine, so its device and optional packages are checked (a command
    #: that only writes the workflow's own files does not)
    checks_host: bool = True

    @property
    def dests(self) -> dict[str, Arg]:
        return {a.dest: a for a in self.args}


DATA = arg("--data", required=True, metavar="PARQUET", help="the benchmark Parquet written by `leakk data`")
REFERENCE = arg("--reference", metavar="DIR",
                help="the full model's folder: NPO's frozen reference (rule.<name>.reference: full)")
RULE_NAME = arg("--name", required=True, help="the rule.<name> entry of the params file")
JUDGMENTS = arg("--judgments", required=True, metavar="DIR",
                help="the judgments folder (<model>/<judge>/<decoding>.parquet)")
OUT_DIR = arg("--out-dir", required=True, metavar="DIR", help="where the outputs go")
LEAK = arg("--leak", required=True, metavar="PARQUET", help="the leak table (leak_at_k.parquet)")

_COMMANDS = [
    Command("validate", "leakk.workflow.commands:validate", "validate the params file and exit",
            "Prints '<file>: ok', or one line naming the first bad key and the rule it breaks.",
            (arg("--stamp", metavar="FILE", help="also write this file on success (DVC's first stage)"),)),
    Command("dvc-record", "leakk.workflow.commands:dvc_record",
            "record finished results in dvc.lock and the DVC cache",
            "What `dvc commit --force` does for every dvc.yaml stage whose outputs all exist: no re-run. The "
            "Snakefile calls it after a full successful run, so `dvc status` knows what Snakemake built.",
            (arg("--repo", default=".", metavar="DIR", help="the DVC repository root (default: .)"),), checks_host=False),
    Command("dvc-yaml", "leakk.workflow.commands:dvc_yaml", "write dvc.yaml for the params file (a preset)",
            "Generates the whole dvc.yaml from the stage table and the params file: its models, runs, judges "
            "and the params keys each stage reads. Running it again changes nothing.",
            (arg("--file", default="dvc.yaml", metavar="FILE", help="the dvc.yaml to write (default: dvc.yaml)"),
             arg("--check", action="store_true",
                 help="only check: fail with one line when the file differs from what would be written")), checks_host=False),
    Command("download", "leakk.stages.prepare:download", "fetch the params' hub datasets and models (pinned revisions)",
            "Each hub source (data.<benchmark>, models.<name>) goes to <hub-dir>/datasets/<benchmark> or "
            "<hub-dir>/models/<name> through huggingface_hub.snapshot_download; a folder already fetched at the "
            "same repo and revision makes no request; a local folder is used in place.",
            (arg("--key", action="append", metavar="KEY",
                 help="only this source (datasets/<benchmark>, models/<name>); repeatable (default: all)"),
             arg("--hub-dir", default=L.hub_dir, metavar="DIR", help=f"download root (default: {L.hub_dir})"),
             arg("--record", metavar="JSON", help="also write each source's repo, revision and resolved commit here")),
            prints=True),
    Command("data", "leakk.stages.prepare:data", "build the benchmark Parquet",
            "Generates (synthetic) or prepares the data.benchmark named in params: one row per QA with qid, group, "
            "question, answer, split (fact where the benchmark has one) and the benchmark's own columns.",
            (arg("--out", required=True, metavar="PARQUET", help="where to write the benchmark"),
             arg("--hub-dir", default=L.hub_dir, metavar="DIR",
                 help=f"where `leakk download` put hub datasets (default: {L.hub_dir})"))),
    Command("finetune", "leakk.stages.train:finetune", "train the full target model or the retrain baseline",
            "full trains on every QA (forget + retain), retrain on the retain split only; writes an HF folder "
            "(safetensors, tokenizer) with train_log.parquet. Reads seed, model, finetune, prompt_template, "
            "training.",
            (DATA, arg("--which", choices=["full", "retrain"], required=True, help="which model to train"),
             arg("--out", required=True, metavar="DIR", help="the model folder to write"))),
    Command("unlearn", "leakk.stages.train:unlearn", "run one unlearn.<name> method from the full model",
            "Applies the run's method (ga, graddiff, npo, …) for its steps; writes an HF folder with "
            "train_log.parquet (per-step forget and retain losses).",
            (DATA, arg("--name", required=True, help="the unlearn.<name> entry of the params file"),
             arg("--model-dir", required=True, metavar="DIR", help="the model to unlearn from (the full model)"),
             arg("--out", required=True, metavar="DIR", help="the model folder to write"))),
    Command("attack", "leakk.stages.attack:attack", "apply one attack.<name> to a model folder",
            "Writes the attacked copy (an HF folder) that the pipeline samples as <model>__<name>; what was "
            "done goes to the job's log.",
            (DATA, arg("--name", required=True, help="the attack.<name> entry of the params file"),
             arg("--model-dir", required=True, metavar="DIR", help="the model to attack"),
             arg("--out", required=True, metavar="DIR", help="the attacked model folder to write"))),
    Command("sample", "leakk.stages.sample:sample", "sample completions of the forget (and, greedy, retain) questions",
            "n completions per forget question for a sampled decoding, one per question (forget and retain) for "
            "greedy; each completion depends only on (sample.seed, qid, sample_idx). Writes the samples Parquet "
            "contract.",
            (DATA, arg("--model", required=True, help="model name written into the samples (full, ga, …)"),
             arg("--model-dir", required=True, metavar="DIR", help="the HF model folder to sample from"),
             arg("--decoding", required=True, help="a decoding name (greedy, t1.0_p1.0, …) or 'all'"),
             arg("--shard", type=int, default=0, help="this job's shard index (default: 0)"),
             arg("--shards", type=int, default=1, help="number of shards the questions are split into (default: 1)"),
             arg("--out", required=True, metavar="PATH", help="a Parquet file, or a folder with --decoding all"))),
    Command("merge", "leakk.stages.sample:merge", "merge sample shards into one Parquet",
            "Concatenates shard files (sorted by qid, sample_idx); the result equals an unsharded run.",
            (arg("shards_in", nargs="+", metavar="SHARD", help="shard Parquet files"),
             arg("--out", required=True, metavar="PARQUET", help="the merged samples file"))),
    Command("judge", "leakk.stages.evaluate:judge", "judge samples with one configured judge (one file per judge)",
            "Scores each distinct completion once; writes the judgments contract (leaked null = the judge failed, "
            "never 'not leaked'); fails with one line when more than judge.<label>.max_missing failed.",
            (DATA, arg("--samples", required=True, metavar="PATH", help="a samples Parquet, or a folder of them"),
             arg("--judge", help="the judge's label in params (judge.<label>); without it (samples folder only) "
                                 "every configured judge, into <out>/<judge>/"),
             arg("--out", required=True, metavar="PATH",
                 help="a Parquet file, or (with a samples folder) a folder for <decoding>.parquet"))),
    Command("estimate", "leakk.stages.evaluate:estimate",
            "build the leak@k table with CIs, the utility table and the summary",
            "Unbiased leak@k per (model, decoding, judge, k) with cluster-bootstrap CIs and the excess over "
            "retrain; writes leak_at_k.parquet/.csv, utility.csv and summary.md, and prints the summary.",
            (DATA, JUDGMENTS, OUT_DIR), prints=True),
    Command("calibrate", "leakk.stages.evaluate:calibrate",
            "every judge's precision/recall/F1 and leak@k against fact (ground truth)",
            "Per (judge, model, decoding) against the fact judge; an empty table when there is no fact judge.",
            (DATA, JUDGMENTS, arg("--out-dir", required=True, metavar="DIR",
                                  help="writes calibration.parquet and calibration.csv here"),
             arg("--figure", required=True, metavar="PNG", help="the calibration figure")), prints=True),
    Command("figures", "leakk.stages.evaluate:figures", "draw the leak@k and greedy-vs-sampled figures",
            "One leak@k-vs-k figure per judge (CI bands, a panel per decoding) and the greedy-vs-sampled bars.",
            (LEAK, arg("--judge", help="only this judge's figures (default: every configured judge)"),
             arg("--out-dir", required=True, metavar="DIR", help="where the PNGs go"))),
    Command("rule-round", "leakk.stages.rule:rule_round", "run one RULE round: sample, judge, add leaks, unlearn",
            "Samples the current model with the round's training seed, adds new leaked pairs to the forget set "
            "and continues the base method's loss; writes the round folder.",
            (DATA, RULE_NAME, arg("--round", type=int, required=True, help="the round index (1, 2, …)"),
             arg("--prev", required=True, metavar="DIR", help="previous round folder (round 1: the base model folder)"),
             arg("--out", required=True, metavar="DIR", help="the round folder to write"), REFERENCE)),
    Command("rule", "leakk.stages.rule:rule", "run all RULE rounds of one rule.<name> (resumes finished rounds)",
            "Every round in one command (DVC's form of rule-round); a round finished with the same parameters "
            "is kept.",
            (DATA, RULE_NAME,
             arg("--model-dir", required=True, metavar="DIR", help="the base method's unlearned model"),
             arg("--out", required=True, metavar="DIR", help="folder for round_<r> subfolders"), REFERENCE)),
    Command("rule-eval", "leakk.stages.rule:rule_eval", "evaluate RULE rounds' models with the evaluation seed",
            "leak@1 and leak@n on the held-out phrasing at the headline decoding with sample.seed (never a "
            "training seed) and greedy retain accuracy, per round.",
            (DATA, arg("rounds", nargs="+", metavar="ROUND", help="round folders in order (round 0: the base model)"),
             RULE_NAME,
             arg("--judgments", metavar="DIR",
                 help="the main judgments folder: round 0 (the base run) and the last round (the RULE model) read "
                      "their judgments there instead of sampling again"),
             arg("--first-round", type=int, default=0, help="round index of the first folder (default: 0)"),
             arg("--out-dir", required=True, metavar="DIR", help="writes round_<r>.parquet here"))),
    Command("rule-report", "leakk.stages.rule:rule_report", "write the RULE round log and trajectory figure",
            "Joins each round's training log with its evaluation into one Parquet and plots the trajectory.",
            (arg("--rounds", nargs="+", required=True, metavar="DIR", help="round folders 1..R"),
             arg("--evals", nargs="+", required=True, metavar="PARQUET", help="round evaluations 0..R"),
             arg("--out-log", required=True, metavar="PARQUET", help="the round log to write"),
             arg("--out-figure", required=True, metavar="PNG", help="the trajectory figure to write"))),
    Command("bounds", "leakk.stages.trust:bounds",
            "exact probability that a completion begins with the answer (no sampling)",
            "One teacher-forced pass per forget question and configured decoding.",
            (DATA, arg("--model", required=True, help="model name written into the table"),
             arg("--model-dir", required=True, metavar="DIR", help="the HF model folder"),
             arg("--out", required=True, metavar="PARQUET", help="the per-question bounds"))),
    Command("bounds-table", "leakk.stages.trust:bounds_table",
            "leak@k lower bounds up to k=10^4 beside sampled leak@k, and checks", "",
            (DATA, arg("--bounds", nargs="+", required=True, metavar="PARQUET", help="per-model bounds Parquet files"),
             LEAK, arg("--samples", required=True, metavar="DIR", help="folder of <model>/<decoding>.parquet samples"),
             OUT_DIR)),
    Command("reliability", "leakk.stages.trust:reliability",
            "Clopper-Pearson guarantees, Beta-binomial extrapolation, DVC metrics", "",
            (DATA, JUDGMENTS, LEAK,
             arg("--bootstrap", type=int, default=200, help="group-bootstrap replicates of the fit (default: 200)"),
             OUT_DIR), prints=True),
    Command("report-tables", "leakk.stages.trust:report_tables",
            "the report's tables page (one self-contained HTML file)", "",
            (arg("--summary", required=True, metavar="MD", help="summary.md"),
             arg("--bounds", required=True, metavar="CSV", help="bounds.csv"),
             arg("--check", required=True, metavar="CSV", help="bounds_check.csv"),
             arg("--reliability", required=True, metavar="MD", help="reliability.md"),
             arg("--why", metavar="CSV", help="why_leaks.csv"),
             arg("--out", required=True, metavar="HTML", help="the page to write"))),
    Command("heatmap", "leakk.stages.trust:heatmap", "leak@k over the temperature x top-p grid, per model", "",
            (LEAK, arg("--judge", help="default: estimate.headline_judge"),
             arg("--k", type=int, help="default: the largest sampled k"),
             arg("--out", required=True, metavar="PNG", help="the figure to write"))),
    Command("attack-figure", "leakk.stages.evaluate:attack_figure", "methods x attacks: leak with and without each attack",
            "One panel per attack: each model's greedy leak and leak@k_max unattacked and attacked, on the same "
            "questions, with the paired difference and its CI (estimate.headline_judge and headline_decoding).",
            (arg("--attacks", required=True, metavar="CSV", help="attacks.csv written by `leakk estimate`"),
             arg("--out", required=True, metavar="PNG", help="the figure to write"))),
    Command("replicates", "leakk.workflow.commands:replicates",
            "run the whole DAG once per seed of `replicates:`, then aggregate",
            "For each seed s: writes <out-dir>/seed_<s>/params.yaml (the params file with seed: s) and runs "
            "Snakemake on the Snakefile in that folder (resumable: a finished seed is 'Nothing to be done'); then "
            "what replicates-table writes. Arguments after -- go to Snakemake.",
            (arg("--cores", default="all", help="Snakemake --cores of each seed's run (default: all)"),
             arg("--snakefile", default="Snakefile", metavar="FILE", help="the workflow (default: Snakefile)"),
             arg("--out-dir", default=L.replicates, metavar="DIR",
                 help=f"seed folders and the aggregate (default: {L.replicates})"),
             arg("snakemake_args", nargs="...", metavar="-- ARGS",
                 help="extra Snakemake arguments (e.g. -- -n, -- --resources gpu=1)"))),
    Command("report-examples", "leakk.stages.trust:report_examples",
            "the report's page of leaked completions (greedy vs sampled, fact highlighted)",
            "Per unlearned model, the forget questions sampling leaks most often whose greedy answer does not "
            "leak, beside the first leaked sample, with what the headline judge matched highlighted.",
            (DATA, arg("--samples", required=True, metavar="DIR", help="folder of <model>/<decoding>.parquet samples"),
             JUDGMENTS, arg("--per-model", type=int, default=3, metavar="N", help="questions per model (default: 3)"),
             arg("--out", required=True, metavar="HTML", help="the page to write"))),
    Command("demo", "leakk.workflow.commands:demo",
            "run a real benchmark's path offline on tiny local stand-ins (no GPU, no hub)",
            "demo tofu: builds a TOFU-layout dataset folder and two tiny Llama checkpoints (full, retrain) under "
            "<out-dir>/inputs, writes <out-dir>/params.yaml (configs/tofu_forget10.yaml trimmed to them) and runs "
            "the Snakefile there (snakemake --directory <out-dir>), then its report. Never touches results/ of the "
            "default run; a second run is 'Nothing to be done'. Reads no params file.",
            (arg("name", choices=["tofu"], help="which preset's path to run"),
             arg("--cores", default="all", help="Snakemake --cores (default: all)"),
             arg("--out-dir", default="results/demo_tofu", metavar="DIR",
                 help="the demo's folder: inputs/, params.yaml, results/ (default: results/demo_tofu)"),
             arg("--snakefile", default="Snakefile", metavar="FILE", help="the workflow (default: Snakefile)"),
             arg("--preset", default="configs/tofu_forget10.yaml", metavar="FILE",
                 help="the preset to trim (default: configs/tofu_forget10.yaml)"),
             arg("--no-report", action="store_true", help="skip `snakemake --report`"),
             arg("snakemake_args", nargs="...", metavar="-- ARGS", help="extra Snakemake arguments (e.g. -- -n)")),
            reads_params=False),
    Command("dvc-plots", "leakk.workflow.commands:dvc_plots",
            "`dvc plots show` with Vega inlined (works offline), into results/dvc_plots", "",
            (arg("--out-dir", default="results/dvc_plots", metavar="DIR",
                 help="where the template and index.html go (default: results/dvc_plots)"),
             arg("targets", nargs="*", help="plot files to show (default: dvc.yaml's plots)")),
            reads_params=False),
    Command("readme-tables", "leakk.report.readme_tables:readme_tables",
            "write the README's result tables from a results tree (and check them)",
            "Snapshots what the README quotes from --results (one run), --replicates (seeds) and the presets into --snapshot "
            "(committed), then rewrites every <!-- leakk:table NAME --> block of --readme from the snapshot. "
            "--check only compares.",
            (arg("--results", metavar="DIR", help="a finished run's results folder (e.g. results)"),
             arg("--replicates", metavar="DIR", help="a finished `leakk replicates` folder (e.g. results/replicates)"),
             arg("--attacks", metavar="DIR",
                 help="the attack preset's finished replicates folder (e.g. results/presets/attacks)"),
             arg("--methods", metavar="DIR",
                 help="the methods preset's finished replicates folder (e.g. results/presets/methods)"),
             arg("--unlearn-seeds", metavar="DIR",
                 help="the unlearn_seeds preset's finished replicates folder (e.g. results/presets/unlearn_seeds)"),
             arg("--against-rerun", action="append", metavar="NAME=DIR",
                 help="with --unlearn-seeds: a committed rerun sub-snapshot (docs/results/NAME) and the replicates "
                      "folder it was written from, whose runs on the same seed the default's are compared with "
                      "(repeatable)"),
             arg("--snapshot", default="docs/results", metavar="DIR", help="default: docs/results"),
             arg("--coverage", default="docs/ci_coverage.csv", metavar="CSV", help="default: docs/ci_coverage.csv"),
             arg("--readme", nargs="*", default=["README.md", "docs/results.md"], metavar="FILE",
                 help="the files whose table blocks are written (default: README.md docs/results.md; "
                      "none: only the snapshot, e.g. an earlier default's sub-snapshot)"),
             arg("--tuning", default="docs/tuning.yaml", metavar="YAML",
                 help="the tuning record: only its report_seeds may reach the README (default: docs/tuning.yaml)"),
             arg("--check", action="store_true", help="fail when a block differs from the snapshot"),
             arg("--rerun-note", metavar="TEXT",
                 help="with --replicates into a rerun's sub-snapshot: what its artifacts cannot record (the machine, "
                      "an imitated CPU), kept in its meta.json as rerun.note")), prints=True),
    Command("extrapolation-check", "leakk.report.readme_tables:extrapolation_check",
            "the extrapolation hold-out check over several results trees",
            "Fits on the first n/4 samples of every question and predicts leak@n, per model, decoding and judge of "
            "each tree; prints the claim that held (|error| <= x in a share of rows).",
            (arg("results", nargs="+", metavar="DIR", help="results folders, e.g. results/replicates/seed_*/results"),
             arg("--share", type=float, default=0.95, help="share of rows the claim covers (default 0.95)"),
             arg("--out", metavar="CSV", help="also write every row here")), prints=True),
    Command("replicates-table", "leakk.stages.replicates:replicates_table",
            "aggregate finished replicate seeds: mean ± sd beside the pooled CI",
            "Reads <out-dir>/seed_<s>/results (leak_at_k.parquet, utility.csv, judgments/, data/) and writes "
            "<out-dir>/leak_at_k.parquet/.csv, utility.csv, summary.md and figures/leak_at_k_<judge>.png.",
            (arg("--out-dir", default=L.replicates, metavar="DIR",
                 help=f"the folder of seed_<s>/ folders (default: {L.replicates})"),
             arg("--seed", type=int, action="append", metavar="S",
                 help="aggregate this seed (repeatable; default: `replicates:`, else every seed_<s> found)"))),
]
COMMANDS: dict[str, Command] = {c.name: c for c in _COMMANDS}


# --------------------------------------------------------------------------------------- stages

@dataclass(frozen=True)
class Out:
    """A Snakemake output: a file, a ``directory`` or a ``temp`` file; ``report`` = (caption
    file under report/, category, subcategory) for ``snakemake --report``."""

    path: str
    kind: str = "file"
    report: tuple[str, str, str | None] | None = None


Jobs = Callable[[Params], list[dict[str, Any]]]
Input = str | Callable[[Params, Any], str | list[str]]


@dataclass(frozen=True)
class Rule:
    """A stage's Snakemake jobs. ``jobs`` lists every job's wildcards (``rule all`` asks for their
    outputs); ``args`` gives each command argument as a Snakemake shell value (``{input.data}``,
    ``{wildcards.model}``) or, as a function of (params, wildcards), a job param."""

    jobs: Jobs
    inputs: dict[str, Input]
    #: named outputs, or a function of params giving them (one job writes a file per decoding)
    outputs: dict[str, Out] | Callable[[Params], dict[str, Out]]
    args: dict[str, Any]
    #: the placeholders of ``reads`` for a job (default: its wildcards)
    names: Callable[[Params, Any], dict[str, str]] | None = None
    enabled: Callable[[Params], bool] = lambda p: True
    #: Snakemake's priority of a job (a function of params and wildcards): see :func:`_chain`
    priority: Callable[[Params, Any], int] | None = None

    def outs(self, p: Params) -> dict[str, Out]:
        """The named outputs of this rule's jobs under params ``p``."""
        return self.outputs(p) if callable(self.outputs) else self.outputs


@dataclass(frozen=True)
class Dvc:
    """A stage's dvc.yaml form (DVC's templating: ``${item}``, ``${key}``, ``${item.x}``).

    ``foreach``/``matrix`` (functions of params) expand it; ``args`` gives each command argument;
    ``names`` the DVC expressions of ``reads``' placeholders; ``reads`` overrides the stage's
    keys where DVC's granularity differs (one DVC stage samples every decoding of a model)."""

    args: dict[str, str]
    deps: tuple[str, ...] = ()
    outs: tuple[Any, ...] = ()
    metrics: tuple[Any, ...] = ()
    foreach: Callable[[Params], Any] | None = None
    matrix: Callable[[Params], dict[str, list]] | None = None
    names: dict[str, str] = field(default_factory=dict)
    reads: tuple[str, ...] | Callable[[Params], list[str]] | None = None
    name: str | None = None  # the dvc.yaml stage name (default: the stage's)
    command: str | None = None  # default: the stage's
    then: str = ""  # another command run after it, in the same stage
    enabled: Callable[[Params], bool] | None = None  # default: the Snakemake rule's


@dataclass(frozen=True)
class Stage:
    """A node of the DAG (a Snakemake rule, a dvc.yaml stage)."""

    name: str
    command: str  # a key of COMMANDS
    reads: tuple[str, ...]
    snakemake: Rule | None
    dvc: Dvc | None
    #: keys a Snakemake job does not depend on as a whole (a shard job samples one decoding, its
    #: wildcard; how many shards there are changes no completion)
    per_job: tuple[str, ...] = ()
    #: sub-keys of a ``reads`` entry a Snakemake job does not depend on
    ignores: tuple[str, ...] = ()
    #: runs a model, so it asks for a GPU when params put it on one ("judge": when the job's judge
    #: runs a model)
    model: bool | str = False
    threads: int = 0  # > 0: the job passes --threads (CPU threads for torch)
    mem_mb: int = 2000
    runtime: int | Callable[[Params], int] = 30  # minutes, for cluster schedulers (or a function of params)


def _report(caption: str, category: str, sub: str | None = None) -> tuple[str, str, str | None]:
    return (f"report/{caption}.rst", category, sub)


def _one(p: Params) -> list[dict[str, Any]]:
    return [{}]


def _per(key: str, values: Callable[[Params], list]) -> Jobs:
    return lambda p: [{key: v} for v in values(p)]


def _rules(p: Params) -> dict[str, Any]:
    return p.get("rule") or {}


def _hub_jobs(p: Params) -> list[dict[str, str]]:
    return [dict(zip(("kind", "name"), k.split("/", 1))) for k, src in hub_sources(p).items()
            if not is_local(src["repo"])]


def _model_input(p: Params, w: Any) -> str:
    """The folder a model's samples are drawn from (a RULE run: its last round's folder)."""
    rule = _rules(p).get(w.model)
    return L.rule_round(w.model, rule["rounds"]) if rule else model_folder(p, w.model)


def _chain(p: Params, base: str | None = None) -> int:
    """How many model jobs must still run one after another once a job is done: the longest
    chain below it (unlearn → RULE rounds → sample). As Snakemake priorities these start the
    longest chain first: on a few cores, a chain left to the end runs alone while cores idle
    (the default's 2 cores: the RULE rounds after a late unlearn run). ``base``: below the run
    or model named, RULE runs from it; ``None``: below the full model, any RULE run."""
    rounds = [c["rounds"] for c in _rules(p).values() if base is None or c["base"] == base]
    return 1 + max(rounds, default=0)


def _round_judgments(p: Params, w: Any) -> list[str]:
    """The main pipeline's judgments a round's evaluation reads: round 0 is the base run and
    the last round the RULE model itself, both sampled and judged by the main DAG already."""
    cfg, r = p["rule"][w.name], int(w.round)
    model = cfg["base"] if r == 0 else w.name if r == cfg["rounds"] else None
    if model is None:
        return []
    est = p["estimate"]
    return [L.judgments(model, est["headline_judge"], est["headline_decoding"]),
            L.judgments(model, utility_judge(p), "greedy")]


def _all_judgments(p: Params, w: Any) -> list[str]:
    return [L.judgments(m, j, d) for m in model_names(p) for j in p["judge"] for d in decoding_names(p)]


def _evaluated(p: Params) -> dict[str, dict[str, str]]:
    """Every model → its sampled folder and the DVC dependency that stands for it."""
    rules = _rules(p)
    return {m: {"dir": sampled_folder(p, m), "dep": L.rule_dir(m) if m in rules else model_folder(p, m)}
            for m in model_names(p)}


def _attacks(p: Params) -> dict[str, dict[str, str]]:
    """Every attacked model → its attack, source folder, the DVC dependency standing for it, output."""
    rules = _rules(p)
    return {name: {"attack": a, "dir": sampled_folder(p, m), "dep": L.rule_dir(m) if m in rules else model_folder(p, m),
                   "out": L.attacked(a, m)} for name, (m, a) in attacked_models(p).items()}


def _grid(p: Params) -> bool:
    from leakk.report.figures import decoding_grid

    return decoding_grid(decoding_names(p)) is not None


def _attacked(p: Params) -> bool:
    return bool(attacked_models(p))


def _calibrated(p: Params) -> bool:
    return "fact" in p["judge"] and len(p["judge"]) > 1


def _sharded(p: Params) -> bool:
    return p["sample"]["shards"] > 1


def _decoding_outputs(p: Params) -> dict[str, Out]:
    """A model's samples file of every decoding, named for Snakemake (``t1_0_p1_0``)."""
    names = decoding_names(p)
    keys = [re.sub(r"\W", "_", d) for d in names]
    if len(set(keys)) < len(keys):  # decoding names are made from floats: never seen, but never silent
        raise ParamsError(f"sample.decodings: two decodings share a Snakemake output name ({names})")
    return {k: Out(L.samples("{model}", d)) for k, d in zip(keys, names)}


_SAMPLE = ("prompt_template", "sample.backend", "sample.options", "sample.n", "sample.max_new_tokens", "sample.seed",
           "sample.question_column")
_FULL = "${full_dir}"  # the folder unlearning starts from (dvc.yaml vars: full_dir)
_TRUST = "3. Why it leaks"

_STAGES = [
    # DVC's first stage: a bad params edit (or `dvc exp run -S`) fails here with leakk's one-line error,
    # before DVC removes any output; the Snakefile validates when it loads
    Stage("validate", "validate", (), snakemake=None,
          dvc=Dvc({"stamp": L.params_stamp}, outs=({L.params_stamp: {"cache": False, "persist": True}},))),
    # one hub source per Snakemake job; one DVC stage fetches them all (the folders are not DVC
    # outputs: multi-GB weights never go into .dvc/cache; downloads.json records the commits)
    Stage("download", "download", ("{source}",), mem_mb=4000, runtime=240,
          snakemake=Rule(_hub_jobs, {}, {"out": Out(L.hub("{kind}/{name}"), "directory")},
                         {"key": "{wildcards.kind}/{wildcards.name}", "hub_dir": L.hub_dir},
                         names=lambda p, w: {"source": source_param(f"{w.kind}/{w.name}")}),
          dvc=Dvc({"hub_dir": L.hub_dir, "record": L.downloads}, deps=(L.params_stamp,),
                  outs=({L.downloads: {"cache": False}},),
                  reads=lambda p: sorted({source_param(k) for k in hub_sources(p)}))),
    Stage("data", "data", ("seed", "data"),
          snakemake=Rule(_one, {"hub": lambda p, w: [str(f) for f in [dataset_folder(p)] if f is not None]},
                         {"out": Out(L.benchmark)}, {"out": "{output.out}"}),
          dvc=Dvc({"out": L.benchmark}, deps=(L.params_stamp, L.downloads), outs=(L.benchmark,))),
    Stage("finetune", "finetune", ("seed", "prompt_template", "model", "finetune", "training"), model=True,
          threads=1, mem_mb=8000, runtime=240,
          snakemake=Rule(_per("which", trained_models),
                         {"data": L.benchmark, "base": lambda p, w: [f for f in [base_folder(p)] if f]},
                         {"out": Out(L.model("{which}"), "directory")},
                         {"data": "{input.data}", "which": "{wildcards.which}", "out": "{output.out}"},
                         priority=lambda p, w: 1 + _chain(p) if w.which == "full" else _chain(p, w.which)),
          dvc=Dvc({"data": L.benchmark, "which": "${item}", "out": L.model("${item}")}, deps=(L.benchmark,),
                  outs=(L.model("${item}"),), foreach=trained_models)),
    # (a stop criterion's judge is part of ``unlearn.{name}.stop``, not of the judge section)
    Stage("unlearn", "unlearn", ("seed", "prompt_template", "unlearn.{name}", "training"), model=True, threads=1,
          mem_mb=8000, runtime=240,
          snakemake=Rule(_per("name", lambda p: list(p["unlearn"])),
                         {"data": L.benchmark, "full": lambda p, w: model_folder(p, "full")},
                         {"out": Out(L.model("{name}"), "directory")},
                         {"data": "{input.data}", "name": "{wildcards.name}", "model_dir": "{input.full}",
                          "out": "{output.out}"}, priority=lambda p, w: _chain(p, w.name)),
          dvc=Dvc({"data": L.benchmark, "name": "${item}", "model_dir": _FULL, "out": L.model("${item}")},
                  deps=(L.benchmark, _FULL), outs=(L.model("${item}"),), foreach=lambda p: list(p["unlearn"]),
                  names={"name": "${item}"})),
    # RULE's rounds are unrolled in Snakemake (round r trains from round r-1's folder); DVC runs a
    # run's rounds in one stage whose output persists and keeps the rounds finished with the same
    # parameters (the fingerprint: the hash of exactly these reads)
    Stage("rule_round", "rule-round", ROUND_READS, ignores=ROUND_IGNORES, model=True, threads=1, mem_mb=8000,
          runtime=240,
          snakemake=Rule(lambda p: [{"name": n, "round": r} for n, c in _rules(p).items()
                                    for r in range(1, c["rounds"] + 1)],
                         {"data": L.benchmark, "prev": lambda p, w: round_folder(p, w.name, int(w.round) - 1),
                          "reference": lambda p, w: model_folder(p, "full")},
                         {"out": Out(L.rule_round("{name}", "{round}"), "directory")},
                         {"data": "{input.data}", "name": "{wildcards.name}", "round": "{wildcards.round}",
                          "prev": "{input.prev}", "out": "{output.out}", "reference": "{input.reference}"},
                         names=lambda p, w: round_names(p, w.name),
                         priority=lambda p, w: 1 + p["rule"][w.name]["rounds"] - int(w.round)),
          dvc=Dvc({"data": L.benchmark, "name": "${key}", "model_dir": L.model("${item.base}"),
                   "out": L.rule_dir("${key}"), "reference": _FULL},
                  deps=(L.benchmark, L.model("${item.base}"), _FULL),
                  outs=({L.rule_dir("${key}"): {"persist": True}},),
                  foreach=lambda p: {n: {"base": c["base"], "judge": c["judge"], "rounds": c["rounds"]}
                                     for n, c in _rules(p).items()},
                  names={"name": "${key}", "base": "${item.base}", "judge": "${item.judge}"},
                  reads=ROUND_READS, name="rule", command="rule")),
    # each round evaluated on the held-out phrasing with the evaluation seed; round 0 and the last
    # round read the main pipeline's judgments of the base run and the RULE model
    Stage("rule_eval", "rule-eval", (*_SAMPLE, "judge.{headline_judge}", "judge.{utility_judge}",
                                     "estimate.headline_judge", "estimate.headline_decoding", "estimate.bootstrap",
                                     "estimate.ci", "estimate.seed", "estimate.ci_method"),
          model=True, threads=1, mem_mb=8000, runtime=120,
          snakemake=Rule(lambda p: [{"name": n, "round": r} for n, c in _rules(p).items()
                                    for r in range(c["rounds"] + 1)],
                         {"data": L.benchmark, "model": lambda p, w: round_folder(p, w.name, int(w.round)),
                          "judgments": _round_judgments},
                         {"out": Out(L.rule_eval("{name}", "{round}"))},
                         {"data": "{input.data}", "rounds": "{input.model}", "name": "{wildcards.name}",
                          "judgments": L.judgments_dir, "first_round": "{wildcards.round}",
                          "out_dir": L.rule_eval_dir("{wildcards.name}")}),
          dvc=Dvc({"data": L.benchmark, "rounds": f"{L.model('${item.base}')} {L.rule_dir('${key}')}/round_*",
                   "name": "${key}", "judgments": L.judgments_dir, "first_round": "0",
                   "out_dir": L.rule_eval_dir("${key}")},
                  deps=(L.benchmark, L.model("${item.base}"), L.rule_dir("${key}"),
                        L.model_judgments("${item.base}"), L.model_judgments("${key}")),
                  outs=(L.rule_eval_dir("${key}"), L.figure("${key}_rounds")),
                  foreach=lambda p: {n: {"base": c["base"]} for n, c in _rules(p).items()},
                  then=(f"leakk rule-report --rounds {L.rule_dir('${key}')}/round_* --evals "
                        f"{L.rule_eval_dir('${key}')}/round_*.parquet --out-log {L.rule_rounds('${key}')} "
                        f"--out-figure {L.figure('${key}_rounds')}"))),
    # DVC writes the round log inside the rule_eval stage (one stage per run)
    Stage("rule_report", "rule-report", (),
          snakemake=Rule(_per("name", lambda p: list(_rules(p))),
                         {"rounds": lambda p, w: [L.rule_round(w.name, r)
                                                  for r in range(1, p["rule"][w.name]["rounds"] + 1)],
                          "evals": lambda p, w: [L.rule_eval(w.name, r) for r in range(p["rule"][w.name]["rounds"] + 1)]},
                         {"log": Out(L.rule_rounds("{name}")),
                          "figure": Out(L.figure("{name}_rounds"), report=_report("rule_rounds", "5. RULE"))},
                         {"rounds": "{input.rounds}", "evals": "{input.evals}", "out_log": "{output.log}",
                          "out_figure": "{output.figure}"}),
          dvc=None),
    # attacks between unlearning and sampling: an attacked copy of a model is one more model
    Stage("attack", "attack", ("attack.{name}", "prompt_template", "training"), model=True, threads=1,
          mem_mb=8000, runtime=60,
          snakemake=Rule(lambda p: [{"name": a, "model": m} for m, a in attacked_models(p).values()],
                         {"data": L.benchmark, "model": _model_input},
                         {"out": Out(L.attacked("{name}", "{model}"), "directory")},
                         {"data": "{input.data}", "name": "{wildcards.name}",
                          "model_dir": lambda p, w: sampled_folder(p, w.model), "out": "{output.out}"}),
          dvc=Dvc({"data": L.benchmark, "name": "${item.attack}", "model_dir": "${item.dir}", "out": "${item.out}"},
                  deps=(L.benchmark, "${item.dep}"), outs=("${item.out}",), foreach=_attacks,
                  names={"name": "${item.attack}"})),
    # one job per model samples every decoding (one process and one model load, not one per
    # decoding: in the miniature the import and load cost as much as drawing a decoding), in
    # Snakemake and DVC alike; with sample.shards = S > 1, Snakemake runs S shard jobs per (model,
    # decoding) and a merge instead (each completion depends only on (seed, qid, sample_idx): the
    # merge equals one job)
    # (its run time, for a cluster, grows with the decodings it draws); editing one decoding
    # re-samples every decoding, as in DVC
    Stage("sample", "sample", (*_SAMPLE, "sample.decodings", "sample.shards"),
          per_job=("sample.shards",), model=True, threads=1, mem_mb=8000,
          runtime=lambda p: 120 * len(decoding_names(p)),
          snakemake=Rule(_per("model", model_names), {"data": L.benchmark, "model": _model_input},
                         _decoding_outputs,
                         {"data": "{input.data}", "model": "{wildcards.model}",
                          "model_dir": lambda p, w: sampled_folder(p, w.model), "decoding": "all",
                          "shard": "0", "shards": "1", "out": L.model_samples("{wildcards.model}")},
                         enabled=lambda p: not _sharded(p)),
          dvc=Dvc({"data": L.benchmark, "model": "${key}", "model_dir": "${item.dir}", "decoding": "all",
                   "out": L.model_samples("${key}")},
                  deps=(L.benchmark, "${item.dep}"), outs=(L.model_samples("${key}"),), foreach=_evaluated,
                  reads=(*_SAMPLE, "sample.decodings"), enabled=lambda p: True)),
    Stage("sample_shard", "sample", (*_SAMPLE, "sample.decodings", "sample.shards"),
          per_job=("sample.decodings", "sample.shards"), model=True, threads=1, mem_mb=8000, runtime=240,
          snakemake=Rule(lambda p: [{"model": m, "decoding": d, "shard": s} for m in model_names(p)
                                    for d in decoding_names(p) for s in range(p["sample"]["shards"])],
                         {"data": L.benchmark, "model": _model_input},
                         {"out": Out(L.sample_shard("{model}", "{decoding}", "{shard}"), "temp")},
                         {"data": "{input.data}", "model": "{wildcards.model}",
                          "model_dir": lambda p, w: sampled_folder(p, w.model), "decoding": "{wildcards.decoding}",
                          "shard": "{wildcards.shard}", "shards": lambda p, w: str(p["sample"]["shards"]),
                          "out": "{output.out}"},
                         enabled=_sharded),
          dvc=None),
    Stage("merge_samples", "merge", (),
          snakemake=Rule(lambda p: [{"model": m, "decoding": d} for m in model_names(p) for d in decoding_names(p)],
                         {"shards": lambda p, w: [L.sample_shard(w.model, w.decoding, s)
                                                  for s in range(p["sample"]["shards"])]},
                         {"out": Out(L.samples("{model}", "{decoding}"))},
                         {"shards_in": "{input.shards}", "out": "{output.out}"}, enabled=_sharded),
          dvc=None),
    # one job per (model, judge, decoding), reading only its judge's entry: editing one judge (a
    # ROUGE threshold) re-runs that judge's files, never another judge (a paid LLM judge)
    Stage("judge", "judge", ("judge.{judge}",), model="judge",
          snakemake=Rule(lambda p: [{"model": m, "judge": j, "decoding": d} for m in model_names(p)
                                    for j in p["judge"] for d in decoding_names(p)],
                         {"data": L.benchmark, "samples": L.samples("{model}", "{decoding}")},
                         {"out": Out(L.judgments("{model}", "{judge}", "{decoding}"))},
                         {"data": "{input.data}", "samples": "{input.samples}", "judge": "{wildcards.judge}",
                          "out": "{output.out}"}),
          dvc=Dvc({"data": L.benchmark, "samples": L.model_samples("${item.model}"), "judge": "${item.judge}",
                   "out": L.model_judgments("${item.model}", "${item.judge}")},
                  deps=(L.benchmark, L.model_samples("${item.model}")),
                  outs=(L.model_judgments("${item.model}", "${item.judge}"),),
                  matrix=lambda p: {"model": model_names(p), "judge": list(p["judge"])},
                  names={"judge": "${item.judge}"})),
    # rule: rule_vs_base.csv pairs each RULE run with its base (rule.<name>.base); attack:
    # attacks.csv pairs each attacked model with the same model unattacked
    Stage("estimate", "estimate", ("estimate", "sample.n", "sample.decodings", "judge", "rule", "attack"),
          snakemake=Rule(_one, {"data": L.benchmark, "judgments": _all_judgments},
                         {"table": Out(L.file("leak_at_k.parquet")), "csv": Out(L.file("leak_at_k.csv")),
                          "utility": Out(L.file("utility.csv")), "summary": Out(L.file("summary.md")),
                          "paired": Out(L.file("rule_vs_base.csv")), "attacks": Out(L.file("attacks.csv"))},
                         {"data": "{input.data}", "judgments": L.judgments_dir, "out_dir": L.root}),
          dvc=Dvc({"data": L.benchmark, "judgments": L.judgments_dir, "out_dir": L.root},
                  deps=(L.benchmark, L.judgments_dir),
                  outs=tuple(L.file(f) for f in ("leak_at_k.parquet", "leak_at_k.csv", "utility.csv", "summary.md",
                                                 "rule_vs_base.csv", "attacks.csv")))),
    # judges against fact (ground truth): in Snakemake where a fact judge and another judge exist (the
    # report shows no empty figure); DVC always runs it (an empty table without a fact judge)
    Stage("calibrate", "calibrate", ("estimate.ks", "estimate.headline_decoding", "judge"),
          snakemake=Rule(_one, {"data": L.benchmark, "judgments": _all_judgments},
                         {"table": Out(L.file("calibration.parquet")), "csv": Out(L.file("calibration.csv")),
                          "figure": Out(L.figure("calibration"), report=_report("calibration", "6. Judges"))},
                         {"data": "{input.data}", "judgments": L.judgments_dir, "out_dir": L.root,
                          "figure": "{output.figure}"}, enabled=_calibrated),
          dvc=Dvc({"data": L.benchmark, "judgments": L.judgments_dir, "out_dir": L.root,
                   "figure": L.figure("calibration")}, deps=(L.benchmark, L.judgments_dir), enabled=lambda p: True,
                  outs=(L.file("calibration.parquet"), L.file("calibration.csv"), L.figure("calibration")))),
    Stage("figures", "figures", ("estimate",),
          snakemake=Rule(_per("judge", lambda p: list(p["judge"])), {"leak": L.file("leak_at_k.parquet")},
                         {"curves": Out(L.figure("leak_at_k_{judge}"), report=_report("leak_at_k", "4. leak@k", "{judge}")),
                          "bars": Out(L.figure("greedy_vs_sampled_{judge}"),
                                      report=_report("greedy_vs_sampled", "4. leak@k", "{judge}")),
                          "bars_html": Out(L.figures_dir + "/greedy_vs_sampled_{judge}.html")},
                         {"leak": "{input.leak}", "judge": "{wildcards.judge}", "out_dir": L.figures_dir}),
          dvc=Dvc({"leak": L.file("leak_at_k.parquet"), "judge": "${item}", "out_dir": L.figures_dir},
                  deps=(L.file("leak_at_k.parquet"),),
                  outs=(L.figure("leak_at_k_${item}"), L.figure("greedy_vs_sampled_${item}"),
                        L.figures_dir + "/greedy_vs_sampled_${item}.html"),
                  foreach=lambda p: list(p["judge"]))),
    # numbers a reviewer trusts: the exact leak bound (no sampling), guarantees, extrapolation
    Stage("bounds", "bounds", ("prompt_template", "sample.max_new_tokens", "sample.question_column",
                               "sample.decodings"), model=True, threads=1, mem_mb=8000, runtime=120,
          snakemake=Rule(_per("model", model_names), {"data": L.benchmark, "model": _model_input},
                         {"out": Out(L.bounds("{model}"))},
                         {"data": "{input.data}", "model": "{wildcards.model}",
                          "model_dir": lambda p, w: sampled_folder(p, w.model), "out": "{output.out}"}),
          dvc=Dvc({"data": L.benchmark, "model": "${key}", "model_dir": "${item.dir}", "out": L.bounds("${key}")},
                  deps=(L.benchmark, "${item.dep}"), outs=(L.bounds("${key}"),), foreach=_evaluated)),
    Stage("bounds_table", "bounds-table", ("estimate",),
          snakemake=Rule(_one, {"data": L.benchmark, "bounds": lambda p, w: [L.bounds(m) for m in model_names(p)],
                                "leak": L.file("leak_at_k.parquet"),
                                "samples": lambda p, w: [L.samples(m, d) for m in model_names(p)
                                                         for d in decoding_names(p)]},
                         {"table": Out(L.file("bounds.parquet")), "csv": Out(L.file("bounds.csv")),
                          "check": Out(L.file("bounds_check.csv")), "why": Out(L.file("why_leaks.csv")),
                          "figure": Out(L.figure("bound_vs_sampled"), report=_report("bound_vs_sampled",
                                                                                     "2. Exact bound"))},
                         {"data": "{input.data}", "bounds": "{input.bounds}", "leak": "{input.leak}",
                          "samples": L.samples_dir, "out_dir": L.root}),
          dvc=Dvc({"data": L.benchmark, "bounds": f"{L.bounds_dir}/*.parquet", "leak": L.file("leak_at_k.parquet"),
                   "samples": L.samples_dir, "out_dir": L.root},
                  deps=(L.benchmark, L.bounds_dir, L.file("leak_at_k.parquet"), L.samples_dir),
                  outs=(L.file("bounds.parquet"), L.file("bounds.csv"), L.file("bounds_check.csv"),
                        L.file("why_leaks.csv"), L.figure("bound_vs_sampled")))),
    Stage("reliability", "reliability", ("estimate", "sample.n", "sample.decodings", "judge"),
          snakemake=Rule(_one, {"data": L.benchmark, "judgments": _all_judgments, "leak": L.file("leak_at_k.parquet")},
                         {"guarantees": Out(L.file("guarantees.csv")), "extrapolation": Out(L.file("extrapolation.csv")),
                          "check": Out(L.file("extrapolation_check.csv")), "markdown": Out(L.file("reliability.md")),
                          "figure": Out(L.figure("leak_rate_distribution"),
                                        report=_report("leak_rate_distribution", _TRUST)),
                          "curve": Out(L.file("leak_curve.csv")), "metrics": Out(L.file("metrics.json"))},
                         {"data": "{input.data}", "judgments": L.judgments_dir, "leak": "{input.leak}",
                          "out_dir": L.root}),
          dvc=Dvc({"data": L.benchmark, "judgments": L.judgments_dir, "leak": L.file("leak_at_k.parquet"),
                   "out_dir": L.root},
                  deps=(L.benchmark, L.judgments_dir, L.file("leak_at_k.parquet")),
                  outs=(L.file("guarantees.csv"), L.file("extrapolation.csv"), L.file("extrapolation_check.csv"),
                        L.file("reliability.md"), L.figure("leak_rate_distribution"),
                        {L.file("leak_curve.csv"): {"cache": False}}),  # drawn by dvc.yaml's `plots:`
                  metrics=({L.file("metrics.json"): {"cache": False}},))),
    Stage("report_tables", "report-tables", (),
          snakemake=Rule(_one, {"summary": L.file("summary.md"), "bounds": L.file("bounds.csv"),
                                "check": L.file("bounds_check.csv"), "why": L.file("why_leaks.csv"),
                                "reliability": L.file("reliability.md")},
                         {"out": Out(L.file("tables.html"), report=_report("tables", "1. Tables")),
                          "headline": Out(L.file("headline.html"))},
                         {"summary": "{input.summary}", "bounds": "{input.bounds}", "check": "{input.check}",
                          "reliability": "{input.reliability}", "why": "{input.why}", "out": "{output.out}"}),
          dvc=Dvc({"summary": L.file("summary.md"), "bounds": L.file("bounds.csv"), "check": L.file("bounds_check.csv"),
                   "reliability": L.file("reliability.md"), "why": L.file("why_leaks.csv"), "out": L.file("tables.html")},
                  deps=(L.file("summary.md"), L.file("bounds.csv"), L.file("bounds_check.csv"),
                        L.file("why_leaks.csv"), L.file("reliability.md")),
                  outs=(L.file("tables.html"), L.file("headline.html")))),
    # leaked completions beside the greedy answer: the finding on real text
    Stage("report_examples", "report-examples", ("estimate.headline_judge", "estimate.headline_decoding",
                                                 "sample.question_column"),
          snakemake=Rule(_one, {"data": L.benchmark, "judgments": _all_judgments,
                                "samples": lambda p, w: [L.samples(m, d) for m in model_names(p)
                                                         for d in decoding_names(p)]},
                         {"out": Out(L.file("examples.html"), report=_report("examples", "1. Tables"))},
                         {"data": "{input.data}", "samples": L.samples_dir, "judgments": L.judgments_dir,
                          "out": "{output.out}"}),
          dvc=Dvc({"data": L.benchmark, "samples": L.samples_dir, "judgments": L.judgments_dir,
                   "out": L.file("examples.html")},
                  deps=(L.benchmark, L.samples_dir, L.judgments_dir), outs=(L.file("examples.html"),))),
    # the T × top-p heatmap, only where sample.decodings form a grid (configs/decoding_grid.yaml)
    Stage("attack_figure", "attack-figure", ("estimate.headline_judge", "estimate.headline_decoding"),
          snakemake=Rule(_one, {"attacks": L.file("attacks.csv")},
                         {"out": Out(L.figure("attacks"), report=_report("attacks", "4. leak@k"))},
                         {"attacks": "{input.attacks}", "out": "{output.out}"}, enabled=_attacked),
          dvc=Dvc({"attacks": L.file("attacks.csv"), "out": L.figure("attacks")}, deps=(L.file("attacks.csv"),),
                  outs=(L.figure("attacks"),), enabled=_attacked)),
    Stage("decoding_heatmap", "heatmap", ("estimate.ks",),
          snakemake=Rule(_per("judge", lambda p: list(p["judge"])), {"leak": L.file("leak_at_k.parquet")},
                         {"out": Out(L.figure("decoding_heatmap_{judge}"),
                                     report=_report("decoding_heatmap", "4. leak@k", "{judge}"))},
                         {"leak": "{input.leak}", "judge": "{wildcards.judge}", "out": "{output.out}"},
                         enabled=_grid),
          dvc=Dvc({"leak": L.file("leak_at_k.parquet"), "judge": "${item}", "out": L.figure("decoding_heatmap_${item}")},
                  deps=(L.file("leak_at_k.parquet"),), outs=(L.figure("decoding_heatmap_${item}"),),
                  foreach=lambda p: list(p["judge"]))),
]
STAGES: dict[str, Stage] = {s.name: s for s in _STAGES}


# ------------------------------------------------------------------------------------- params

def placeholders(params: Params, **names: str) -> dict[str, str]:
    """Values for every placeholder: the given names plus the estimate's judges."""
    out = {"headline_judge": params["estimate"]["headline_judge"], "utility_judge": utility_judge(params)}
    if "name" in names and names["name"] in _rules(params):
        out.update(round_names(params, names["name"]))
    out.update(names)
    return out


def stage_params(params: Params, stage: str, **names: str) -> dict[str, Any]:
    """``{key: value}`` of everything one Snakemake job of ``stage`` reads (the defaults-filled
    params, so a value left to its default is tracked too)."""
    spec = STAGES[stage]
    keys = [k for k in spec.reads if k not in spec.per_job]
    return select(params, keys, placeholders(params, **names), spec.ignores)


def gpu_requested(device: str) -> int:
    """1 where a model stage will run on a GPU: ``cuda…``, or ``auto`` on a machine with an
    NVIDIA driver (checked without importing torch, so the DAG builds fast)."""
    if device.startswith("cuda"):
        return 1
    return int(device == "auto" and shutil.which("nvidia-smi") is not None)


def judge_uses_device(params: Params, label: str) -> bool:
    """Whether judge ``label`` runs a model on the device (nli, embedding; not fact, rougeL, llm)."""
    from leakk.judges import JUDGES
    from leakk.judges.run import judge_type

    return bool(JUDGES.get(judge_type(params, label)).uses_device)


def stage_resources(params: Params, stage: str) -> dict[str, Any]:
    """Scheduler resources of ``stage``'s jobs: memory, runtime and, for model stages on a GPU,
    ``gpu: 1`` (the SLURM executor turns it into ``--gpus=1``); for the judge stage a function
    of the job's ``{judge}`` wildcard."""
    spec = STAGES[stage]
    gpu: Any = gpu_requested(params["device"]) if spec.model else 0
    if spec.model == "judge":
        on_gpu = gpu

        def gpu(wildcards) -> int:  # noqa: F811 - per job: does this job's judge run a model?
            return on_gpu * judge_uses_device(params, wildcards.judge)
    runtime = spec.runtime(params) if callable(spec.runtime) else spec.runtime
    return {"mem_mb": spec.mem_mb, "runtime": runtime, "gpu": gpu}

# leakk: the whole leak@k experiment as one DAG.  `snakemake --cores all`
# Rules only wire `leakk <stage>` CLI calls; the logic lives in src/leakk.
import shlex
import sys

from leakk.config import (BASE_KEY, base_folder, decoding_names, hub_sources, is_local, model_folder, model_names,
                          source_param, trained_models, utility_judge, workflow_params)
from leakk.hub import dataset_folder
from leakk.errors import LeakkError, debug, unexpected_line
from leakk.params_checks import redact
from leakk.pipeline import stage_params, stage_resources
from leakk.rule import main_judgments, round_model_name


report: "report/workflow.rst"


# The params file is params.yaml, or one complete preset (`--configfile configs/x.yaml`).
# leakk reads and validates it itself (no `configfile:` directive), so a bad file or value
# fails here with one line naming the key, before any job is scheduled or output deleted;
# every job then reads that very file, and `--config` overrides it would not see are refused.
# The device and packages the params need are checked here too, unless a cluster executor
# runs the jobs on other machines (each job then checks its own).
try:
    PARAMS_FILE, P = workflow_params(config, workflow.overwrite_configfiles, sys.argv)
except LeakkError as err:
    sys.exit(f"leakk: error: {redact(str(err))}")
except Exception as err:  # a bug, not a bad value: still one line (LEAKK_DEBUG=1: the traceback)
    if debug():
        raise
    sys.exit(f"leakk: error: {redact(unexpected_line(err))}")
config.update(P)  # the validated params, defaults filled in (rules read P)

MODELS = model_names(P)
DECODINGS = decoding_names(P)
RULES = P.get("rule") or {}
JUDGES = list(P["judge"])
# hub sources fetched by the download rule (a local folder in place of a hub id needs none)
HUB_KEYS = [k for k, src in hub_sources(P).items() if not is_local(src["repo"])]
TRAINED_BASES = trained_models(P)  # the rest are `models:` entries, evaluated as they are
LEAKK = f"leakk --params {shlex.quote(PARAMS_FILE)}"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/unlearn.smk"
include: "rules/rule.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/estimate.smk"
include: "rules/calibrate.smk"
include: "rules/figures.smk"
include: "rules/trust.smk"


rule all:
    default_target: True
    input:
        "results/leak_at_k.parquet",
        "results/leak_at_k.csv",
        "results/utility.csv",
        "results/summary.md",
        figure_files(),
        calibration_files(),
        expand("results/rule_eval/{name}/rounds.parquet", name=RULES),
        expand("results/figures/{name}_rounds.png", name=RULES),
        trust_files(),


onsuccess:
    # A full run leaves every output fresh: record it in dvc.lock so `dvc status` knows it
    # (dvc.yaml reads params.yaml, so a run of another params file is not DVC's to record).
    full_run = {job.rule.name for job in workflow.dag.targetjobs} == {"all"}
    if full_run and PARAMS_FILE == "params.yaml" and Path(".dvc").is_dir():
        shell(f"{LEAKK} dvc-record > results/logs/dvc_record.log 2>&1 || echo 'leakk: dvc-record failed "
              "(results/logs/dvc_record.log); dvc status does not know this run' >&2")
    summary = Path("results/summary.md")
    if summary.exists():
        print("\n" + summary.read_text())

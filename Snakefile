# leakk: the whole leak@k experiment as one DAG.  `snakemake --cores all`
# The rules are the stage table's (leakk.workflow.table): each wires one `leakk <command>` call;
# the logic lives in src/leakk.
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version

from leakk.config import workflow_params
from leakk.core.checks import redact
from leakk.core.errors import LeakkError, debug, unexpected_line
from leakk.workflow.snakemake import rules as snakemake_rules, targets

min_version("8.0")


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

LEAKK = f"leakk --params {shlex.quote(PARAMS_FILE)}"


include: "rules/common.smk"
include: "rules/stages.smk"


rule all:
    default_target: True
    input:
        targets(P),


onsuccess:
    # A full run leaves every output fresh: record it in dvc.lock so `dvc status` knows it
    # (dvc.yaml reads params.yaml, so a run of another params file is not DVC's to record).
    full_run = {job.rule.name for job in workflow.dag.targetjobs} == {"all"}
    if full_run and PARAMS_FILE == "params.yaml" and Path(".dvc").is_dir():
        shell(f"{LEAKK} dvc-record > results/logs/dvc_record.log 2>&1 || echo 'leakk: dvc-record failed "
              "(results/logs/dvc_record.log); dvc status does not know this run' >&2")
    summary = Path("results/summary.md")
    if summary.exists():
        print(f"\n{summary.read_text()}")

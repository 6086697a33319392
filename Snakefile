# leakk: the whole leak@k experiment as one DAG.  `snakemake --cores all`
# Rules only wire `leakk <stage>` CLI calls; the logic lives in src/leakk.
import shlex
import sys

from leakk.config import decoding_names, model_names, utility_judge, workflow_params
from leakk.errors import ParamsError


# The params file is params.yaml, or one complete preset (`--configfile configs/x.yaml`).
# leakk reads and validates it itself (no `configfile:` directive), so a bad file or value
# fails here with one line naming the key, before any job is scheduled or output deleted;
# every job then reads that very file, and `--config` overrides it would not see are refused.
try:
    PARAMS_FILE, P = workflow_params(config, workflow.overwrite_configfiles)
except ParamsError as err:
    sys.exit(f"leakk: error: {err}")
config.update(P)  # the validated params, defaults filled in (rules read P)

MODELS = model_names(P)
DECODINGS = decoding_names(P)
RULES = P.get("rule") or {}
JUDGES = list(P["judge"])
UTILITY_JUDGE = utility_judge(P)
LEAKK = f"leakk --params {shlex.quote(PARAMS_FILE)}"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/unlearn.smk"
include: "rules/rule.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/estimate.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        "results/leak_at_k.parquet",
        "results/leak_at_k.csv",
        "results/utility.csv",
        "results/summary.md",
        figure_files(),
        expand("results/rule_eval/{name}/rounds.parquet", name=RULES),
        expand("results/figures/{name}_rounds.png", name=RULES),


onsuccess:
    summary = Path("results/summary.md")
    if summary.exists():
        print("\n" + summary.read_text())

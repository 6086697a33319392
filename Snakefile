# leakk: the whole leak@k experiment as one DAG.  `snakemake --cores all`
# Rules only wire `leakk <stage>` CLI calls; the logic lives in src/leakk.
import sys

import yaml

from leakk.config import decoding_names, model_names, utility_judge, validate_params
from leakk.errors import ParamsError


configfile: "params.yaml"
report: "report/workflow.rst"


# Validate before building the DAG: one line naming the key and the rule, no work done.
try:
    P = validate_params(config, "params.yaml")
except ParamsError as err:
    sys.exit(f"leakk: error: {err}")
# Every job reads params.yaml itself, so overrides (--config, another --configfile) that
# the jobs would not see are refused rather than silently ignored.
if config != yaml.safe_load(open("params.yaml")):
    sys.exit("leakk: error: the config differs from params.yaml; edit params.yaml instead of overriding it")

MODELS = model_names(P)
DECODINGS = decoding_names(P)
RULES = P.get("rule") or {}
JUDGES = list(P["judge"])
UTILITY_JUDGE = utility_judge(P)
LEAKK = "leakk --params params.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/unlearn.smk"
include: "rules/rule.smk"
include: "rules/sample.smk"
include: "rules/judge.smk"
include: "rules/estimate.smk"
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
        expand("results/rule_eval/{name}/rounds.parquet", name=RULES),
        expand("results/figures/{name}_rounds.png", name=RULES),
        trust_files(),


onsuccess:
    summary = Path("results/summary.md")
    if summary.exists():
        print("\n" + summary.read_text())

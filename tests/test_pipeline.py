"""One declaration of every stage (leakk.workflow.table): the CLI, the Snakemake rules and
dvc.yaml derive from it, the Snakemake jobs take their params from it, and execution settings
are never part of what a stage reads."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import yaml

from conftest import MICRO, ROOT, write_params
from leakk.cli import build_parser
from leakk.config import validate_params
from leakk.core.params import fingerprint
from leakk.workflow.dvc import document
from leakk.workflow.snakemake import rules, shell, targets
from leakk.workflow.table import COMMANDS, EXECUTION, STAGES, gpu_requested, stage_params, stage_resources


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _declared(stage: dict) -> list[str]:
    body = stage.get("do", stage)
    keys = []
    for entry in body.get("params", []):
        keys.extend(entry if isinstance(entry, dict) else [entry])
    return keys


def test_every_command_is_a_subcommand_and_every_stage_runs_one():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for stage in STAGES.values():
        assert stage.command in COMMANDS, stage.name
        if stage.dvc and stage.dvc.command:
            assert stage.dvc.command in COMMANDS
        for form in (stage.snakemake, stage.dvc):  # every argument an engine passes is the command's
            if form is not None:
                command = COMMANDS[getattr(form, "command", None) or stage.command]
                assert set(form.args) <= set(command.dests), (stage.name, set(form.args) - set(command.dests))


def test_every_stage_runs_in_both_engines_or_says_why():
    """Snakemake-only: the unrolled RULE round log (DVC writes it inside rule_eval) and sample
    shards (DVC samples a model's decodings in one stage); DVC-only: the params check (the
    Snakefile validates when it loads)."""
    only_snakemake = {s.name for s in STAGES.values() if s.dvc is None}
    only_dvc = {s.name for s in STAGES.values() if s.snakemake is None}
    assert only_snakemake == {"rule_report", "sample_shard", "merge_samples"}
    assert only_dvc == {"validate"}


def test_every_dvc_stage_declares_what_the_table_says():
    p = validate_params(MICRO)
    dvc = _dvc_stages()
    # a stage with nothing to do under params.yaml is absent: no decoding grid, no attack entries
    assert set(dvc) == {s.dvc.name or s.name for s in STAGES.values() if s.dvc} - {"decoding_heatmap", "attack", "attack_figure"}
    assert _declared(dvc["unlearn"]) == ["seed", "prompt_template", "unlearn.${item}", "training"]
    assert _declared(dvc["judge"]) == ["judge.${item.judge}"]
    # the RULE stage reads what a round reads (placeholders in DVC's syntax), rounds included:
    # `leakk rule` itself keeps the rounds finished with the same fingerprint
    assert _declared(dvc["rule"]) == ["seed", "prompt_template", "rule.${key}", "unlearn.${item.base}",
                                      "judge.${item.judge}", "sample.backend", "training"]  # options: default
    # {headline_judge} is filled in; an estimate key left to its default is not declared
    assert "judge.fact" in _declared(dvc["rule_eval"]) and "estimate.ci_method" not in _declared(dvc["rule_eval"])
    # (sample.options left to its default, {}, is not in params.yaml: DVC cannot declare it)
    assert set(stage_params(p, "sample")) - {"sample.decodings", "sample.options"} <= set(_declared(dvc["sample"]))


def test_validate_stage_reads_the_whole_params_file_and_everything_depends_on_it():
    dvc = _dvc_stages()
    assert dvc["validate"]["params"] == [{"params.yaml": None}]
    assert dvc["validate"]["cmd"].startswith("leakk dvc-yaml --check && ")
    assert "results/.params_valid" in dvc["data"]["deps"]


def test_rule_rounds_survive_a_dvc_rerun():
    outs = _dvc_stages()["rule"]["do"]["outs"]
    assert outs == [{"results/rule/${key}": {"persist": True}}]


def test_snakemake_jobs_read_the_declared_keys():
    p = validate_params(MICRO)
    sample = stage_params(p, "sample")
    assert set(sample) == {"prompt_template", "sample.backend", "sample.options", "sample.n", "sample.max_new_tokens",
                           "sample.seed", "sample.question_column", "sample.decodings"}  # a job samples every decoding
    assert "sample.decodings" not in stage_params(p, "sample_shard")  # a shard job samples one (its wildcard)
    assert sample["sample.n"] == MICRO["sample"]["n"]
    rnd = stage_params(p, "rule_round", name="rule_npo")
    assert set(rnd) == {"seed", "prompt_template", "rule.rule_npo", "unlearn.npo", "judge.rougeL",
                        "sample.backend", "sample.options", "training"}
    assert "rounds" not in rnd["rule.rule_npo"]  # more rounds keep the finished ones
    assert stage_params(p, "unlearn", name="ga") == {
        "seed": 0, "prompt_template": MICRO["prompt_template"], "unlearn.ga": p["unlearn"]["ga"],
        "training": {"precision": "auto", "gradient_accumulation": 1, "gradient_checkpointing": False, "lora": None}}
    ev = stage_params(p, "rule_eval")
    assert {"judge.fact", "estimate.headline_judge"} <= set(ev) and "judge.rougeL" not in ev


def test_rule_fingerprint_is_the_hash_of_what_the_round_stage_reads():
    from leakk.unlearn.rule import round_fingerprint

    p = validate_params(MICRO)
    assert round_fingerprint(p, "rule_npo") == fingerprint(stage_params(p, "rule_round", name="rule_npo"))


@pytest.mark.parametrize("key, value", [("device", "cuda"), ("sample.batch_rows", 4)])
def test_execution_settings_are_no_cache_key(key, value):
    """Switching device or batch size changes no job's params and no dvc.yaml key."""
    base = validate_params(MICRO)
    raw = copy.deepcopy(MICRO)
    section, _, sub = key.partition(".")
    if sub:
        raw[section][sub] = value
    else:
        raw[key] = value
    switched = validate_params(raw, host=False)  # a device this machine may lack
    names = {"name": "rule_npo", "judge": "rougeL", "source": "models.full"}
    for stage in STAGES:
        assert stage_params(switched, stage, **names) == stage_params(base, stage, **names), stage
        assert not [k for k in STAGES[stage].reads if k in EXECUTION or k.split(".")[0] in EXECUTION]
    for stage in _dvc_stages().values():
        assert not [k for k in _declared(stage) if k in EXECUTION or k == "sample"], stage


@pytest.mark.parametrize("device, gpu", [("cpu", 0), ("cuda", 1), ("cuda:1", 1)])
def test_gpu_only_where_params_put_a_model_on_one(device, gpu):
    p = validate_params(dict(MICRO, device=device), host=False)  # planned here, run on a GPU machine
    assert stage_resources(p, "sample")["gpu"] == gpu == gpu_requested(device)
    assert stage_resources(p, "data")["gpu"] == 0
    judge_gpu = stage_resources(p, "judge")["gpu"]  # per job: only judges that run a model
    assert judge_gpu(SimpleNamespace(judge="rougeL")) == 0 and judge_gpu(SimpleNamespace(judge="fact")) == 0


def test_model_judges_ask_for_the_gpu():
    p = validate_params(dict(MICRO, device="cuda", judge={**MICRO["judge"], "es": {"type": "nli"}}), host=False)
    judge_gpu = stage_resources(p, "judge")["gpu"]
    assert judge_gpu(SimpleNamespace(judge="es")) == 1 and judge_gpu(SimpleNamespace(judge="fact")) == 0


def test_no_stage_reads_replicates(tmp_path):
    """`replicates` is for `leakk replicates` only: a plain snakemake/dvc run uses `seed`, and
    adding or editing it re-runs nothing (only DVC's validate stage, whose stamp is constant)."""
    assert not [key for spec in STAGES.values() for key in spec.reads if key.split(".")[0] == "replicates"]
    with_reps = validate_params(dict(MICRO, replicates=[0, 1, 2]))
    plain = validate_params(MICRO)
    for stage in STAGES:
        names = {"name": "rule_npo", "judge": "rougeL", "source": "models.full"}
        assert stage_params(with_reps, stage, **names) == stage_params(plain, stage, **names), stage
    path = write_params(tmp_path / "params.yaml", dict(MICRO, replicates=[0, 1, 2]))
    keys = [k for stage in document(path, with_reps)["stages"].values() for k in _declared(stage)]
    assert not [k for k in keys if k.startswith("replicates")]


def test_snakemake_rules_wire_the_commands():
    p = validate_params(MICRO)
    by_name = {r.name: r for r in rules(p, "leakk --params params.yaml")}
    assert set(by_name) == {s.name for s in STAGES.values() if s.snakemake} - {
        "download", "sample_shard", "merge_samples", "decoding_heatmap", "attack", "attack_figure"}  # no hub
    # source, shard, grid or attack entry; with one, its rules appear
    attacked = validate_params(dict(copy.deepcopy(MICRO), attack={"int8": {"type": "quantize", "bits": 8}}))
    assert {"attack", "attack_figure"} <= {r.name for r in rules(attacked, "leakk")}
    assert by_name["sample"].shell == (
        "leakk --params params.yaml --threads {threads} sample --data {input.data} --model {wildcards.model} "
        "--model-dir {params.model_dir} --decoding all --shard 0 --shards 1 --out results/samples/{wildcards.model} "
        "2> {log}")
    assert by_name["estimate"].shell.endswith("> {log} 2>&1")  # it prints the summary
    # one job per model writes every decoding's file, where the judge jobs read them
    assert {k: o.path for k, o in by_name["sample"].output.items()} == {
        "greedy": "results/samples/{model}/greedy.parquet", "t1_0_p1_0": "results/samples/{model}/t1.0_p1.0.parquet"}
    assert list(by_name["sample"].wildcard_constraints) == ["model"]
    # a cluster job's run time grows with the decodings it draws (greedy and t1.0_p1.0 here)
    assert by_name["sample"].resources["runtime"] == 2 * 120
    grid = validate_params(dict(MICRO, sample=dict(MICRO["sample"], decodings=[
        {"temperature": t, "top_p": 1.0} for t in (0.5, 0.8, 1.0, 1.2)])))
    assert {r.name: r for r in rules(grid, "leakk")}["sample"].resources["runtime"] == 5 * 120
    assert by_name["judge"].input["samples"] == "results/samples/{model}/{decoding}.parquet"
    assert by_name["rule_round"].params["reads"](SimpleNamespace(name="rule_npo", round="1")) == stage_params(
        p, "rule_round", name="rule_npo")
    # each job's params are its own: its run, its judge
    assert by_name["unlearn"].params["reads"](SimpleNamespace(name="ga"))["unlearn.ga"] == p["unlearn"]["ga"]
    assert by_name["judge"].params["reads"](SimpleNamespace(model="full", judge="rougeL", decoding="greedy")) == {
        "judge.rougeL": p["judge"]["rougeL"]}
    assert shell(STAGES["figures"], "leakk").startswith("leakk figures --leak {input.leak} --judge {wildcards.judge}")
    files = targets(p)
    assert "results/rule_eval/rule_npo/rounds.parquet" in files and "results/tables.html" in files
    assert len(files) == len(set(files))


def test_the_longest_chain_of_model_jobs_runs_first():
    """Snakemake's priorities: each job on the chain finetune(full) → unlearn(a RULE base) → RULE
    rounds outranks everything that becomes ready beside it, and each ranks above the next, so
    the chain starts first on few cores instead of running alone at the end."""
    from leakk.config import load_params

    p = load_params(ROOT / "params.yaml", host=False)
    by_name = {r.name: r for r in rules(p, "leakk")}

    def priority(rule: str, **wildcards) -> int:
        value = by_name[rule].priority
        return value(SimpleNamespace(**wildcards)) if callable(value) else value

    base = {c["base"] for c in p["rule"].values()}
    assert base and set(p["unlearn"]) - base, "the default has RULE bases and a run that is none"
    for name, run in p["rule"].items():
        chain = [priority("finetune", which="full"), priority("unlearn", name=run["base"]),
                 *(priority("rule_round", name=name, round=str(r)) for r in range(1, run["rounds"] + 1))]
        assert chain == sorted(chain, reverse=True) and len(set(chain)) == len(chain)
        assert chain[-1] >= 1
    others = [priority("unlearn", name=n) for n in set(p["unlearn"]) - base]
    others += [priority("finetune", which="retrain"), priority("sample", model="full"),
               priority("judge", model="full", judge="fact", decoding="greedy"), priority("bounds", model="full")]
    first_round = min(priority("rule_round", name=n, round="1") for n in p["rule"])
    assert max(others) < first_round  # a round starts before a run that feeds no chain


def test_sharded_sampling_is_shard_jobs_and_a_merge():
    p = validate_params(dict(MICRO, sample=dict(MICRO["sample"], shards=3)))
    by_name = {r.name: r for r in rules(p, "leakk")}
    assert "sample" not in by_name and {"sample_shard", "merge_samples"} <= set(by_name)
    assert "--shard {wildcards.shard} --shards {params.shards}" in by_name["sample_shard"].shell
    assert not [f for f in targets(p) if ".shard" in f]  # temporary: never a target


def test_a_new_stage_is_its_module_and_one_table_entry(tmp_path, monkeypatch, capsys):
    """What adding a stage touches: its entry function (a module), one Command and one Stage in
    the table. The CLI, the Snakemake rules, `rule all` and dvc.yaml pick it up with no other edit."""
    import sys

    from leakk.cli import main
    from leakk.core.layout import RESULTS as L
    from leakk.workflow import table
    from leakk.workflow.table import Command, Dvc, Out, Rule, Stage, arg

    (tmp_path / "leakk_newstage.py").write_text(
        "def count(params, *, leak, out):\n"
        "    import polars as pl\n"
        "    open(out, 'w').write(f\"{pl.read_parquet(leak).height} rows, ks {params['estimate']['ks']}\\n\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    command = Command("count-rows", "leakk_newstage:count", "count the leak table's rows",
                      args=(arg("--leak", required=True), arg("--out", required=True)))
    stage = Stage("count_rows", "count-rows", ("estimate.ks",),
                  snakemake=Rule(lambda p: [{}], {"leak": L.file("leak_at_k.parquet")},
                                 {"out": Out(L.file("rows.txt"))}, {"leak": "{input.leak}", "out": "{output.out}"}),
                  dvc=Dvc({"leak": L.file("leak_at_k.parquet"), "out": L.file("rows.txt")},
                          deps=(L.file("leak_at_k.parquet"),), outs=(L.file("rows.txt"),)))
    monkeypatch.setitem(table.COMMANDS, command.name, command)
    monkeypatch.setitem(table.STAGES, stage.name, stage)

    p = validate_params(MICRO)
    rule = {r.name: r for r in rules(p, "leakk")}["count_rows"]
    assert rule.shell == "leakk count-rows --leak {input.leak} --out {output.out} 2> {log}"
    assert rule.params["reads"](SimpleNamespace()) == {"estimate.ks": MICRO["estimate"]["ks"]}
    assert "results/rows.txt" in targets(p)
    path = write_params(tmp_path / "params.yaml", MICRO)
    assert document(path, p)["stages"]["count_rows"] == {
        "cmd": "leakk count-rows --leak results/leak_at_k.parquet --out results/rows.txt",
        "deps": ["results/leak_at_k.parquet"], "params": ["estimate.ks"], "outs": ["results/rows.txt"]}
    import polars as pl

    pl.DataFrame({"k": [1, 2]}).write_parquet(tmp_path / "leak.parquet")
    assert main(["--params", str(path), "count-rows", "--leak", str(tmp_path / "leak.parquet"),
                 "--out", str(tmp_path / "rows.txt")]) == 0
    assert (tmp_path / "rows.txt").read_text() == "2 rows, ks [1, 2, 4]\n"
    assert "leakk_newstage" in sys.modules

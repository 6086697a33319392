"""The tuning protocol (docs/tuning.yaml): settings chosen on tuning seeds, the README reporting
report seeds only. The record agrees with params.yaml and the replicates preset, the committed
snapshot holds report seeds only, and `leakk readme-tables` refuses a tuning seed before it writes."""

from __future__ import annotations

import json
import shutil
from functools import reduce

import pytest
import yaml

from conftest import ROOT
from leakk.config import read_params_file
from leakk.core.errors import ArtifactError
from leakk.report.readme_tables import SNAPSHOT_DIR, TUNING_FILE, readme_tables, report_seed_errors

RECORD = yaml.safe_load((ROOT / TUNING_FILE).read_text())


def _get(params: dict, dotted: str):
    return reduce(lambda node, key: node[key], dotted.split("."), params)


def test_tuning_and_report_seeds_are_disjoint_and_the_presets_use_them():
    tuned, reported = set(RECORD["tuning_seeds"]), set(RECORD["report_seeds"])
    assert tuned and len(reported) >= 3 and not tuned & reported
    params = read_params_file(ROOT / "params.yaml")
    assert params["seed"] in reported  # `make run` reproduces the README's headline table
    assert read_params_file(ROOT / "configs" / "replicates.yaml")["replicates"] == RECORD["report_seeds"]


def test_every_chosen_setting_is_the_one_params_yaml_runs():
    params = read_params_file(ROOT / "params.yaml")
    for key, entry in RECORD["chosen"].items():
        assert _get(params, key) == entry["value"], f"docs/tuning.yaml: chosen.{key} differs from params.yaml"
        assert entry["tried"].strip(), key


def test_the_committed_snapshot_reports_report_seeds_only():
    meta = json.loads((ROOT / SNAPSHOT_DIR / "meta.json").read_text())
    assert report_seed_errors(meta, ROOT / TUNING_FILE) == []
    assert meta["run"]["seed"] in RECORD["report_seeds"]
    assert meta["replicates"]["seeds"] == RECORD["report_seeds"]


def test_a_tuning_seed_is_named_and_refused(tmp_path):
    record = tmp_path / "tuning.yaml"
    record.write_text(yaml.safe_dump({"tuning_seeds": [0, 1, 2], "report_seeds": [10, 11, 12]}))
    assert report_seed_errors({"run": {"seed": 10}, "replicates": {"seeds": [10, 11, 12]}}, record) == []
    (err,) = report_seed_errors({"run": {"seed": 0}}, record)
    assert "seed(s) [0]: a tuning seed" in err and str(record) in err
    (err,) = report_seed_errors({"replicates": {"seeds": [10, 13]}}, record)
    assert "[13]: not a report seed" in err
    assert report_seed_errors({"run": {"seed": 0}}, tmp_path / "absent.yaml") == []  # no record, no protocol
    record.write_text(yaml.safe_dump({"tuning_seeds": [0, 1], "report_seeds": [1, 2]}))
    assert "both tuning_seeds and report_seeds" in report_seed_errors({}, record)[0]


def test_readme_tables_refuses_a_tuning_seed_before_writing(tmp_path):
    snapshot = tmp_path / "snapshot"
    shutil.copytree(ROOT / SNAPSHOT_DIR, snapshot)
    before = {p: p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    params = read_params_file(ROOT / "params.yaml") | {"seed": 0}
    with pytest.raises(ArtifactError, match=r"the run snapshot's seed\(s\) \[0\]: a tuning seed"):
        readme_tables(params, results=str(tmp_path / "no-results"), replicates=None, snapshot=str(snapshot),
                      coverage=str(ROOT / "docs" / "ci_coverage.csv"), readme=[], check=False,
                      tuning=str(ROOT / TUNING_FILE))
    assert {p: p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == before
    meta = json.loads((snapshot / "meta.json").read_text())
    meta["run"]["seed"], meta["replicates"]["seeds"] = RECORD["report_seeds"][0], [0, 1, 2]
    (snapshot / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"meta.json: the replicates snapshot's seed\(s\) \[0, 1, 2\]"):
        readme_tables(params, results=None, replicates=None, snapshot=str(snapshot),
                      coverage=str(ROOT / "docs" / "ci_coverage.csv"), readme=[], check=True,
                      tuning=str(ROOT / TUNING_FILE))


def test_the_untuned_attack_settings_are_the_ones_the_attack_preset_runs():
    from leakk.config import validate_params

    preset = validate_params(read_params_file(ROOT / "configs" / "attacks.yaml"), host=False)
    for key, entry in RECORD["untuned"].items():
        name = key.removeprefix("attack.")
        assert {k: preset["attack"][name][k] for k in entry["value"]} == entry["value"], key


def test_the_methods_record_is_what_the_methods_preset_runs():
    from leakk.config import validate_params

    preset = validate_params(read_params_file(ROOT / "configs" / "methods.yaml"), host=False)
    assert {k.removeprefix("unlearn.") for k in RECORD["methods"]} == set(preset["unlearn"])  # every run recorded
    for key, entry in RECORD["methods"].items():
        run = preset["unlearn"][key.removeprefix("unlearn.")]
        assert {k: run[k] for k in entry["value"]} == entry["value"], key


def _set(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    _get(params, ".".join(path))[last] = value


def _before_phrasings() -> dict:
    """params.yaml as it was before the phrasings choice (``earlier.default_5phrasings``): the
    record's ``phrasings.replaced`` values put back. The tuning runs before that choice ran it."""
    params = read_params_file(ROOT / "params.yaml")
    for key, value in RECORD["phrasings"]["replaced"].items():
        _set(params, key, value)
    return params


def _earlier_default() -> dict:
    """The earlier default (docs/tuning.yaml ``earlier``) that configs/attacks.yaml still runs."""
    preset = read_params_file(ROOT / "configs" / "attacks.yaml")
    preset.pop("attack"), preset.pop("replicates")
    return preset


def test_the_rule_stop_record_is_what_its_tuning_run_ran():
    """configs/tuning_rule_stop.yaml is the earlier default on the tuning seeds plus RULE copies
    that stop on evidence or select their round (only the headline decoding sampled); the
    record's thresholds are the ones it ran, and the select rule is the one the default adopted."""
    from leakk.config import validate_params

    entry = RECORD["rule_stop"]
    run = read_params_file(ROOT / entry["config"])
    validate_params(run, host=False)
    default = _earlier_default()
    assert run["replicates"] == RECORD["tuning_seeds"] and run["seed"] in RECORD["tuning_seeds"]
    assert [d for d in default["sample"]["decodings"] if d == run["sample"]["decodings"][0]]
    copies = {name: cfg for name, cfg in run["rule"].items() if name not in default["rule"]}
    assert copies and {n: run["rule"][n] for n in default["rule"]} == default["rule"]
    for name, cfg in copies.items():
        how = "stop" if "stop" in cfg else "select"
        budget = default["rule"][name.removesuffix(f"_{how}")]
        assert cfg[how] == entry["value" if how == "stop" else "select_value"], name
        assert {k: v for k, v in cfg.items() if k not in ("rounds", how)} == \
            {k: v for k, v in budget.items() if k != "rounds"}, name  # the same run, rounds a cap
    strip = ("seed", "replicates", "rule", "sample")
    assert {k: v for k, v in run.items() if k not in strip} == {k: v for k, v in default.items() if k not in strip}
    assert {k: v for k, v in run["sample"].items() if k != "decodings"} == \
        {k: v for k, v in default["sample"].items() if k != "decodings"}
    assert {"stop", "select"} <= {"stop" if "stop" in c else "select" for c in copies.values()}
    current = read_params_file(ROOT / "params.yaml")["rule"].values()
    assert entry["adopted"] == "select" and all(c["select"] == entry["select_value"] and "stop" not in c for c in current)


def test_the_shape_record_is_what_its_tuning_run_runs():
    """configs/tuning_shape.yaml runs the tuning seeds only, scored on the validation phrasing
    (never the evaluation phrasing the README reports), with the record's data shape; adopted,
    it is params.yaml before the phrasings choice but for the seeds, the phrasing it scores and
    the stops adopted later (stop_margin)."""
    from leakk.config import validate_params

    entry = RECORD["shape"]
    run = read_params_file(ROOT / entry["config"])
    validate_params(run, host=False)
    assert set(run["replicates"]) == set(RECORD["tuning_seeds"]) and run["seed"] in RECORD["tuning_seeds"]
    assert run["sample"]["question_column"] == entry["scored_on"] == RECORD["scored_on"] == "validation_question"
    assert {k: run["data"]["synthetic"][k] for k in entry["value"]} == entry["value"]
    default = _before_phrasings()
    assert entry["adopted"] is True and default["sample"]["question_column"] == "paraphrased_question"
    run.pop("seed"), run.pop("replicates"), default.pop("seed")
    run["sample"].pop("question_column"), default["sample"].pop("question_column")
    for name, stop in RECORD["stop_margin"]["value"].items():
        run["unlearn"][name]["stop"]["greedy_leak"] = stop
    assert run == default, "configs/tuning_shape.yaml differs from the default it was adopted as"
    assert all(text.strip() for text in entry["tried"].values())


def test_the_earlier_defaults_are_recorded_with_their_own_report_seeds():
    """Every earlier default's report seeds are spent: disjoint from the tuning seeds, from
    today's and from each other's. The attack and methods presets still run one of them: the
    record names its shape, and its sub-snapshot holds its report seeds only. A rerun inside an
    earlier default's sub-snapshot holds that default's seeds."""
    from leakk.report.readme_tables import earlier_snapshots

    spent = [set(e["report_seeds"]) for e in RECORD["earlier"].values()]
    spent += [set(RECORD["tuning_seeds"]), set(RECORD["report_seeds"])]
    assert sum(map(len, spent)) == len(set().union(*spent)), "a seed is in two of the record's seed sets"
    (name, entry), = ((n, e) for n, e in RECORD["earlier"].items() if e.get("presets"))
    assert _earlier_default()["data"]["synthetic"] == entry["data"]
    for sub in earlier_snapshots(ROOT / SNAPSHOT_DIR):
        meta = json.loads((sub / "meta.json").read_text())
        if "rerun" in meta:  # today's report seeds, on another CPU
            assert meta["replicates"]["seeds"] == RECORD["report_seeds"], sub.name
            assert report_seed_errors(meta, ROOT / TUNING_FILE) == []
            continue
        assert sub.name in RECORD["earlier"], f"{sub}: a sub-snapshot the record does not name"
        assert report_seed_errors(meta, ROOT / TUNING_FILE, earlier=sub.name) == []
        for rerun in earlier_snapshots(sub):  # that default's report seeds, on another CPU
            rerun_meta = json.loads((rerun / "meta.json").read_text())
            assert rerun_meta["rerun"] == {"of": f"earlier.{sub.name}"}, rerun
            assert rerun_meta["replicates"]["seeds"] == RECORD["earlier"][sub.name]["report_seeds"], rerun
    meta = json.loads((ROOT / SNAPSHOT_DIR / name / "meta.json").read_text())
    assert meta["attacks"]["seeds"] == meta["methods"]["seeds"] == entry["report_seeds"]


def test_the_stop_margin_is_the_room_left_on_both_claims():
    """scripts/tuning/stop_margin_check.py: per unlearning run, min(0.15 - greedy, leak@n - 0.30),
    against the same numbers worked by hand; full and retrain are left out, and a run whose
    numbers are missing is refused."""
    import importlib.util

    import polars as pl

    spec = importlib.util.spec_from_file_location("stop_margin_check",
                                                  ROOT / "scripts" / "tuning" / "stop_margin_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    params = {"unlearn": {"ga": {"method": "ga", "stop": {"greedy_leak": 0.12}},
                          "npo_s10": {"method": "npo", "stop": {"greedy_leak": 0.1}}}}
    rows = [(0, "full", 0.9, 0.99), (0, "ga", 0.10, 0.30), (1, "ga", 0.05, 0.50),
            (0, "npo_s10", 0.14, 0.60), (0, "retrain", 0.0, 0.0)]
    methods = pl.DataFrame(rows, schema=["seed", "model", "greedy", "leak_at_n"], orient="row").with_columns(
        k=pl.lit(64), retain_accuracy=pl.lit(0.7))
    table = check.margins(methods, params)
    by_hand = {(0.12, 0): min(0.15 - 0.10, 0.30 - 0.30), (0.12, 1): min(0.15 - 0.05, 0.50 - 0.30),
               (0.1, 0): min(0.15 - 0.14, 0.60 - 0.30)}
    assert {(r["stop"], r["seed"]): r["margin"] for r in table.iter_rows(named=True)} == pytest.approx(by_hand)
    assert table["method"].to_list() == ["ga", "ga", "npo"]  # the highest stop first
    assert table["run"].to_list() == ["ga", "ga", "npo_s10"] and table["lr"].is_null().all()  # no lr given
    assert (check.GREEDY_MAX, check.LEAK_MIN) == (0.15, 0.30)
    failed = methods.with_columns(greedy=pl.when(pl.col("model") == "npo_s10").then(None).otherwise(pl.col("greedy")))
    with pytest.raises(SystemExit, match=r"\['npo_s10'\] have no greedy leak"):
        check.margins(failed, params)


def test_the_stop_margin_record_is_what_its_tuning_run_ran():
    """configs/tuning_stop_margin.yaml is configs/tuning_shape.yaml (the tuning seeds, the
    validation phrasing) with GA, GradDiff and NPO at each stop tried and no RULE; the adopted
    stops are the ones the default ran until the phrasings choice (NPO's still is)."""
    from leakk.config import validate_params

    entry = RECORD["stop_margin"]
    run = read_params_file(ROOT / entry["config"])
    validate_params(run, host=False)
    shape = read_params_file(ROOT / RECORD["shape"]["config"])
    assert run["replicates"] == RECORD["tuning_seeds"] and run["sample"]["question_column"] == entry["scored_on"]
    stops = {}
    for name, cfg in run["unlearn"].items():
        base = shape["unlearn"][cfg["method"]]
        assert {k: v for k, v in cfg.items() if k != "stop"} == {k: v for k, v in base.items() if k != "stop"}, name
        assert cfg["stop"]["every"] == base["stop"]["every"], name
        stops.setdefault(cfg["method"], set()).add(cfg["stop"]["greedy_leak"])
    assert stops == {m: {0.15, 0.12, 0.10} for m in ("ga", "graddiff", "npo")}
    assert run["rule"] == {} and run["sample"]["decodings"] == shape["sample"]["decodings"][:1]
    strip = ("unlearn", "rule", "sample", "judge")
    assert {k: v for k, v in run.items() if k not in strip} == {k: v for k, v in shape.items() if k not in strip}
    default = _before_phrasings()["unlearn"]
    assert {m: default[m]["stop"]["greedy_leak"] for m in entry["value"]} == entry["value"]
    assert read_params_file(ROOT / "params.yaml")["unlearn"]["npo"]["stop"] == default["npo"]["stop"]
    assert all(entry["value"][m] in stops[m] for m in entry["value"])


def test_the_epochs_record_is_what_its_tuning_run_ran():
    """configs/tuning_epochs.yaml is the default before the phrasings choice on the tuning seeds
    and the validation phrasing with another fine-tuning length, no RULE, one decoding and one
    judge; that default ran the record's value."""
    from leakk.config import validate_params

    entry = RECORD["epochs"]
    run = read_params_file(ROOT / entry["config"])
    validate_params(run, host=False)
    default = _before_phrasings()
    assert run["replicates"] == RECORD["tuning_seeds"] and run["sample"]["question_column"] == entry["scored_on"]
    assert default["finetune"]["epochs"] == entry["value"] != run["finetune"]["epochs"]
    assert run["rule"] == {} and run["sample"]["decodings"] == default["sample"]["decodings"][:1]
    assert {k: v for k, v in run["finetune"].items() if k != "epochs"} == \
        {k: v for k, v in default["finetune"].items() if k != "epochs"}
    strip = ("seed", "replicates", "finetune", "rule", "sample", "judge")
    assert {k: v for k, v in run.items() if k not in strip} == {k: v for k, v in default.items() if k not in strip}


def test_the_phrasings_record_is_what_its_tuning_run_ran():
    """configs/tuning_phrasings.yaml is the default before the choice, on the tuning seeds and
    the validation phrasing, with the record's phrasings and epochs, the unlearning runs it
    chose from (no RULE, one decoding, one judge); the runs it adopted are params.yaml's, and
    params.yaml is the earlier default with the record's values."""
    from leakk.config import validate_params

    entry = RECORD["phrasings"]
    run = read_params_file(ROOT / entry["config"])
    validate_params(run, host=False)
    before, default = _before_phrasings(), read_params_file(ROOT / "params.yaml")
    assert run["replicates"] == RECORD["tuning_seeds"] and run["seed"] in RECORD["tuning_seeds"]
    assert run["sample"]["question_column"] == entry["scored_on"] == "validation_question"
    assert entry["adopted"] is True and set(entry["value"]) == set(entry["replaced"])
    for key, value in entry["value"].items():
        assert _get(default, key) == value != entry["replaced"][key], key
        assert key.startswith("unlearn.") or _get(run, key) == value, key  # the data and fine-tuning it ran
    assert {m: run["unlearn"][name] for m, name in entry["adopted_runs"].items()} == default["unlearn"]
    for name, cfg in run["unlearn"].items():  # every run is one of the earlier default's with its lr or stop moved
        base = before["unlearn"][cfg["method"]]
        assert {k: v for k, v in cfg.items() if k not in ("lr", "stop")} == \
            {k: v for k, v in base.items() if k not in ("lr", "stop")}, name
        assert cfg["stop"]["every"] == base["stop"]["every"], name
    assert run["rule"] == {} and run["sample"]["decodings"] == default["sample"]["decodings"][:1]
    strip = ("seed", "replicates", "unlearn", "rule", "sample", "judge", "data", "finetune")
    assert {k: v for k, v in run.items() if k not in strip} == {k: v for k, v in default.items() if k not in strip}
    assert run["data"] == default["data"] and run["finetune"] == default["finetune"]
    assert RECORD["earlier"]["default_5phrasings"]["data"] == before["data"]["synthetic"]


"""params validation: bad params fail before any work, with one line naming key and rule."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, write_params
from leakk.config import load_params, validate_params
from leakk.core.layout import model_names
from leakk.sampling.decoding import decoding_names
from leakk.core.errors import ParamsError


def test_default_params_validate_and_fill_defaults():
    p = load_params(ROOT / "params.yaml")
    assert p["sample"]["backend"] == "hf" and p["estimate"]["bootstrap"] == 1000
    assert model_names(p)[:2] == ["full", "retrain"]
    assert decoding_names(p) == ["greedy", "t1.0_p1.0", "t0.8_p0.8"]


@pytest.mark.parametrize("edit, key, rule", [
    (lambda p: p["unlearn"]["ga"].update(method="sgd"), "unlearn.ga.method", "unknown method"),
    (lambda p: p["estimate"].update(ks=[1, 8]), "estimate.ks", "k ≤ n"),
    (lambda p: p["sample"]["decodings"][0].update(temperature=-0.5), "sample.decodings[0].temperature", "minimum"),
    (lambda p: p["sample"]["decodings"][0].update(top_p=1.5), "sample.decodings[0].top_p", "maximum"),
    (lambda p: p["sample"]["decodings"][0].update(top_p=0.0), "sample.decodings[0].top_p", "exclusiveMinimum"),
    (lambda p: p["data"]["synthetic"].update(forget_fraction=0.01), "data.synthetic.forget_fraction", "empty forget split"),
    (lambda p: p["model"].update(base="/no/such/model"), "model.base", "no such model folder"),
    (lambda p: p["rule"]["rule_npo"].update(base="nope"), "rule.rule_npo.base", "not an unlearn run"),
    (lambda p: p["rule"]["rule_npo"].update(seed=5), "rule.rule_npo.seed", "must not train on the evaluation samples"),
    (lambda p: p["judge"].update(oracle={}), "judge.oracle", "unknown judge"),
    (lambda p: p.update(bogus=1), "bogus: unknown key", "additionalProperties"),
    (lambda p: p["sample"].update(n="many"), "sample.n", "type"),
    (lambda p: p["sample"].update(question_column="validation_question"), "sample.question_column",
     "validation_phrasing is true"),
    (lambda p: p["rule"]["rule_npo"].update(question_column="validation_question"), "rule.rule_npo.question_column",
     "validation_phrasing is true"),
])
def test_bad_params_name_key_and_rule(micro_params, edit, key, rule):
    edit(micro_params)
    with pytest.raises(ParamsError) as err:
        validate_params(micro_params)
    msg = str(err.value)
    assert key in msg and rule in msg and "\n" not in msg


def test_cli_bad_params_one_line_exit_2_no_work(tmp_path, micro_params):
    micro_params["sample"]["decodings"][0]["top_p"] = 2
    params = write_params(tmp_path / "params.yaml", micro_params)
    out = tmp_path / "data.parquet"
    proc = subprocess.run([sys.executable, "-m", "leakk.cli", "--params", str(params), "data", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sample.decodings[0].top_p" in lines[0]
    assert not out.exists()


def test_snakemake_refuses_bad_params_before_any_job(tmp_path, micro_params):
    micro_params["unlearn"]["ga"]["method"] = "sgd"
    write_params(tmp_path / "params.yaml", micro_params)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1",
                           "-n", "--directory", str(tmp_path), "--configfile", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "unlearn.ga.method" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_params_file(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_schema_file_is_shared_with_workflow():
    wf = ROOT / "workflow" / "schemas" / "params.schema.yaml"
    assert yaml.safe_load(wf.read_text()) == yaml.safe_load(
        (ROOT / "src" / "leakk" / "schemas" / "params.schema.yaml").read_text())


def test_validation_question_accepted_with_its_phrasing(micro_params):
    micro_params["data"]["synthetic"].update(phrasings=3, validation_phrasing=True)
    micro_params["sample"]["question_column"] = "validation_question"
    assert validate_params(micro_params)["sample"]["question_column"] == "validation_question"

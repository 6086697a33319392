"""Hardening: no bad params value gets past validation, none deletes work; corrupt artifacts
are named with the stage that makes them; the workflow profile is in effect.

The corpus of bad params edits runs through ``leakk validate`` here (fast) and through
``snakemake -n`` and a real ``snakemake`` over a finished micro results tree (slow), which
must stay byte-identical.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import MICRO, ROOT, write_params
from leakk.cli import main
from leakk.core.errors import ArtifactError, ParamsError
from leakk.core.io import read_parquet

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "TQDM_DISABLE": "1"}
GOOD = yaml.safe_dump(MICRO, sort_keys=False)


def _edit(fn):
    """A dict edit of MICRO → the params file text."""
    def text() -> str:
        p = copy.deepcopy(MICRO)
        fn(p)
        return yaml.safe_dump(p, sort_keys=False)
    return text


def _text(fn):
    return lambda: fn(GOOD)


def _nested(p, path, value):
    *parents, last = path
    for key in parents:
        p = p[key]
    p[last] = value


def _set(*path_and_value):
    *path, value = path_and_value
    return _edit(lambda p: _nested(p, path, value))


#: (case id, params-file text maker, what the one error line must contain)
BAD = [
    ("device_gpu", _set("device", "gpu"), "device"),
    ("device_cuda_x", _set("device", "cuda:x"), "device"),
    ("question_column", _set("sample", "question_column", "no_such_col"), "sample.question_column"),
    ("rule_question_column", _set("rule", "rule_npo", "question_column", "nope"), "rule.rule_npo.question_column"),
    ("template_bad_format", _set("prompt_template", "Q: {A: x"), "prompt_template"),
    ("template_other_field", _set("prompt_template", "Q: {question} A: {answer}"), "prompt_template"),
    ("template_no_field", _set("prompt_template", "Question: Answer:"), "prompt_template"),
    ("template_conversion", _set("prompt_template", "Q: {question!r}"), "prompt_template"),
    ("template_chat_scratch", _set("prompt_template", "chat"), "prompt_template"),
    ("judge_threshold_text", _set("judge", "rougeL", "threshold", "high"), "judge.rougeL.threshold"),
    ("judge_threshold_range", _set("judge", "rougeL", "threshold", 1.5), "judge.rougeL.threshold"),
    ("judge_misspelt_key", _set("judge", "rougeL", {"treshold": 0.3}), "judge.rougeL.treshold"),
    ("judge_key_takes_none", _set("judge", "fact", {"threshold": 0.5}), "judge.fact.threshold"),
    ("judge_unknown_type", _set("judge", "rouge_lo", {"type": "rougeX"}), "judge.rouge_lo.type"),
    ("judge_unknown_label", _set("judge", "oracle", {}), "judge.oracle"),
    ("judge_bad_label", _set("judge", "rouge-L", {"type": "rougeL"}), "judge"),
    ("arch_heads", _set("model", "arch", "n_embd", 33), "model.arch.n_embd"),
    ("arch_typo", _set("model", "arch", "n_layers", 2), "model.arch.n_layers"),
    ("vocab_tiny", _set("model", "vocab_size", 10), "model.vocab_size"),
    ("max_new_tokens_vs_positions", _set("sample", "max_new_tokens", 100), "sample.max_new_tokens"),
    ("backend", _set("sample", "backend", "tgi"), "sample.backend"),
    ("method", _set("unlearn", "ga", "method", "sgd"), "unlearn.ga.method"),
    ("unlearn_typo", _set("unlearn", "ga", "lrr", 0.1), "unlearn.ga.lrr"),
    ("k_above_n", _set("estimate", "ks", [1, 8]), "estimate.ks"),
    ("ks_repeated", _set("estimate", "ks", [1, 1, 2]), "estimate.ks"),
    ("top_p", _edit(lambda p: p["sample"]["decodings"][0].update(top_p=1.5)), "sample.decodings[0].top_p"),
    ("rule_seed", _set("rule", "rule_npo", "seed", 5), "rule.rule_npo.seed"),
    ("benchmark", _set("data", "benchmark", "no_such_bench"), "data.benchmark"),
    ("headline_decoding", _set("estimate", "headline_decoding", "t0.5_p0.5"), "estimate.headline_decoding"),
    ("unknown_top_level", _set("bogus", 1), "bogus"),
    ("missing_section", _edit(lambda p: p.pop("judge")), "judge"),
    ("misspelt_section", _text(lambda t: t.replace("\nsample:", "\nsampel:")), "sampel: unknown key (did you mean 'sample'?"),
    ("duplicate_key", _text(lambda t: t.replace("unlearn:\n", "unlearn:\n  npo: {method: ga, steps: 1, lr: 0.1, "
                                                "batch_size: 1}\n", 1)), "unlearn.npo"),
    ("duplicate_top_level", _text(lambda t: t + "seed: 3\n"), "seed"),
    ("yaml_syntax", _text(lambda t: t.replace("device: cpu", "device: [cpu")), "from line 2, column 9"),
    ("yaml_tab", _text(lambda t: t.replace("  benchmark:", "\tbenchmark:")), "params.yaml:"),
    ("not_utf8", _text(lambda t: t.replace("seed: 0", "seed: 0 # caf\udce9", 1)), "UTF-8"),
    ("not_a_mapping", _text(lambda t: "- seed: 0\n- device: cpu\n"), "not a mapping"),
    ("empty_file", _text(lambda t: ""), "empty params file"),
]


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def test_corpus_is_large_enough():
    assert len(BAD) >= 25 and len({c for c, _, _ in BAD}) == len(BAD)


def test_good_micro_params_validate(tmp_path, capsys):
    _write(tmp_path / "params.yaml", GOOD)
    assert main(["--params", str(tmp_path / "params.yaml"), "validate"]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


@pytest.mark.parametrize("case, make, key", BAD, ids=[c for c, _, _ in BAD])
def test_leakk_validate_refuses_bad_params(tmp_path, monkeypatch, capsys, case, make, key):
    """``leakk validate``: exit 2, nothing raised (no traceback), exactly one line naming the key."""
    _write(tmp_path / "params.yaml", make())
    monkeypatch.chdir(tmp_path)  # messages name the file as given: params.yaml
    assert main(["--params", "params.yaml", "validate"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith("leakk validate: error: params.yaml") and key in lines[0], lines[0]


def test_validate_cli_process_one_line(tmp_path):
    """The real process: one line on stderr, status 2, no traceback."""
    _write(tmp_path / "params.yaml", GOOD.replace("device: cpu", "device: gpu"))
    proc = subprocess.run([sys.executable, "-m", "leakk.cli", "validate"], capture_output=True, text=True,
                          cwd=tmp_path, env=ENV)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "leakk validate: error: params.yaml: device: 'gpu' is not one of: auto | cpu | cuda | cuda:N | mps "
        "(rule: pattern)"]


def test_duplicate_key_names_both_lines(tmp_path):
    from leakk.config import load_params

    _write(tmp_path / "p.yaml", "seed: 0\ndevice: cpu\nseed: 1\n")
    with pytest.raises(ParamsError, match=r"p.yaml:3: seed: duplicate key \(first on line 1\)"):
        load_params(tmp_path / "p.yaml")


# ---------------------------------------------------------------- corrupt artifacts


def _corruptions(good: bytes):
    return {"truncated": good[: len(good) // 2], "empty": b"", "not_parquet": b"PAR1 this is not parquet"}


@pytest.mark.parametrize("kind, stage", [("data", "data"), ("samples", "sample"), ("judgments", "judge"),
                                         ("leak_table", "estimate")])
@pytest.mark.parametrize("how", ["truncated", "empty", "not_parquet", "wrong_schema"])
def test_corrupt_parquet_is_named_with_its_stage(tmp_path, kind, stage, how):
    from leakk.core.io import CONTRACTS

    path = tmp_path / f"{kind}.parquet"
    frame = pl.DataFrame({c: ["x"] for c in CONTRACTS[kind]}) if how != "wrong_schema" else pl.DataFrame({"a": [1]})
    frame.write_parquet(path)
    if how != "wrong_schema":
        path.write_bytes(_corruptions(path.read_bytes())[how])
    with pytest.raises(ArtifactError) as err:
        read_parquet(path, kind)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "snakemake" in msg
    assert f"`{stage}` stage" in msg


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Small on-contract artifacts of every stage boundary: the micro benchmark, a tiny model
    folder, samples, judgments and a leak table (made directly, in seconds)."""
    from leakk.core.io import CONTRACTS, write_parquet
    from leakk.models.modeling import build_gpt2, build_tokenizer, save_model

    root = tmp_path_factory.mktemp("artifacts")
    params = write_params(root / "params.yaml", MICRO)
    assert main(["--params", str(params), "data", "--out", str(root / "data/benchmark.parquet")]) == 0
    data = read_parquet(root / "data/benchmark.parquet", "data")
    tok = build_tokenizer(data["answer"].to_list() + data["question"].to_list(), 200)
    save_model(build_gpt2(tok, MICRO["model"]["arch"], 0), tok, root / "models/ga")
    qids = data["qid"].to_list()
    samples = pl.DataFrame({"qid": qids, "sample_idx": 0, "text": data["answer"], "n_tokens": 3,
                            "finish_reason": "stop", "model": "ga", "decoding": "greedy", "temperature": 0.0,
                            "top_p": 1.0, "seed": 5, "split": data["split"]})
    write_parquet(samples, root / "samples/ga/greedy.parquet", "samples")
    judged = samples.select("qid", "sample_idx", "split", judge=pl.lit("fact"), score=pl.lit(1.0),
                            leaked=pl.lit(True))
    write_parquet(judged, root / "judgments/full/fact/greedy.parquet", "judgments")
    leak = pl.DataFrame({c: [v] for c, v in zip(CONTRACTS["leak_table"],
                                                 ["ga", "none", "greedy", "fact", 1, 0.5, 0.4, 0.6, 1, 6, 0, 0.1])})
    write_parquet(leak, root / "leak_at_k.parquet", "leak_table")
    write_parquet(pl.DataFrame({"round": [1], "stopped": [False]}), root / "rule/r/round_1/round.parquet")
    write_parquet(pl.DataFrame({"round": [0, 1]}), root / "rule_eval/r/round_0.parquet")
    return root


def _stage_argv(stage: str, run: Path) -> tuple[list[str], Path]:
    """(leakk argv for ``stage``, the upstream artifact it reads that the test corrupts)."""
    data = run / "data/benchmark.parquet"
    return {
        "finetune": (["finetune", "--data", str(data), "--which", "retrain", "--out", str(run / "x")], data),
        "unlearn": (["unlearn", "--data", str(data), "--name", "ga", "--model-dir", str(run / "models/ga"),
                     "--out", str(run / "x")], run / "models/ga/model.safetensors"),
        "sample": (["sample", "--data", str(data), "--model", "ga", "--model-dir", str(run / "models/ga"),
                    "--decoding", "greedy", "--out", str(run / "x.parquet")], run / "models/ga/model.safetensors"),
        "merge": (["merge", str(run / "samples/ga/greedy.parquet"), "--out", str(run / "x.parquet")],
                  run / "samples/ga/greedy.parquet"),
        "judge": (["judge", "--data", str(data), "--samples", str(run / "samples/ga/greedy.parquet"),
                   "--judge", "fact", "--out", str(run / "x.parquet")], run / "samples/ga/greedy.parquet"),
        "estimate": (["estimate", "--data", str(data), "--judgments", str(run / "judgments"),
                      "--out-dir", str(run / "x")], run / "judgments/full/fact/greedy.parquet"),
        "figures": (["figures", "--leak", str(run / "leak_at_k.parquet"), "--out-dir", str(run / "x")],
                    run / "leak_at_k.parquet"),
        "rule-round": (["rule-round", "--data", str(data), "--name", "rule_npo", "--round", "1", "--prev",
                        str(run / "models/ga"), "--out", str(run / "x")], run / "models/ga/model.safetensors"),
        "rule-eval": (["rule-eval", "--data", str(data), str(run / "models/ga"), "--name", "rule_npo", "--out-dir", str(run / "x")],
                      run / "models/ga/model.safetensors"),
        "rule-report": (["rule-report", "--rounds", str(run / "rule/r/round_1"), "--evals",
                         str(run / "rule_eval/r/round_0.parquet"), "--out-log", str(run / "x.parquet"),
                         "--out-figure", str(run / "x.png")], run / "rule/r/round_1/round.parquet"),
    }[stage]


@pytest.mark.parametrize("how", ["truncated", "empty"])
@pytest.mark.parametrize("stage", ["finetune", "unlearn", "sample", "merge", "judge", "estimate", "figures",
                                   "rule-round", "rule-eval", "rule-report"])
def test_stage_boundary_corrupt_input_one_line(tmp_path, capsys, artifacts, stage, how):
    """Each stage fed a truncated or empty upstream artifact fails with one line naming it
    (a model folder for its weights) and how to rebuild it; nothing is written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(artifacts, run)
    argv, victim = _stage_argv(stage, run)
    victim.write_bytes(_corruptions(victim.read_bytes())[how])
    assert main(["--params", str(run / "params.yaml"), "--threads", "1", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    named = victim.parent if victim.suffix == ".safetensors" else victim
    assert len(err) == 1 and f"{named}:" in err[0] and f"`snakemake --cores all --force {named}`" in err[0], err
    assert not list(run.glob("x*"))


# ---------------------------------------------------------------- the workflow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
                          capture_output=True, text=True, env=ENV, cwd=workdir)


def _one_error_line(proc: subprocess.CompletedProcess, key: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    assert "Traceback" not in text and "Exception" not in text, text[-3000:]
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith("leakk: error: ") and key in errors[0], text[-2000:]


def test_snakemake_yaml_error_is_leakks_line(tmp_path):
    """Snakemake no longer parses params.yaml first: a syntax error gets line and column."""
    _write(tmp_path / "params.yaml", GOOD.replace("device: cpu", "device: [cpu"))
    _one_error_line(snakemake(tmp_path, "-n", "--cores", "1"), "params.yaml:3:16: not valid YAML")


def test_profile_is_in_effect_and_presets_run(tmp_path):
    """``snakemake`` (no profile flag) loads profiles/default: shell commands are printed; a
    complete preset given with --configfile is what every job reads; a partial one and
    --config overrides are refused with one line."""
    _write(tmp_path / "params.yaml", GOOD)
    (tmp_path / "configs").mkdir()
    _write(tmp_path / "configs/small.yaml", GOOD.replace("n: 4\n  max_new_tokens: 12\n  seed: 5",
                                                         "n: 4\n  max_new_tokens: 12\n  seed: 6"))
    plan = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "configs/small.yaml")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "profiles/default" in plan.stdout + plan.stderr
    assert "leakk --params configs/small.yaml data --out results/data/benchmark.parquet" in plan.stdout
    assert "leakk --params params.yaml" not in plan.stdout
    _write(tmp_path / "configs/partial.yaml", "sample: {n: 8}\n")
    _one_error_line(snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "configs/partial.yaml"),
                    "configs/partial.yaml: missing top-level keys")
    _one_error_line(snakemake(tmp_path, "-n", "--cores", "1", "--config", "seed=3"), "--config")
    assert not (tmp_path / "results").exists()


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: (sha256, mtime_ns)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_micro(tmp_path_factory):
    """A finished micro results tree built by ``snakemake`` once, and its fingerprint."""
    root = tmp_path_factory.mktemp("hardening_dag")
    _write(root / "params.yaml", GOOD)
    first = snakemake(root, "--cores", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    return root, _tree(root / "results")


@pytest.mark.slow
@pytest.mark.parametrize("case, make, key", BAD, ids=[c for c, _, _ in BAD])
def test_snakemake_refuses_bad_params_and_keeps_results(finished_micro, case, make, key):
    """``snakemake -n`` and ``snakemake --cores 2`` with a bad edit: one line naming the key,
    no job, the finished results tree byte-identical (contents and mtimes)."""
    root, before = finished_micro
    _write(root / "params.yaml", make())
    try:
        _one_error_line(snakemake(root, "-n", "--cores", "2"), key)
        _one_error_line(snakemake(root, "--cores", "2"), key)
        assert _tree(root / "results") == before
    finally:
        _write(root / "params.yaml", GOOD)


@pytest.mark.slow
def test_finished_tree_is_still_complete_after_the_corpus(finished_micro):
    """After every bad edit was refused, the good params still find nothing to do."""
    root, before = finished_micro
    again = snakemake(root, "-n", "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert _tree(root / "results") == before


def test_readme_layout_matches_the_tree():
    """Every path the layout (docs/development.md) names exists, and every tracked top-level entry and
    package module is named there."""
    import re

    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    text = (ROOT / "docs" / "development.md").read_text()  # the README links it
    block = text.split("Layout (", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"[\w./-]+", block))
    for entry in named:
        if entry.endswith("/") or re.search(r"\.(py|md|yaml|toml)$", entry) or entry in ("Snakefile", "Makefile"):
            if entry.startswith("configs/"):
                continue  # presets: present where a preset is added
            stem = entry.rstrip("/")
            assert any(p == stem or p.startswith(stem + "/") or p.endswith("/" + stem) or f"/{stem}/" in p
                       for p in tracked), f"README layout names {entry}, which is not in the tree"
    top = {p.split("/")[0] + ("/" if "/" in p else "") for p in tracked if not p.startswith(".")}
    modules = {p.split("/")[2] + ("/" if p.count("/") > 2 else "") for p in tracked
               if p.startswith("src/leakk/") and not p.endswith(("__init__.py", "py.typed"))}
    missing = sorted(e for e in top | modules if not any(n == e.rstrip("/") or n.startswith(e) for n in named))
    assert not missing, f"README layout does not mention {missing}"


# ---------------------------------------------------------------- one registry pattern


def test_four_registries_one_pattern_one_error():
    import re

    from leakk.data import BENCHMARKS
    from leakk.judges import JUDGES
    from leakk.core.registry import Registry
    from leakk.sampling import BACKENDS
    from leakk.unlearn.methods import METHODS

    for reg, known in ((BENCHMARKS, "synthetic"), (METHODS, "npo"), (JUDGES, "rougeL"), (BACKENDS, "hf")):
        assert isinstance(reg, Registry) and known in reg and known in reg.names() and known in list(reg)
        with pytest.raises(ParamsError) as err:
            reg.get("no_such_thing")
        assert re.fullmatch(rf"{re.escape(reg.key)}: unknown {reg.kind} 'no_such_thing' \(known: \[.*\]\)",
                            str(err.value)), str(err.value)


def test_registering_twice_is_refused_and_names_are_set():
    from leakk.core.registry import Registry

    reg = Registry("thing", "things")

    @reg.register("a")
    class A:
        pass

    assert A.name == "a" and reg.get("a") is A
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(type("B", (), {}))


def test_every_judge_declares_a_closed_params_schema_matching_its_constructor():
    """Interface: ``params_schema`` describes exactly the constructor's keyword parameters."""
    import inspect

    from leakk.judges import JUDGES

    for name in JUDGES:
        cls = JUDGES.get(name)
        schema = cls.params_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False, name
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        required = {p.name for p in params if p.default is p.empty and p.name in named}
        props = set(schema.get("properties", {}))
        assert props <= named or any(p.kind is p.VAR_KEYWORD for p in params), (name, props - named)
        assert required <= props, (name, required - props)  # a value the params file must be able to give


def test_benchmark_declares_the_columns_it_builds():
    from leakk.data import BENCHMARKS, build_benchmark

    frame = build_benchmark("synthetic", MICRO["data"]["synthetic"], 0)
    assert set(BENCHMARKS.get("synthetic").columns) == set(frame.columns)


def test_params_option_after_the_command(tmp_path, monkeypatch, capsys):
    _write(tmp_path / "preset.yaml", GOOD)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--params", "preset.yaml"]) == 0
    assert capsys.readouterr().out.strip() == "preset.yaml: ok"


def test_unwritable_output_is_one_line(tmp_path, capsys):
    """An OS error (here: the output folder is a file) is one line, not a traceback."""
    params = write_params(tmp_path / "params.yaml", MICRO)
    (tmp_path / "blocker").write_text("a file, not a folder")
    assert main(["--params", str(params), "data", "--out", str(tmp_path / "blocker/data.parquet")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("leakk data: error: ") and "blocker" in err[0], err

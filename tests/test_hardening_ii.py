"""Hardening II: every value that cannot run is refused before an engine plans or deletes;
numbers are finite and typed; YAML bombs and deep nesting are one line; no secret on disk.

The corpus below goes through ``leakk validate`` (fast) and, with the values this machine
cannot refuse, through ``snakemake`` and ``dvc exp run -S`` on a finished micro tree (slow).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import MICRO, ROOT, write_params
from leakk import config
from leakk.core import checks as params_checks
from leakk.cli import main
from leakk.config import load_params, validate_params
from leakk.core.errors import ParamsError

BIN = str(Path(sys.executable).parent)
ENV = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "TQDM_DISABLE": "1"}
GOOD = yaml.safe_dump(MICRO, sort_keys=False)

# key-shaped values that must never be echoed (none is a real key)
OPENAI_LIKE = "sk-proj-LEAKKtest0123456789abcdefghijABCDEFGHIJ"
HF_LIKE = "hf_LEAKKtestABCDEFGHIJKLMNOPQRSTUVWXYZab"
HEX_KEY = "a3f94c1e0b7d2e8f6a5c4b3d2e1f0a9b8c7d6e5f"
SECRETS = (OPENAI_LIKE, HF_LIKE, HEX_KEY, "hunter2-password")


def _edit(fn):
    def text() -> str:
        p = copy.deepcopy(MICRO)
        fn(p)
        return yaml.safe_dump(p, sort_keys=False)
    return text


def _set(*path_and_value):
    *path, value = path_and_value

    def fn(p):
        node = p
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return _edit(fn)


def _raw(old: str, new: str, count: int = 1):
    """A textual edit of the good file (for YAML the dumper would not write: .nan, 1e-4, …)."""
    def text() -> str:
        assert old in GOOD, old
        return GOOD.replace(old, new, count)
    return text


def _append(extra: str):
    return lambda: GOOD + extra


def _llm(**kw):
    return _set("judge", "llm", {"model": "judge-model", "api_key_env": "OPENAI_API_KEY", **kw})


def _bomb(levels: int = 9, width: int = 10) -> str:
    lines = [f'l0: &a0 [{", ".join(["lol"] * width)}]']
    lines += [f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _alias_chain(n: int) -> str:
    return "c0: &c0 [x]\n" + "".join(f"c{i}: &c{i} [*c{i - 1}]\n" for i in range(1, n))


def _deep_block(n: int) -> str:
    return "deep:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(n)) + "  " * (n + 1) + "v: 1\n"


NO_CUDA = config.device_problem("cuda") is not None
NO_VLLM = config.importlib.util.find_spec("vllm") is None
host = pytest.mark.skipif  # a case refused only where this machine lacks what it names

#: (case id, params-file text maker, what the one error line must contain)
BAD = [
    # numbers that are not numbers, integers that are floats
    ("epochs_inf", _raw("epochs: 3", "epochs: .inf"), "finetune.epochs: inf is not a finite number"),
    ("epochs_nan", _raw("epochs: 3", "epochs: .nan"), "finetune.epochs: nan is not a finite number"),
    ("unlearn_lr_nan", _raw("lr: 0.0001", "lr: .nan"), "unlearn.ga.lr: nan is not a finite number"),
    ("unlearn_lr_overflow", _raw("lr: 0.0001", "lr: 1.0e+400"), "unlearn.ga.lr: inf is not a finite number"),
    ("unlearn_lr_text", _raw("lr: 0.0001", "lr: 1e-4"), "unlearn.ga.lr: '1e-4' is text, not a number"),
    ("unlearn_lr_negative_inf", _raw("lr: 0.0001", "lr: -.inf"), "unlearn.ga.lr: -inf is not a finite"),
    ("steps_integral_float", _raw("steps: 2", "steps: 300.0"), "unlearn.ga.steps: 300.0 is not an integer: write 300"),
    ("steps_fraction", _raw("steps: 2", "steps: 2.5"), "unlearn.ga.steps: 2.5 is not an integer"),
    ("ks_float", _set("estimate", "ks", [1, 2, 4.0]), "estimate.ks[2]: 4.0 is not an integer: write 4"),
    ("ci_nan", _raw("bootstrap: 50", "bootstrap: 50\n  ci: .nan"), "estimate.ci: nan"),
    ("bootstrap_bool", _set("estimate", "bootstrap", True), "estimate.bootstrap"),
    ("judge_threshold_nan", _raw("threshold: 0.3", "threshold: .nan"), "judge.rougeL.threshold: nan"),
    ("judge_threshold_inf", _raw("threshold: 0.3", "threshold: .inf"), "judge.rougeL.threshold: inf"),
    ("judge_max_missing_nan", _raw("threshold: 0.3", "threshold: 0.3\n    max_missing: .nan"),
     "judge.rougeL.max_missing: nan"),
    ("temperature_nan", _raw("temperature: 1.0", "temperature: .nan"), "sample.decodings[0].temperature: nan"),
    ("temperature_tiny", _edit(lambda p: p["sample"]["decodings"][0].update(temperature=1e-9)),
     "sample.decodings[0].temperature"),
    ("top_p_nan", _raw("top_p: 1.0", "top_p: .nan"), "sample.decodings[0].top_p: nan"),
    ("sample_n_float", _set("sample", "n", 4.0), "sample.n: 4.0 is not an integer: write 4"),
    ("batch_rows_float", _set("sample", "batch_rows", 16.0), "sample.batch_rows: 16.0 is not an integer: write 16"),
    ("seed_float", _set("seed", 0.0), "seed: 0.0 is not an integer: write 0"),
    ("seed_too_large", _set("sample", "seed", 2 ** 64), "sample.seed"),
    ("replicates_float", _set("replicates", [0, 1.0]), "replicates[1]: 1.0 is not an integer: write 1"),
    ("warmup_ratio_nan", _raw("batch_size: 16", "batch_size: 16\n  warmup_ratio: .nan"), "finetune.warmup_ratio"),
    ("lora_alpha_inf", _raw("training: {}", "training: {lora: {alpha: .inf}}"), "training.lora.alpha: inf"),
    ("stop_greedy_leak_nan", _set("unlearn", "ga", "stop", {"greedy_leak": float("nan")}),
     "unlearn.ga.stop.greedy_leak: nan"),
    ("forget_fraction_nan", _raw("forget_fraction: 0.2", "forget_fraction: .nan"), "data.synthetic.forget_fraction"),
    ("lr_too_large", _set("finetune", "lr", 5.0), "finetune.lr"),
    ("llm_timeout_beyond_the_judges_range", _llm(timeout=1e9), "judge.llm.timeout"),
    # this machine: refused where it lacks what the value names (elsewhere the same file validates)
    pytest.param("device_cuda", _set("device", "cuda"), "device: 'cuda'", marks=host(not NO_CUDA, reason="has CUDA")),
    ("device_cuda_index", _set("device", "cuda:63"), "device: 'cuda:63'"),
    ("device_mps", _set("device", "mps"), "device: 'mps'") if sys.platform != "darwin" else
    pytest.param("device_mps", _set("device", "mps"), "", marks=pytest.mark.skip("macOS")),
    pytest.param("backend_vllm", _set("sample", "backend", "vllm"), "sample.backend: needs the vllm package",
                 marks=host(not NO_VLLM, reason="vLLM installed")),
    pytest.param("judge_device_cuda", _set("judge", "es", {"type": "nli", "model": "org/nli", "device": "cuda"}),
                 "judge.es.device: 'cuda'", marks=host(not NO_CUDA, reason="has CUDA")),
    # model entries and hub ids
    ("models_missing_folder", _set("models", "extra", {"repo": "./no_such_model"}), "models.extra.repo: ./no_such_model: no such folder"),
    ("models_folder_not_a_model", _set("models", "extra", {"repo": "."}), "models.extra.repo: .: not a model folder"),
    ("models_url", _set("models", "extra", {"repo": "https://huggingface.co/locuslab/tofu_ft_llama2-7b/tree/main",
                                            "revision": "main"}),
     "models.extra.repo: is a URL; write the hub id 'locuslab/tofu_ft_llama2-7b'"),
    ("models_url_with_token", _set("models", "extra", {"repo": f"https://user:{HF_LIKE}@huggingface.co/org/name",
                                                       "revision": "main"}), "models.extra.repo"),
    ("models_bad_hub_id", _set("models", "extra", {"repo": "org/na me", "revision": "main"}),
     "models.extra.repo: 'org/na me' is neither a folder here nor a hub id"),
    ("models_relative_path_read_as_hub_id", _set("models", "extra", {"repo": "checkpoints/full"}),
     "models.extra.revision: 'checkpoints/full' is no folder here"),
    ("model_base_url", _set("model", "base", "https://huggingface.co/gpt2"), "model.base: is a URL; write the hub id 'gpt2'"),
    ("judge_model_url", _set("judge", "es", {"type": "nli", "model": "https://hf.co/org/nli-model"}),
     "judge.es.model: is a URL; write the hub id 'org/nli-model'"),
    ("judge_model_missing_folder", _set("judge", "es", {"type": "nli", "model": "./no_nli_model"}),
     "judge.es.model: ./no_nli_model: no such folder"),
    ("dataset_missing_folder", _edit(lambda p: (p["data"].update(benchmark="tofu", tofu={"repo": "./no_tofu"}),
                                                p["judge"].pop("fact"), p["estimate"].update(headline_judge="rougeL"))),
     "data.tofu.repo: ./no_tofu: no such folder"),
    # YAML that would hang or crash a reader
    ("billion_laughs", _append(_bomb()), "aliases expand to more than 100,000 values"),
    ("billion_laughs_in_a_section", _raw("models: {}", "models: {}\nx:\n" + "".join("  " + ln + "\n" for ln in
                                                                                  _bomb().splitlines())),
     "aliases expand to more than"),
    ("nested_brackets", _append("x: " + "[" * 20000 + "]" * 20000 + "\n"), "nested deeper than 64 levels"),
    ("nested_braces", _append("x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"), "nested deeper than 64 levels"),
    ("nested_blocks", _append(_deep_block(200)), "nested deeper than 64 levels"),
    ("alias_chain", _append(_alias_chain(500)), "nested deeper than 64 levels through aliases"),
    ("recursive_alias", _append("loop: &loop [*loop]\n"), "an alias refers to the node that contains it"),
    # secrets: refused, and never echoed
    ("api_key_inline_openai", _llm(api_key_env=OPENAI_LIKE), "judge.llm.api_key_env: holds what looks like an API key"),
    ("api_key_inline_hf", _llm(api_key_env=HF_LIKE), "judge.llm.api_key_env: holds what looks like an API key"),
    ("api_key_inline_hex", _llm(api_key_env=HEX_KEY), "judge.llm.api_key_env: holds what looks like an API key"),
    ("api_key_env_not_a_name", _llm(api_key_env="hunter2-password"),
     "judge.llm.api_key_env: is not the name of an environment variable"),
    ("api_key_env_number", _llm(api_key_env=12345), "judge.llm.api_key_env"),
    ("api_key_as_unknown_key", _llm(api_key=OPENAI_LIKE), "judge.llm.api_key: looks like an API key"),
    ("key_in_stop_judge", _set("unlearn", "ga", "stop", {"greedy_leak": 0.1, "judge": {
        "type": "llm", "model": "m", "api_key_env": OPENAI_LIKE}}), "unlearn.ga.stop.judge.api_key_env"),
    ("key_in_a_prompt", _set("prompt_template", f"{OPENAI_LIKE} Q: {{question}} A:"), "prompt_template: looks like an API key"),
    ("key_in_a_revision", _set("models", "extra", {"repo": "org/name", "revision": HF_LIKE}), "models.extra.revision"),
    ("base_url_with_password", _llm(base_url="https://me:hunter2-password@llm.example.org/v1"),
     "judge.llm.base_url: carries credentials"),
    ("base_url_with_query_key", _llm(base_url=f"https://llm.example.org/v1?api_key={HEX_KEY}"),
     "judge.llm.base_url: carries credentials"),
    ("cache_dir_climbs_out", _llm(cache_dir="../../elsewhere"), "judge.llm.cache_dir: '../../elsewhere' is outside"),
    ("cache_dir_absolute", _llm(cache_dir="/tmp/leakk_cache"), "judge.llm.allow_outside: true"),
    ("cache_dir_home", _llm(cache_dir="~/leakk_cache"), "judge.llm.cache_dir"),
]
_IDS = [c.values[0] if hasattr(c, "values") else c[0] for c in BAD]
YAML_BOMBS = {"billion_laughs", "billion_laughs_in_a_section", "nested_brackets", "nested_braces", "nested_blocks",
              "alias_chain", "recursive_alias"}


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def test_corpus_is_new_and_large():
    from test_hardening import BAD as FIRST

    assert len(BAD) >= 58 and len(set(_IDS)) == len(_IDS)
    assert not set(_IDS) & {c for c, _, _ in FIRST}


@pytest.mark.parametrize("case, make, key", BAD, ids=_IDS)
def test_leakk_validate_refuses_in_one_line(tmp_path, monkeypatch, capsys, case, make, key):
    """``leakk validate``: exit 2, nothing raised (no traceback), one line naming the key and
    rule, no secret echoed; a YAML bomb is refused in well under a second of CPU time (the
    answer comes from one walk over the file's few dozen distinct nodes)."""
    monkeypatch.chdir(tmp_path)  # messages name the file as given; "." is this empty folder
    monkeypatch.delenv(params_checks.HOST_ENV, raising=False)
    _write(tmp_path / "params.yaml", make())
    cpu = time.process_time()
    assert main(["--params", "params.yaml", "validate"]) == 2
    cpu = time.process_time() - cpu
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith("leakk validate: error: params.yaml") and key in lines[0], lines[0]
    assert "(rule: " in lines[0], lines[0]
    assert not any(s in err for s in SECRETS), lines[0]
    if case in YAML_BOMBS:
        assert cpu < 1.0, f"{case}: {cpu:.2f} s of CPU"


def test_the_same_file_validates_where_the_device_exists(monkeypatch):
    """A CUDA params file: refused on a machine without CUDA, valid on one with it, and valid
    everywhere with the host checks off (the jobs then check their own machine)."""
    p = dict(MICRO, device="cuda:1")
    monkeypatch.delenv(params_checks.HOST_ENV, raising=False)
    monkeypatch.setattr(config, "cuda_device_count", lambda: 0)
    with pytest.raises(ParamsError, match=r"device: 'cuda:1': this machine has 0 usable CUDA devices"):
        validate_params(p)
    monkeypatch.setattr(config, "cuda_device_count", lambda: 1)
    with pytest.raises(ParamsError, match=r"this machine has 1 usable CUDA device;"):
        validate_params(p)
    monkeypatch.setattr(config, "cuda_device_count", lambda: 2)
    assert validate_params(p)["device"] == "cuda:1"
    monkeypatch.setattr(config, "cuda_device_count", lambda: 0)
    assert validate_params(p, host=False)["device"] == "cuda:1"
    monkeypatch.setenv(params_checks.HOST_ENV, "off")
    assert validate_params(p)["device"] == "cuda:1"


def test_no_cuda_probe_imports_torch_where_no_driver_is(monkeypatch):
    monkeypatch.setattr(config.shutil, "which", lambda name: None)
    monkeypatch.setattr(config.Path, "exists", lambda self: False)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would raise
    assert config.cuda_device_count() == 0


@pytest.mark.parametrize("argv, env, local", [
    ([], None, True),
    (["--cores", "2"], None, True),
    (["--executor", "slurm"], None, False),
    (["--executor=slurm"], None, False),
    (["-e", "local"], None, True),
    (["--workflow-profile", str(ROOT / "workflow/profiles/slurm")], None, False),
    (["--workflow-profile", str(ROOT / "profiles/default")], None, True),
    (["--executor", "slurm"], "on", True),
    ([], "off", False),
])
def test_host_checks_apply_where_the_jobs_run(monkeypatch, argv, env, local):
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    if env is None:
        monkeypatch.delenv(params_checks.HOST_ENV, raising=False)
    else:
        monkeypatch.setenv(params_checks.HOST_ENV, env)
    assert params_checks.host_checks_apply(argv) is local


def test_every_schema_number_has_a_range():
    """Every number and integer of the params schema and of every judge's schema has a lower
    bound; seeds fit numpy and torch; the judges' schemas are what their constructors accept."""
    from leakk.core.schema import params_schema as schema
    from leakk.judges import JUDGES
    from leakk.judges.base import label_schema
    from leakk.sampling import BACKENDS
    from leakk.unlearn.methods import METHODS

    def walk(node, path):
        if isinstance(node, dict):
            kinds = {node["type"]} if isinstance(node.get("type"), str) else set(node.get("type") or ())
            if kinds & {"number", "integer"}:
                yield path, node
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")

    schemas = {"params": schema(), **{f"judge {n}": label_schema(JUDGES.get(n)) for n in JUDGES},
               **{f"method {n}": METHODS.get(n).params_schema for n in METHODS},
               **{f"backend {n}": BACKENDS.get(n).params_schema for n in BACKENDS}}
    numbers = [(f"{name}{path}", node) for name, s in schemas.items() for path, node in walk(s, "")]
    assert len(numbers) > 40
    unbounded = [p for p, node in numbers if "minimum" not in node and "exclusiveMinimum" not in node]
    assert not unbounded, unbounded
    seeds = [node for p, node in numbers if p.endswith("seed") or p.endswith("replicates.items")]
    assert seeds and all(node.get("maximum") == 2 ** 32 - 1 for node in seeds)


def test_integral_floats_are_refused_with_the_integer_to_write():
    for key, edit in (("sample.n", lambda p: p["sample"].update(n=4.0)),
                      ("model.arch.n_layer", lambda p: p["model"]["arch"].update(n_layer=1.0))):
        p = copy.deepcopy(MICRO)
        edit(p)
        with pytest.raises(ParamsError, match=rf"{key}: \d+\.0 is not an integer: write \d+ \(rule: integer\)$"):
            validate_params(p)
    assert validate_params(MICRO)["sample"]["n"] == 4  # ints stay ints


@pytest.mark.parametrize("text, fixed", [("1e-4", "1.0e-4"), ("5E3", "5.0e+3"), ("2.5e5", "2.5e+5"), ("-1e+2", "-1.0e+2")])
def test_yaml11_exponents_get_the_spelling_that_parses(text, fixed):
    assert params_checks._yaml11_float(text) == fixed
    assert isinstance(yaml.safe_load(f"x: {fixed}")["x"], float)
    assert isinstance(yaml.safe_load(f"x: {text}")["x"], str)  # why the hint is needed


@pytest.mark.parametrize("value, key_shaped", [
    (OPENAI_LIKE, True), (HF_LIKE, True), ("ghp_" + "A1b2C3d4" * 5, True), ("AKIAIOSFODNN7EXAMPLE", True),
    ("OPENAI_API_KEY", False), ("AZURE_OPENAI_KEY_PROD_EASTUS2", False), ("sk-learn-model-v2", False),
    ("8d1c0c3c5e0a8b1f1c9b6f6f2f8b5f3f9a7e6d5c", False),  # a commit hash is no key
    ("task-oriented-prompting", False), ("locuslab/tofu_ft_llama2-7b", False)])
def test_key_shapes(value, key_shaped):
    assert params_checks.looks_like_key(value) is key_shaped


def test_api_key_env_names_pass_and_keys_do_not():
    assert params_checks._key_not_name(HEX_KEY) and params_checks._key_not_name(OPENAI_LIKE)
    for name in ("OPENAI_API_KEY", "MY_JUDGE_KEY_2", "LEAKK_TEST_JUDGE_KEY", "_private"):
        assert not params_checks._key_not_name(name)
        assert validate_params(dict(MICRO, judge={**MICRO["judge"], "llm": {"model": "m", "api_key_env": name}}))


def test_redaction_of_registered_and_key_shaped_values(monkeypatch):
    key = "plainKEYwithoutAnyKnownPrefix0123456789"
    monkeypatch.setenv("LEAKK_TEST_REDACT_KEY", key)
    monkeypatch.setattr(params_checks, "_REGISTERED", set())
    params_checks.register_secret_values(validate_params(dict(MICRO, judge={**MICRO["judge"], "llm": {
        "model": "m", "api_key_env": "LEAKK_TEST_REDACT_KEY"}})))
    text = f"401 for {key} and {OPENAI_LIKE}; the name LEAKK_TEST_REDACT_KEY stays"
    assert params_checks.redact(text) == "401 for [redacted] and [redacted]; the name LEAKK_TEST_REDACT_KEY stays"


def test_cache_dir_inside_the_project_or_explicitly_outside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to("/tmp")
    llm = {"model": "m", "api_key_env": None}
    ok = [{"cache_dir": "results/cache/llm"}, {"cache_dir": "./x/../y"}, {"cache_dir": None},
          {"cache_dir": "/tmp/elsewhere", "allow_outside": True}]
    for extra in ok:
        validate_params(dict(MICRO, judge={**MICRO["judge"], "llm": {**llm, **extra}}))
    for bad in ("../x", "/tmp/elsewhere", "link/cache"):  # a link out of the project is outside too
        with pytest.raises(ParamsError, match="judge.llm.cache_dir: .* is outside the project folder"):
            validate_params(dict(MICRO, judge={**MICRO["judge"], "llm": {**llm, "cache_dir": bad}}))


def test_llm_cache_key_leaves_out_the_endpoint(monkeypatch):
    """Moving the server keeps the cache: the key is what the model is asked, not where."""
    from leakk.judges import make_judge

    a = make_judge("llm", model="m", api_key_env=None, base_url="http://127.0.0.1:8000/v1")
    b = make_judge("llm", model="m", api_key_env=None, base_url="https://judge.example.org/v1", cache_dir="elsewhere")
    c = make_judge("llm", model="m2", api_key_env=None, base_url="http://127.0.0.1:8000/v1")
    d = make_judge("llm", model="m", api_key_env=None, temperature=0.7)
    args = ("q", "ref", "comp")
    assert a.item_key(*args) == b.item_key(*args) and a.cache_file.name == b.cache_file.name
    assert len({a.item_key(*args), c.item_key(*args), d.item_key(*args)}) == 3


# ---------------------------------------------------------------- one line from every stage


def test_an_unexpected_stage_error_is_one_line_naming_what_it_made(tmp_path, monkeypatch, capsys):
    import leakk.data

    params = write_params(tmp_path / "params.yaml", MICRO)
    out = tmp_path / "data.parquet"

    def boom(*a, **kw):
        raise OverflowError("cannot convert float infinity to integer\nsecond line")

    monkeypatch.setattr(leakk.data, "build_benchmark", boom)
    monkeypatch.delenv("LEAKK_DEBUG", raising=False)
    assert main(["--params", str(params), "data", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"leakk data: error: {out}: OverflowError: cannot convert float infinity to integer "
                   "(set LEAKK_DEBUG=1 for the traceback)"]
    monkeypatch.setenv("LEAKK_DEBUG", "1")
    assert main(["--params", str(params), "data", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("leakk data: error:")


def test_an_unexpected_error_names_the_params_entry(tmp_path, monkeypatch, capsys):
    import leakk.unlearn.run

    params = write_params(tmp_path / "params.yaml", MICRO)
    monkeypatch.setattr(leakk.unlearn.run, "run_unlearning", lambda *a, **kw: 1 / 0)
    monkeypatch.delenv("LEAKK_DEBUG", raising=False)
    (tmp_path / "data.parquet").write_bytes(b"")
    import leakk.stages.train

    monkeypatch.setattr(leakk.stages.train, "read_parquet", lambda path, contract: None)
    assert main(["--params", str(params), "unlearn", "--data", "d", "--name", "ga", "--model-dir", "m",
                 "--out", "results/models/ga"]) == 1
    assert capsys.readouterr().err.strip() == ("leakk unlearn: error: results/models/ga (unlearn.ga): "
                                               "ZeroDivisionError: division by zero (set LEAKK_DEBUG=1 for the traceback)")


# ---------------------------------------------------------------- Snakemake reads presets through leakk


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *args],
                          capture_output=True, text=True, env={**ENV, **(env or {})}, cwd=workdir)


def _one_line(proc: subprocess.CompletedProcess, key: str) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    assert "Traceback" not in text and "Exception" not in text, text[-3000:]
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith("leakk: error: ") and key in errors[0], text[-2000:]
    return errors[0]


@pytest.mark.parametrize("case, edit, key", [
    ("syntax", lambda t: t.replace("device: cpu", "device: [cpu"), "configs/preset.yaml:3:16: not valid YAML"),
    ("tab", lambda t: t.replace("  benchmark:", "\tbenchmark:"), "configs/preset.yaml:5:1: not valid YAML"),
    ("bomb", lambda t: t + _bomb(), "configs/preset.yaml:"),
    ("deep", lambda t: t + "x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    ("duplicate", lambda t: t + "seed: 3\n", "configs/preset.yaml:"),
])
def test_a_broken_preset_is_leakks_line_not_snakemakes(tmp_path, case, edit, key):
    """Snakemake parses --configfile before the Snakefile runs: leakk reads it first (the
    snakemake_logger_plugin_leakk hook), so a YAML error is one line with line and column."""
    (tmp_path / "configs").mkdir()
    _write(tmp_path / "configs/preset.yaml", edit(GOOD))
    _one_line(snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "configs/preset.yaml"), key)
    assert not (tmp_path / "results").exists()


def test_snakemake_refuses_a_device_this_machine_lacks_before_planning(tmp_path):
    if not NO_CUDA:
        pytest.skip("this machine has CUDA")
    _write(tmp_path / "params.yaml", GOOD.replace("device: cpu", "device: cuda"))
    _one_line(snakemake(tmp_path, "-n", "--cores", "1"), "params.yaml: device: 'cuda': this machine has 0")
    planned = snakemake(tmp_path, "-n", "--cores", "1", env={params_checks.HOST_ENV: "off"})
    assert planned.returncode == 0 and "finetune" in planned.stdout, planned.stderr[-2000:]


# ---------------------------------------------------------------- a finished micro tree (slow)


def _outputs(root: Path) -> dict[str, tuple[str, int]]:
    """Every output under results/ (sha256, mtime) — logs and timings aside, which a failed job
    may append to."""
    import hashlib

    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted((root / "results").rglob("*"))
            if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(root / "results").parts)}


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, env=ENV,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def finished_tree(tmp_path_factory):
    """The micro DAG built once by Snakemake in a git + DVC project (recorded in dvc.lock)."""
    root = tmp_path_factory.mktemp("finished_micro")
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    write_params(root / "params.yaml", MICRO)
    made = subprocess.run([f"{BIN}/leakk", "dvc-yaml"], cwd=root, env=ENV, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr  # dvc.yaml for these params (the repository's is for params.yaml)
    assert _git(root, "init", "-q").returncode == 0
    assert subprocess.run([f"{BIN}/dvc", "init", "-q"], cwd=root, env=ENV).returncode == 0
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    built = snakemake(root, "--cores", "2")
    assert built.returncode == 0, built.stderr[-3000:]
    assert _git(root, "add", "-A").returncode == 0 and _git(root, "commit", "-qm", "built").returncode == 0
    return root


#: values validation cannot refuse on this machine, as (id, params key, value, the same as
#: ``dvc exp run -S`` takes it; ``+`` adds a key): the hub is out of reach here, so whether a revision or a judge
#: model exists is known only when a job fetches it
UNREFUSABLE = [
    ("models_hub_revision_not_fetched", "models.extra", {"repo": "org/no-such-model", "revision": "0" * 40},
     f"+models.extra={{repo:'org/no-such-model',revision:'{'0' * 40}'}}"),
    ("judge_model_not_on_the_hub", "judge.es", {"type": "nli", "model": "org/no-such-nli-model", "device": "cpu"},
     "+judge.es={type:nli,model:'org/no-such-nli-model',device:cpu}"),
]
#: the issue's values that passed validation and then deleted work, now refused before anything
REFUSED = [
    ("device_cuda", "device", "cuda", "device=cuda"),
    ("backend_vllm", "sample.backend", "vllm", "sample.backend=vllm"),
    ("epochs_inf", "finetune.epochs", float("inf"), "finetune.epochs=inf"),
    ("unlearn_lr_nan", "unlearn.ga.lr", float("nan"), "unlearn.ga.lr=nan"),
    ("steps_float", "unlearn.ga.steps", 300.0, "unlearn.ga.steps=300.0"),
    ("ks_float", "estimate.ks", [1, 2, 64.0], "estimate.ks=[1,2,64.0]"),
    ("ci_nan", "estimate.ci", float("nan"), "+estimate.ci=nan"),  # + : a key params.yaml leaves to its default
    ("threshold_nan", "judge.rougeL.threshold", float("nan"), "judge.rougeL.threshold=nan"),
    ("temperature_nan", "sample.decodings", [{"temperature": float("nan"), "top_p": 1.0}],
     "sample.decodings=[{temperature:nan,top_p:1.0}]"),
]


def _with(params_text: str, key: str, value) -> str:
    p = yaml.safe_load(params_text)
    node = p
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return yaml.safe_dump(p, sort_keys=False)


def _keeps_everything(root: Path, run) -> subprocess.CompletedProcess:
    """Run ``run()``, put params.yaml back, and check that no finished output was deleted or
    rewritten (contents and mtimes)."""
    before = _outputs(root)
    try:
        proc = run()
    finally:
        _git(root, "checkout", "params.yaml", "dvc.yaml")
    after = _outputs(root)
    assert {k: v for k, v in after.items() if k in before} == before, "an output was deleted or rewritten"
    return proc


def _snakemake_run(root: Path, key: str, value):
    def run():
        (root / "params.yaml").write_text(_with((root / "params.yaml").read_text(), key, value))
        return snakemake(root, "--cores", "2", env={"HF_HUB_OFFLINE": "1"})
    return run


def _dvc_exp_run(root: Path, edit: str):
    return lambda: subprocess.run([f"{BIN}/dvc", "exp", "run", "-S", edit], cwd=root, capture_output=True,
                                  text=True, env={**ENV, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
@pytest.mark.parametrize("case, key, value, edit", UNREFUSABLE, ids=[c[0] for c in UNREFUSABLE])
def test_a_value_only_a_job_can_refuse_deletes_nothing(finished_tree, case, key, value, edit):
    """Edit params, run snakemake: the job that meets the value fails with one line (no
    traceback), and every finished output stays byte-identical; the same for dvc exp run -S."""
    proc = _keeps_everything(finished_tree, _snakemake_run(finished_tree, key, value))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text, text[-3000:]
    assert any(ln.startswith("leakk ") and ": error: " in ln for ln in text.splitlines()), text[-3000:]
    dvc = _keeps_everything(finished_tree, _dvc_exp_run(finished_tree, edit))
    text = dvc.stdout + dvc.stderr
    assert dvc.returncode != 0 and "Traceback" not in text, text[-3000:]
    assert any(ln.startswith("leakk ") and ": error: " in ln for ln in text.splitlines()), text[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("case, key, value, edit", REFUSED, ids=[c[0] for c in REFUSED])
def test_the_issues_values_are_refused_before_snakemake_or_dvc_touch_anything(finished_tree, case, key, value, edit):
    if case == "device_cuda" and not NO_CUDA or case == "backend_vllm" and not NO_VLLM:
        pytest.skip("this machine can run it")
    _one_line(_keeps_everything(finished_tree, _snakemake_run(finished_tree, key, value)), key)
    dvc = _keeps_everything(finished_tree, _dvc_exp_run(finished_tree, edit))
    text = dvc.stdout + dvc.stderr
    leakk_lines = [ln for ln in text.splitlines() if ln.startswith("leakk ") and ": error: " in ln]
    assert dvc.returncode != 0 and "Traceback" not in text, text[-3000:]
    # DVC's first stage (dvc-yaml --check, then validate) refuses it: one line naming the key
    assert len(leakk_lines) == 1 and f"params.yaml: {key}" in leakk_lines[0], text[-3000:]
    assert "Running stage 'validate'" in text and text.count("Running stage") == 1, text[-3000:]


@pytest.mark.slow
def test_the_tree_is_still_finished(finished_tree):
    again = snakemake(finished_tree, "-n", "--cores", "2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    status = subprocess.run([f"{BIN}/dvc", "status"], cwd=finished_tree, capture_output=True, text=True, env=ENV)
    assert "up to date" in status.stdout, status.stdout[-2000:]


# ---------------------------------------------------------------- no key on disk (slow)

INLINE_KEY = "sk-LEAKKinline0123456789abcdefghijklmnopqrstuv"
ENV_KEY = "LEAKKenvKEY0123456789abcdefXYZ"  # no known key shape: only registration redacts it


def _traces(root: Path, key: str) -> list[str]:
    """Files under results/, .snakemake/ and .dvc/ holding the key or a 12-character piece of it."""
    pieces = [key[i:i + 12].encode() for i in range(0, len(key) - 11, 6)]
    return [str(p.relative_to(root)) for top in ("results", ".snakemake", ".dvc") for p in (root / top).rglob("*")
            if p.is_file() and any(piece in p.read_bytes() for piece in pieces)]


@pytest.mark.slow
def test_no_key_on_disk_after_failing_and_succeeding_judge_runs(tmp_path, monkeypatch):
    """An inline key (refused) and a key in the environment, through a failing judge run (the
    server echoes the key in its replies) and a succeeding one, by Snakemake and by DVC: neither
    key, nor a piece of it, is in any file under results/, .snakemake/ or .dvc/, nor on the
    console."""
    import test_judges_llm as llm_tests

    target = "results/judgments/full/llm/greedy.parquet"
    monkeypatch.setattr(llm_tests, "FAKE_KEY", ENV_KEY)  # what the server accepts
    echo = {"on": True}
    script = lambda item, attempt: f"NO, not with {ENV_KEY}" if echo["on"] else "ok"  # noqa: E731
    with llm_tests.FakeChatServer(script) as server:
        work = llm_tests._workdir(tmp_path, server.url, {"llm": llm_tests.llm_params(
            server.url, "results/cache/llm_judge", max_retries=0)})
        env = {**ENV, llm_tests.KEY_ENV: ENV_KEY}
        run = lambda *a: subprocess.run(a, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
        assert run(f"{BIN}/leakk", "dvc-yaml").returncode == 0  # dvc.yaml for this params file
        assert run("git", "init", "-q").returncode == 0 and run(f"{BIN}/dvc", "init", "-q").returncode == 0

        def both(expect_ok: bool) -> str:
            smk = run(f"{BIN}/snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work), target,
                      "--cores", "1", "--allowed-rules", "judge")
            dvc = run(f"{BIN}/dvc", "repro", "--single-item", "judge@full-llm")
            for proc in (smk, dvc):
                assert (proc.returncode == 0) is expect_ok, (proc.stdout + proc.stderr)[-3000:]
            return smk.stdout + smk.stderr + dvc.stdout + dvc.stderr

        params = yaml.safe_load((work / "params.yaml").read_text())
        inline = copy.deepcopy(params)
        inline["judge"]["llm"]["api_key_env"] = INLINE_KEY
        (work / "params.yaml").write_text(yaml.safe_dump(inline, sort_keys=False))
        console = both(expect_ok=False)  # refused before any job: one line, no key
        assert "judge.llm.api_key_env: holds what looks like an API key" in console
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        failing = both(expect_ok=False)  # every reply is "NO, not with <key>": missing, the stage fails
        assert "max_missing" in failing and server.total > 0
        assert "[redacted]" in failing  # the echoed key was there to leak (Snakemake shows the failed log)
        console += failing
        echo["on"] = False
        console += both(expect_ok=True)
        assert (work / target).is_file() and (work / "dvc.lock").is_file()
    for key in (INLINE_KEY, ENV_KEY):
        assert _traces(work, key) == [], key
        assert key[:12] not in console and key[-12:] not in console

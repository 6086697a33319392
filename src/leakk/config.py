"""params.yaml: load, fill schema defaults, validate (schema + cross-field rules).

Every failure is one :class:`ParamsError` line naming the key and the rule it breaks, raised
before any work starts (the CLI and the Snakefile both call :func:`load_params`).
"""

from __future__ import annotations

import copy
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from leakk.errors import ParamsError

BASE_MODELS = ("full", "retrain")


@cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("leakk").joinpath("schemas/params.schema.yaml").read_text())


def _with_defaults(validator_class):
    """A validator that also fills ``default`` values into the instance (jsonschema recipe)."""
    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_props(validator, properties, instance, schema_)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate_params(params: dict[str, Any], source: str = "params.yaml") -> dict[str, Any]:
    """Return a defaults-filled copy of ``params``, or raise ParamsError on the first problem."""
    params = copy.deepcopy(params)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise ParamsError(f"{source}: {_key(e.absolute_path)}: {e.message} (rule: {e.validator})")
    _cross_field(params, source)
    return params


def _fail(source: str, key: str, msg: str) -> None:
    raise ParamsError(f"{source}: {key}: {msg}")


def _cross_field(p: dict[str, Any], src: str) -> None:
    from leakk.judges import JUDGES
    from leakk.sampling.decoding import Decoding
    from leakk.unlearn.methods import METHODS

    n = p["sample"]["n"]
    for k in p["estimate"]["ks"]:
        if k > n:
            _fail(src, "estimate.ks", f"k={k} > sample.n={n}: leak@k is undefined for k > n (rule: k ≤ n)")
    for name, run in p["unlearn"].items():
        if run["method"] not in METHODS:
            _fail(src, f"unlearn.{name}.method", f"unknown method {run['method']!r} (known: {sorted(METHODS)})")
    names = [Decoding(d["temperature"], d["top_p"]).name for d in p["sample"]["decodings"]]
    if len(set(names)) != len(names):
        _fail(src, "sample.decodings", f"duplicate decodings {names} (rule: unique)")
    for name, cfg in p["judge"].items():
        kind = (cfg or {}).get("type", name)
        if kind not in JUDGES:
            _fail(src, f"judge.{name}", f"unknown judge {kind!r} (known: {sorted(JUDGES)})")
    for name, run in (p.get("rule") or {}).items():
        if name in p["unlearn"]:
            _fail(src, f"rule.{name}", "name already used by an unlearn run (rule: model names are unique)")
        if run["base"] not in p["unlearn"]:
            _fail(src, f"rule.{name}.base", f"{run['base']!r} is not an unlearn run (known: {sorted(p['unlearn'])})")
        if run["judge"] not in p["judge"]:
            _fail(src, f"rule.{name}.judge", f"{run['judge']!r} is not a configured judge (known: {sorted(p['judge'])})")
        if any(run["seed"] + 1000 * r == p["sample"]["seed"] for r in range(run["rounds"] + 1)):
            _fail(src, f"rule.{name}.seed", "equals sample.seed: RULE must not train on the evaluation samples (rule: differ)")
    est = p["estimate"]
    if est["headline_judge"] not in p["judge"]:
        _fail(src, "estimate.headline_judge", f"{est['headline_judge']!r} is not a configured judge")
    if est["headline_decoding"] not in names:
        _fail(src, "estimate.headline_decoding", f"{est['headline_decoding']!r} is not among sample.decodings {names}")
    from leakk.data import BENCHMARKS

    if p["data"]["benchmark"] not in BENCHMARKS:
        _fail(src, "data.benchmark", f"unknown benchmark {p['data']['benchmark']!r} (known: {sorted(BENCHMARKS)})")
    if p["data"]["benchmark"] == "synthetic":
        syn = p["data"].get("synthetic") or {}
        authors, frac = syn.get("authors", 100), syn.get("forget_fraction", 0.1)
        if round(authors * frac) < 1:
            _fail(src, "data.synthetic.forget_fraction",
                  f"{frac} × {authors} authors gives an empty forget split (rule: ≥ 1 forget author)")
        if round(authors * frac) >= authors:
            _fail(src, "data.synthetic.forget_fraction", f"{frac} leaves no retain split")
    base = p["model"].get("base")
    if base and not (Path(base) / "config.json").is_file():
        _fail(src, "model.base", f"{base}: no such model folder (rule: an HF folder with config.json)")
    if not base:
        for key in ("vocab_size", "arch"):
            if key not in p["model"]:
                _fail(src, f"model.{key}", "required when model.base is null (rule: required)")
        limit = p["model"]["arch"].get("n_positions", 1024)
        lengths = {"sample.max_new_tokens": p["sample"]["max_new_tokens"]}
        lengths.update({f"rule.{k}.max_new_tokens": r["max_new_tokens"] for k, r in (p.get("rule") or {}).items()})
        for key, value in lengths.items():
            if value >= limit:
                _fail(src, key, f"{value} must be < model.arch.n_positions={limit} (rule: fits the model)")
    if p["prompt_template"] != "chat" and "{question}" not in p["prompt_template"]:
        _fail(src, "prompt_template", 'must contain "{question}" or be "chat"')


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})".replace("\n", " ")) from None
    return validate_params(raw, str(path))


def model_names(p: dict[str, Any]) -> list[str]:
    """Every model of the experiment, in table order."""
    return [*BASE_MODELS, *p["unlearn"], *(p.get("rule") or {})]


def decoding_names(p: dict[str, Any]) -> list[str]:
    """``greedy`` plus each sampled decoding's canonical name."""
    from leakk.sampling.decoding import Decoding

    return ["greedy", *(Decoding(d["temperature"], d["top_p"]).name for d in p["sample"]["decodings"])]


def utility_judge(p: dict[str, Any]) -> str:
    """The judge that scores retain-set greedy answers: ``fact`` where configured (ground
    truth on the synthetic benchmark), else the headline judge."""
    return "fact" if "fact" in p["judge"] else p["estimate"]["headline_judge"]

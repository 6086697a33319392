"""params.yaml: load, fill schema defaults, validate (schema + cross-field rules).

Every failure is one :class:`ParamsError` line naming the key and the rule it breaks, raised
before any work starts (the CLI and the Snakefile both call :func:`load_params`).
"""

from __future__ import annotations

import copy
import os
import string
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from leakk import params_checks
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


def _error_line(e: jsonschema.ValidationError, prefix: tuple = ()) -> tuple[str, str]:
    """(key, message) of a schema error; an unknown key is named itself, not its parent."""
    path = [*prefix, *e.absolute_path]
    own = params_checks.describe(e, _key(path))  # numbers of the wrong kind; secrets never echoed
    if own:
        return _key(path), own
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = set(e.schema.get("properties", {}))
        extra = sorted(k for k in e.instance if k not in allowed)
        if extra and allowed:
            return _key([*path, extra[0]]), _unknown_key(extra[0], allowed)
        if extra:
            return _key([*path, extra[0]]), "unknown key (this section takes no keys)"
    if e.validator == "pattern" and isinstance(e.schema, dict) and e.schema.get("description"):
        return _key(path), f"{e.instance!r} is not one of: {e.schema['description']}"
    return _key(path), e.message


def _unknown_key(key: Any, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}allowed: {sorted(allowed)})"


def _schema_errors(instance: Any, schema_: dict[str, Any], src: str, prefix: tuple = (),
                   fill_defaults: bool = False) -> None:
    validator_class = params_checks.STRICT_VALIDATOR  # integers are ints, numbers finite
    validator = (_with_defaults(validator_class) if fill_defaults else validator_class)(schema_)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        e = errors[0]
        key, msg = _error_line(e, prefix)
        raise ParamsError(f"{src}: {key}: {msg}" + ("" if "(rule: " in msg else f" (rule: {e.validator})"))


def validate_params(params: dict[str, Any], source: str = "params.yaml", host: bool | None = None) -> dict[str, Any]:
    """Return a defaults-filled copy of ``params``, or raise ParamsError on the first problem.

    ``host``: also check that this machine has the device and packages the params need
    (default: unless ``LEAKK_HOST_CHECKS=off``; see :func:`leakk.params_checks.host_checks_apply`)."""
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: not a mapping of params keys (got {type(params).__name__}; "
                          "rule: a YAML mapping like params.yaml)")
    missing = [k for k in schema()["required"] if k not in params]
    unknown = [k for k in params if k not in schema()["properties"]]
    if missing and unknown:  # most likely a misspelt section name
        raise ParamsError(f"{source}: {unknown[0]}: {_unknown_key(unknown[0], set(schema()['properties']))} "
                          "(rule: additionalProperties)")
    if missing:
        raise ParamsError(
            f"{source}: missing top-level keys {missing}: a params file (a preset too) must be "
            "complete; start from a copy of params.yaml (rule: required)")
    params = copy.deepcopy(params)
    _schema_errors(params, schema(), source, fill_defaults=True)
    params_checks.check_secrets(params, source)  # first: no later message may echo a key
    _cross_field(params, source)
    if params_checks.host_checks_apply() if host is None else host:
        params_checks.check_host(params, source)
    return params


def schema_section(section: dict[str, Any], key: str, source: str = "params.yaml") -> dict[str, Any]:
    """A defaults-filled copy of one top-level section checked against its schema alone
    (for code handed a section directly, e.g. a training loop's ``training=``)."""
    section = copy.deepcopy(section)
    _schema_errors(section, schema()["properties"][key], source, prefix=(key,), fill_defaults=True)
    return section


def check_accumulation(p: dict[str, Any], src: str) -> None:
    """Every batch that trains splits evenly into ``training.gradient_accumulation``
    micro-batches (``batch_size`` is the effective batch; RULE uses its base run's)."""
    accumulation = p["training"]["gradient_accumulation"]
    batches = {"finetune.batch_size": p["finetune"]["batch_size"]}
    batches.update({f"unlearn.{name}.batch_size": run["batch_size"] for name, run in p["unlearn"].items()})
    for key, size in batches.items():
        if size % accumulation:
            _fail(src, key, f"{size} is not divisible by training.gradient_accumulation = {accumulation} (rule: "
                            "batch_size is the effective batch, split into equal micro-batches)")


def _fail(source: str, key: str, msg: str) -> None:
    raise ParamsError(f"{source}: {key}: {msg}")


def check_template(template: str, src: str = "params.yaml", key: str = "prompt_template") -> None:
    """A prompt template is ``chat`` or a format string whose only field is ``{question}``
    (literal braces doubled: ``{{``)."""
    if template == "chat":
        return
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        _fail(src, key, f"{template!r} is not a valid format string ({e}; write a literal brace as {{{{ or }}}}) "
                        "(rule: format string)")
    bad = [f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}" for name, spec, conv in fields
           if (name, spec, conv) != ("question", "", None)]
    if bad:
        _fail(src, key, f"{template!r} has the field {bad[0]}; the only field allowed is {{question}} "
                        "(rule: format string with {question})")
    if not fields:
        _fail(src, key, f'{template!r} has no {{question}} field (rule: a format string with {{question}} or "chat")')


def _cross_field(p: dict[str, Any], src: str) -> None:
    from leakk.data import BENCHMARKS
    from leakk.sampling import BACKENDS
    from leakk.sampling.decoding import Decoding
    from leakk.unlearn.methods import METHODS

    check_template(p["prompt_template"], src)
    if p["data"]["benchmark"] not in BENCHMARKS:
        raise BENCHMARKS.unknown(p["data"]["benchmark"]).with_source(src)
    columns = BENCHMARKS.get(p["data"]["benchmark"]).columns
    if p["sample"]["backend"] not in BACKENDS:  # no import: a backend module may be heavy
        raise BACKENDS.unknown(p["sample"]["backend"]).with_source(src)
    n = p["sample"]["n"]
    for k in p["estimate"]["ks"]:
        if k > n:
            _fail(src, "estimate.ks", f"k={k} > sample.n={n}: leak@k is undefined for k > n (rule: k ≤ n)")
    for name, run in p["unlearn"].items():
        if run["method"] not in METHODS:
            raise METHODS.unknown(run["method"], f"unlearn.{name}.method").with_source(src)
        if run.get("stop"):
            spec = stop_judge(run["stop"])
            _check_judge_spec(spec, columns, p["data"]["benchmark"], src, ("unlearn", name, "stop", "judge"),
                              default_type=spec["type"] if isinstance(run["stop"]["judge"], str) else None)
    names = [Decoding(d["temperature"], d["top_p"]).name for d in p["sample"]["decodings"]]
    if len(set(names)) != len(names):
        _fail(src, "sample.decodings", f"duplicate decodings {names} (rule: unique)")
    for label, cfg in p["judge"].items():
        _check_judge_spec(dict(cfg or {}, type=(cfg or {}).get("type", label)), columns, p["data"]["benchmark"],
                          src, ("judge", label), default_type=label)
    _question_column(p["sample"]["question_column"], columns, p["data"]["benchmark"], src, "sample.question_column")
    for name, run in (p.get("rule") or {}).items():
        if name in p["unlearn"]:
            _fail(src, f"rule.{name}", "name already used by an unlearn run (rule: model names are unique)")
        if run["base"] not in p["unlearn"]:
            _fail(src, f"rule.{name}.base", f"{run['base']!r} is not an unlearn run (known: {sorted(p['unlearn'])})")
        if run["judge"] not in p["judge"]:
            _fail(src, f"rule.{name}.judge", f"{run['judge']!r} is not a configured judge (known: {sorted(p['judge'])})")
        if any(run["seed"] + 1000 * r == p["sample"]["seed"] for r in range(run["rounds"] + 1)):
            _fail(src, f"rule.{name}.seed", "equals sample.seed: RULE must not train on the evaluation samples (rule: differ)")
        _question_column(run["question_column"], columns, p["data"]["benchmark"], src, f"rule.{name}.question_column")
        if run["forget_tokens"] == "span" and "fact" not in columns:
            _fail(src, f"rule.{name}.forget_tokens", f"'span' finds the leaked fact in each completion, and the "
                                                     f"{p['data']['benchmark']!r} benchmark has no fact column "
                                                     "(rule: a benchmark with facts, or forget_tokens: answer)")
    est = p["estimate"]
    if est["headline_judge"] not in p["judge"]:
        _fail(src, "estimate.headline_judge", f"{est['headline_judge']!r} is not a configured judge (known: {sorted(p['judge'])})")
    if est["headline_decoding"] not in names:
        _fail(src, "estimate.headline_decoding", f"{est['headline_decoding']!r} is not among sample.decodings {names}")
    if p["data"]["benchmark"] == "synthetic":
        from leakk.data.synthetic import RELATIONS

        syn = p["data"].get("synthetic") or {}
        authors, frac = syn.get("authors", 100), syn.get("forget_fraction", 0.1)
        if round(authors * frac) < 1:
            _fail(src, "data.synthetic.forget_fraction",
                  f"{frac} × {authors} authors gives an empty forget split (rule: ≥ 1 forget author)")
        if round(authors * frac) >= authors:
            _fail(src, "data.synthetic.forget_fraction", f"{frac} leaves no retain split")
        if syn.get("qa_per_author", 12) > len(RELATIONS):
            _fail(src, "data.synthetic.qa_per_author",
                  f"{syn['qa_per_author']} > the {len(RELATIONS)} relations the benchmark has (rule: maximum)")
    check_accumulation(p, src)
    _check_hub(p, src)
    base = p["model"].get("base")
    if base and is_local(base) and not (Path(base).expanduser() / "config.json").is_file():
        _fail(src, "model.base", f"{base}: no such model folder (rule: an HF folder with config.json, or a hub id "
                                 "with model.revision)")
    if not base and trained_models(p):
        _check_arch(p, src)


def is_local(repo: str) -> bool:
    """A hub source's ``repo`` names a local folder (used in place of a hub id)."""
    return repo.startswith((".", "/", "~")) or Path(repo).expanduser().is_dir()


def hub_sources(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"datasets/<benchmark>" | "models/<name>": source}`` of everything ``leakk download``
    fetches (hub ids and local folders alike)."""
    out = {}
    bench = p["data"]["benchmark"]
    if bench != "synthetic" and p["data"].get(bench):
        out[f"datasets/{bench}"] = p["data"][bench]
    for name, src in (p.get("models") or {}).items():
        out[f"models/{name}"] = src
    base = p["model"].get("base")
    if base and not is_local(base):  # fine-tune a hub model: fetched like the others
        out[BASE_KEY] = {"repo": base, "revision": p["model"].get("revision")}
    return out


#: the download key of ``model.base`` given as a hub id (not a valid ``models:`` name)
BASE_KEY = "models/_base"


def source_param(key: str) -> str:
    """The params key of hub source ``key``: ``data.<benchmark>``, ``models.<name>`` or ``model``."""
    kind, name = key.split("/", 1)
    if key == BASE_KEY:
        return "model"
    return f"data.{name}" if kind == "datasets" else f"models.{name}"


def base_folder(p: dict[str, Any]) -> str | None:
    """The folder ``model.base`` names: as given, or its download (None: build from ``arch``)."""
    base = p["model"].get("base")
    if not base:
        return None
    return os.path.expanduser(base) if is_local(base) else f"results/hub/{BASE_KEY}"


def _check_hub(p: dict[str, Any], src: str) -> None:
    params_checks.check_sources(p, src)  # folders exist, hub ids are ids (a URL is not)
    bench = p["data"]["benchmark"]
    if bench != "synthetic" and not p["data"].get(bench):
        _fail(src, f"data.{bench}", f"required for data.benchmark={bench!r}: the dataset's repo (a hub id "
                                    "or a folder) and revision (rule: required)")
    for key, source in hub_sources(p).items():
        where = source_param(key)
        if not is_local(source["repo"]) and not source.get("revision"):
            _fail(src, f"{where}.revision", f"{source['repo']!r} is no folder here, so it names a hub id: pin "
                                            "its revision (a commit hash) (rule: required for a hub id)")
    for name in p.get("models") or {}:
        if name in p["unlearn"] or name in (p.get("rule") or {}):
            _fail(src, f"models.{name}", "name already used by an unlearn or rule run (rule: model names are unique)")


def stop_judge(stop: dict[str, Any]) -> dict[str, Any]:
    """The judge spec (``{"type": …, params…}``) of an unlearn run's ``stop`` criterion."""
    judge = stop["judge"]
    return {"type": judge} if isinstance(judge, str) else dict(judge)


def _check_judge_spec(spec: dict[str, Any], columns, bench: str, src: str, where: tuple[str, ...],
                      default_type: str | None = None) -> None:
    """One judge spec: a registered type, params its class accepts, and the columns it needs."""
    from leakk.judges import JUDGES
    from leakk.judges.base import label_schema

    base = ".".join(where)
    cfg = dict(spec)
    key = f"{base}.type" if default_type is None or cfg.get("type") != default_type else base
    kind = cfg.pop("type")
    if not isinstance(kind, str):
        _fail(src, key, f"{kind!r} is not a judge name (rule: type)")
    if kind not in JUDGES:
        raise JUDGES.unknown(kind, key).with_source(src)
    # the judge class's own schema of its constructor keywords (no defaults filled in:
    # the rules declare these params, and filling them would re-run finished judging)
    _schema_errors(cfg, label_schema(JUDGES.get(kind)), src, prefix=where)
    if getattr(JUDGES.get(kind), "needs_fact", False) and "fact" not in columns:
        _fail(src, base, f"the {kind!r} judge needs a fact column, which the {bench!r} benchmark does not "
                         f"have (known: {sorted(columns)}) (rule: a benchmark with facts)")


def _question_column(column: str, columns: tuple[str, ...], bench: str, src: str, key: str) -> None:
    from leakk.sampling.stage import TRAINING_PHRASINGS

    if column not in (*columns, "question", TRAINING_PHRASINGS):
        _fail(src, key, f"{column!r} is not a column of the {bench!r} benchmark "
                        f"(known: {sorted(columns)}) (rule: a benchmark column)")


def _check_arch(p: dict[str, Any], src: str) -> None:
    """A model built from scratch (``model.base: null``): the architecture must be buildable
    and fit the lengths asked of it."""
    for key in ("vocab_size", "arch"):
        if key not in p["model"]:
            _fail(src, f"model.{key}", "required when model.base is null (rule: required)")
    arch = p["model"]["arch"]
    if arch["n_embd"] % arch["n_head"]:
        _fail(src, "model.arch.n_embd", f"{arch['n_embd']} is not divisible by model.arch.n_head={arch['n_head']} "
                                        "(rule: n_embd % n_head == 0)")
    if p["prompt_template"] == "chat":
        _fail(src, "prompt_template", '"chat" needs a tokenizer with a chat template; the tokenizer built '
                                      "for model.base: null has none (rule: a format string with {question})")
    limit = arch["n_positions"]
    lengths = {"sample.max_new_tokens": p["sample"]["max_new_tokens"]}
    lengths.update({f"rule.{k}.max_new_tokens": r["max_new_tokens"] for k, r in (p.get("rule") or {}).items()})
    lengths.update({f"unlearn.{k}.stop.max_new_tokens": r["stop"]["max_new_tokens"]
                    for k, r in p["unlearn"].items() if r.get("stop")})
    for key, value in lengths.items():
        if value >= limit:
            _fail(src, key, f"{value} must be < model.arch.n_positions={limit} (rule: fits the model)")


class _Loader(params_checks.DepthGuard, yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1 scalars, as Snakemake and DVC read the file), nesting capped."""


def _duplicate_keys(node: yaml.Node, path: tuple = ()) -> tuple[str, int, int] | None:
    """(key path, line, first line) of the first duplicated mapping key under ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                if key in seen:
                    return _key([*path, key]), key_node.start_mark.line + 1, seen[key]
                seen[key] = key_node.start_mark.line + 1
            found = _duplicate_keys(value_node, (*path, key))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_keys(item, (*path, i))
            if found:
                return found
    return None


def read_params_file(path: str | os.PathLike) -> Any:
    """Parse a params file strictly: UTF-8, valid YAML, no duplicated key (YAML would keep
    only the last silently). Every failure is one ParamsError line with the position."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ParamsError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}; rule: UTF-8)") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read ({e.strerror})") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:  # before any walk of the expansion: an alias bomb is refused here
            params_checks.check_yaml_graph(node, str(path))
        dup = _duplicate_keys(node) if node is not None else None
        if dup:
            key, line, first = dup
            raise ParamsError(f"{path}:{line}: {key}: duplicate key (first on line {first}); YAML would "
                              "silently keep only the last (rule: unique keys)")
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        ctx = e.context or ""
        if e.context and e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            ctx += f" (from line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
        what = "; ".join(str(x) for x in (ctx, e.problem) if x)
        raise ParamsError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def load_params(path: str | os.PathLike = "params.yaml", host: bool | None = None) -> dict[str, Any]:
    """Read and validate a params file (``host``: as :func:`validate_params`)."""
    raw = read_params_file(path)
    if raw is None:
        raise ParamsError(f"{path}: empty params file (rule: a YAML mapping like params.yaml)")
    return validate_params(raw, str(path), host=host)


def workflow_params(config: dict[str, Any], configfiles: list, argv: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """For the Snakefile: (the params file every job reads, its validated params).

    ``snakemake`` reads ``params.yaml``, or the one complete params file given with
    ``--configfile`` (a preset); ``config`` (what Snakemake parsed, plus any ``--config``)
    must equal that file, since the jobs read the file itself. ``argv`` (Snakemake's) tells
    whether the jobs run on this machine, so that its device and packages are checked here.
    """
    if len(configfiles) > 1:
        raise ParamsError(f"--configfile: {len(configfiles)} files given; give one complete params file "
                          "(a preset under configs/) — jobs read exactly one file")
    path = Path(configfiles[0]) if configfiles else Path("params.yaml")
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
    params = load_params(path, host=params_checks.host_checks_apply(argv))
    if config != (read_params_file(path) if configfiles else {}):
        raise ParamsError(f"--config: overrides differ from {path}; every job reads {path} itself, "
                          "so edit it (or pass a complete preset with --configfile) instead")
    return str(path), params


def model_names(p: dict[str, Any]) -> list[str]:
    """Every model of the experiment, in table order."""
    extra = [m for m in (p.get("models") or {}) if m not in BASE_MODELS]
    return [*base_models(p), *p["unlearn"], *(p.get("rule") or {}), *extra]


def base_models(p: dict[str, Any]) -> list[str]:
    """``full`` and ``retrain``, except that with a published target (``models.full``) there
    is a retrain baseline only where ``models.retrain`` names one (WMDP has none; training one
    from scratch beside a published 7B target would be meaningless)."""
    models = p.get("models") or {}
    return [m for m in BASE_MODELS if "full" not in models or m in models]


def trained_models(p: dict[str, Any]) -> list[str]:
    """The base models the finetune stage trains (those not given under ``models:``)."""
    return [m for m in base_models(p) if m not in (p.get("models") or {})]


def model_folder(p: dict[str, Any], name: str) -> str:
    """Where model ``name``'s folder is: a ``models:`` entry's local folder as given, a hub
    entry's download under ``results/hub/models/<name>``, else the trained one under
    ``results/models/<name>`` (RULE models: see the workflow's round folders)."""
    source = (p.get("models") or {}).get(name)
    if source is None:
        return f"results/models/{name}"
    return os.path.expanduser(source["repo"]) if is_local(source["repo"]) else f"results/hub/models/{name}"


def decoding_names(p: dict[str, Any]) -> list[str]:
    """``greedy`` plus each sampled decoding's canonical name."""
    from leakk.sampling.decoding import Decoding

    return ["greedy", *(Decoding(d["temperature"], d["top_p"]).name for d in p["sample"]["decodings"])]


def judge_type(p: dict[str, Any], label: str) -> str:
    """The judge class name of ``judge.<label>`` (its ``type`` key, else the label)."""
    return (p["judge"][label] or {}).get("type", label)


def utility_judge(p: dict[str, Any]) -> str:
    """The judge label that scores retain-set greedy answers: the first judge of type
    ``fact`` (ground truth, where the benchmark has facts; chosen by type, not label), else
    the headline judge."""
    facts = [label for label in p["judge"] if judge_type(p, label) == "fact"]
    return facts[0] if facts else p["estimate"]["headline_judge"]

"""params.yaml: load, fill schema defaults, validate (schema + cross-field rules).

Every failure is one :class:`ParamsError` line naming the key and the rule it breaks, raised
before any work starts (the CLI and the Snakefile both call :func:`load_params`).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import string
from pathlib import Path
from typing import Any

import yaml

from leakk.core import checks
from leakk.core.errors import ParamsError
from leakk.core.layout import ATTACK_SEP, clean_models, is_local, model_folder, trained_models
from leakk.core.schema import check, filled, key_path, params_schema, unknown_key
from leakk.data.hub import base_folder, hub_sources, source_param
from leakk.unlearn.stopping import stop_judge

def validate_params(params: dict[str, Any], source: str = "params.yaml", host: bool | None = None) -> dict[str, Any]:
    """Return a defaults-filled copy of ``params``, or raise ParamsError on the first problem.

    ``host``: also check that this machine has the device and packages the params need
    (default: unless ``LEAKK_HOST_CHECKS=off``; see :func:`leakk.core.checks.host_checks_apply`)."""
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: not a mapping of params keys (got {type(params).__name__}; "
                          "rule: a YAML mapping like params.yaml)")
    missing = [k for k in params_schema()["required"] if k not in params]
    unknown = [k for k in params if k not in params_schema()["properties"]]
    if missing and unknown:  # most likely a misspelt section name
        raise ParamsError(f"{source}: {unknown[0]}: {unknown_key(unknown[0], set(params_schema()['properties']))} "
                          "(rule: additionalProperties)")
    if missing:
        raise ParamsError(
            f"{source}: missing top-level keys {missing}: a params file (a preset too) must be "
            "complete; start from a copy of params.yaml (rule: required)")
    params = copy.deepcopy(params)
    check(params, params_schema(), source, fill_defaults=True)
    checks.check_secrets(params, source)  # first: no later message may echo a key
    _cross_field(params, source)
    if checks.host_checks_apply() if host is None else host:
        check_host(params, source)
    return params


def _check_attacks(p: dict[str, Any], src: str) -> None:
    """Each ``attack.<name>``: a registered type with its own keys filled by its schema, and
    models that exist (an attacked model is not attacked again)."""
    from leakk.attacks import ATTACKS, attack_keys

    if p.get("attack") is None:
        p["attack"] = {}
    clean = clean_models(p)
    for name, spec in p["attack"].items():
        if ATTACK_SEP in name:
            _fail(src, f"attack.{name}", f"an attack name may not contain {ATTACK_SEP!r} (it joins model and attack)")
        if spec["type"] not in ATTACKS:
            raise ATTACKS.unknown(spec["type"], f"attack.{name}.type").with_source(src)
        own = filled(attack_keys(spec), ATTACKS.get(spec["type"]).params_schema, src, ("attack", name))
        reason = ATTACKS.get(spec["type"]).refuse(p, own)
        if reason:
            _fail(src, f"attack.{name}", reason)
        try:  # what one key's range cannot say (nf4 needs bits 4): the constructor's own check
            ATTACKS.get(spec["type"])(**own)
        except ParamsError as exc:
            _fail(src, f"attack.{name}", str(exc))
        p["attack"][name] = {**{k: v for k, v in spec.items() if k in ("type", "models")}, **own}
        for model in spec.get("models") or ():
            if model not in clean:
                _fail(src, f"attack.{name}.models", f"{model!r} is not a model of this experiment (known: {clean})")


def check_accumulation(p: dict[str, Any], src: str) -> None:
    """Every batch that trains splits evenly into ``training.gradient_accumulation``
    micro-batches (``batch_size`` is the effective batch; RULE uses its base run's)."""
    if p["training"].get("weights") == "bf16" and p["training"]["precision"] == "fp32":
        _fail(src, "training.weights", "bf16 needs training.precision bf16 or auto (rule: bf16 weights train in bf16)")
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
    from leakk.data import BENCHMARKS, benchmark_params, filled_columns
    from leakk.sampling import BACKENDS
    from leakk.sampling.decoding import Decoding
    from leakk.unlearn.methods import METHODS
    from leakk.unlearn.retain import RETAIN_LOSSES

    check_template(p["prompt_template"], src)
    if p["data"]["benchmark"] not in BENCHMARKS:
        raise BENCHMARKS.unknown(p["data"]["benchmark"]).with_source(src)
    for name in [k for k in p["data"] if k != "benchmark"]:  # each benchmark's section, by its own schema
        if name not in BENCHMARKS:
            _fail(src, f"data.{name}", f"{unknown_key(name, {'benchmark', *BENCHMARKS})} (rule: additionalProperties)")
        p["data"][name] = benchmark_params(name, p["data"][name], src)
    if p["data"]["benchmark"] not in p["data"] and not BENCHMARKS.get(p["data"]["benchmark"]).params_schema.get("required"):
        p["data"][p["data"]["benchmark"]] = benchmark_params(p["data"]["benchmark"], {}, src)
    columns = filled_columns(p["data"]["benchmark"], p["data"].get(p["data"]["benchmark"]))
    if p["sample"]["backend"] not in BACKENDS:  # no import: a backend module may be heavy
        raise BACKENDS.unknown(p["sample"]["backend"]).with_source(src)
    if p["sample"].get("options"):  # (only then imported: a backend module may be heavy)
        p["sample"]["options"] = filled(p["sample"]["options"], BACKENDS.get(p["sample"]["backend"]).params_schema,
                                        src, ("sample", "options"))
    n = p["sample"]["n"]
    for k in p["estimate"]["ks"]:
        if k > n:
            _fail(src, "estimate.ks", f"k={k} > sample.n={n}: leak@k is undefined for k > n (rule: k ≤ n)")
    loop = params_schema()["$defs"]["unlearn_run"]
    for name, run in p["unlearn"].items():
        if run["method"] not in METHODS:
            raise METHODS.unknown(run["method"], f"unlearn.{name}.method").with_source(src)
        own = METHODS.get(run["method"]).params_schema  # the loop's keys and the method's own
        p["unlearn"][name] = run = filled(run, {**loop, "additionalProperties": False,
                                                "properties": {**loop["properties"], **own["properties"]}},
                                          src, ("unlearn", name))
        retain = run.get("retain_loss") or METHODS.get(run["method"]).default_retain_loss
        if retain not in RETAIN_LOSSES:
            raise RETAIN_LOSSES.unknown(retain, f"unlearn.{name}.retain_loss").with_source(src)
        missing = [k for k in RETAIN_LOSSES.get(retain).method_keys if k not in own["properties"]]
        if missing:
            _fail(src, f"unlearn.{name}.retain_loss", f"{retain!r} reads the method's {missing}, which method "
                                                      f"{run['method']!r} does not have (rule: a method with them, e.g. rmu)")
        if run.get("stop"):
            spec = stop_judge(run["stop"])
            _check_judge_spec(spec, columns, p["data"]["benchmark"], src, ("unlearn", name, "stop", "judge"),
                              default_type=spec["type"] if isinstance(run["stop"]["judge"], str) else None)
    names = [Decoding(d["temperature"], d["top_p"]).name for d in p["sample"]["decodings"]]
    if len(set(names)) != len(names):
        _fail(src, "sample.decodings", f"duplicate decodings {names} (rule: unique)")
    for label, cfg in p["judge"].items():  # each judge's params, filled with its class's defaults
        full = _check_judge_spec(dict(cfg or {}, type=(cfg or {}).get("type", label)), columns,
                                 p["data"]["benchmark"], src, ("judge", label), default_type=label)
        p["judge"][label] = {**({"type": cfg["type"]} if "type" in (cfg or {}) else {}), **full}
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
        if run.get("select") and run.get("stop"):
            _fail(src, f"rule.{name}.select", f"cannot be combined with rule.{name}.stop: both end RULE "
                                              "(rule: select or stop, not both)")
        if run["forget_tokens"] == "span" and "fact" not in columns:
            _fail(src, f"rule.{name}.forget_tokens", f"'span' finds the leaked fact in each completion, and the "
                                                     f"{p['data']['benchmark']!r} benchmark has no fact column "
                                                     "(rule: a benchmark with facts, or forget_tokens: answer)")
    _check_attacks(p, src)
    est = p["estimate"]
    if est["headline_judge"] not in p["judge"]:
        _fail(src, "estimate.headline_judge", f"{est['headline_judge']!r} is not a configured judge (known: {sorted(p['judge'])})")
    if est["headline_decoding"] not in names:
        _fail(src, "estimate.headline_decoding", f"{est['headline_decoding']!r} is not among sample.decodings {names}")
    check_accumulation(p, src)
    _check_hub(p, src)
    _check_chat_templates(p, src)
    base = p["model"].get("base")
    if base and is_local(base) and not (Path(base).expanduser() / "config.json").is_file():
        _fail(src, "model.base", f"{base}: no such model folder (rule: an HF folder with config.json, or a hub id "
                                 "with model.revision)")
    if not base and trained_models(p):
        _check_arch(p, src)


def _check_hub(p: dict[str, Any], src: str) -> None:
    checks.check_sources(p, src)  # folders exist, hub ids are ids (a URL is not)
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


def has_chat_template(folder: str | os.PathLike) -> bool:
    """Whether the tokenizer saved in ``folder`` has a chat template, from its files alone
    (``chat_template.jinja``/``.json``, or the key in ``tokenizer_config.json``): cheap
    enough for every validation."""
    import json

    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    if (folder / "additional_chat_templates").is_dir() and any((folder / "additional_chat_templates").iterdir()):
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def _check_chat_templates(p: dict[str, Any], src: str) -> None:
    """``prompt_template: chat`` formats every prompt with the model's chat template: each
    model folder already on disk (a local ``models:`` entry or ``model.base``, a finished
    download) must have one, or the run would fail later in a tokenizer traceback."""
    if p["prompt_template"] != "chat":
        return
    folders = {f"models.{name}": model_folder(p, name) for name in p.get("models") or {}}
    if base_folder(p):
        folders["model.base"] = base_folder(p)
    for key, folder in folders.items():
        if (Path(folder) / "config.json").is_file() and not has_chat_template(folder):
            _fail(src, "prompt_template", f'"chat" needs a tokenizer with a chat template, and the tokenizer of '
                                          f"{key} ({folder}) has none (rule: a model with a chat template, or a "
                                          "format string with {question})")



def _check_judge_spec(spec: dict[str, Any], columns, bench: str, src: str, where: tuple[str, ...],
                      default_type: str | None = None) -> dict[str, Any]:
    """One judge spec: a registered type, params its class accepts (returned with its defaults,
    ``type`` left out), and the columns it needs."""
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
    cls = JUDGES.get(kind)
    full = filled(cfg, label_schema(cls), src, where)  # the class's schema + the stage's keys
    cls.check_params({k: v for k, v in full.items() if k != "max_missing"}, f"{src}: {'.'.join(where)}")
    if getattr(JUDGES.get(kind), "needs_fact", False) and "fact" not in columns:
        _fail(src, base, f"the {kind!r} judge needs a fact column, which the {bench!r} benchmark does not "
                         f"have (known: {sorted(columns)}) (rule: a benchmark with facts)")
    return full


def _question_column(column: str, columns: tuple[str, ...], bench: str, src: str, key: str) -> None:
    from leakk.data import BENCHMARKS
    from leakk.sampling.stage import TRAINING_PHRASINGS

    flag = BENCHMARKS.get(bench).optional_columns.get(column)
    if flag and column not in columns:
        _fail(src, key, f"{column!r} is empty unless data.{bench}.{flag} is true (rule: a column the data fills)")
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


class _Loader(checks.DepthGuard, yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1 scalars, as Snakemake and DVC read the file), nesting capped."""


def _duplicate_keys(node: yaml.Node, path: tuple = ()) -> tuple[str, int, int] | None:
    """(key path, line, first line) of the first duplicated mapping key under ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                if key in seen:
                    return key_path([*path, key]), key_node.start_mark.line + 1, seen[key]
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
            checks.check_yaml_graph(node, str(path))
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


def workflow_params(config: dict[str, Any], configfiles: list,
                    argv: list[str] | None = None) -> tuple[str, dict[str, Any]]:
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
    params = load_params(path, host=checks.host_checks_apply(argv))
    if config != (read_params_file(path) if configfiles else {}):
        raise ParamsError(f"--config: overrides differ from {path}; every job reads {path} itself, "
                          "so edit it (or pass a complete preset with --configfile) instead")
    return str(path), params


# ------------------------------------------------------------------ this machine

def requirements(p: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(params key, module, install hint) of everything optional the params use."""
    from leakk.judges import JUDGES
    from leakk.sampling import load_backend

    backend = load_backend(p["sample"]["backend"])  # validated: a registered name
    out = [("sample.backend", module, backend.install_hint) for module in backend.requires]
    for where, spec in checks.judge_specs(p):
        kind = spec["type"]
        if isinstance(kind, str) and kind in JUDGES:
            cls = JUDGES.get(kind)
            out += [(where, module, "pip install 'leakk[judges]'") for module in getattr(cls, "requires", ())]
    remote = [key for key, s in hub_sources(p).items() if not is_local(s["repo"])]
    if remote:
        out.append((source_param(remote[0]), "huggingface_hub", "pip install 'leakk[hub]'"))
    if p["data"]["benchmark"] != "synthetic":
        out.append(("data.benchmark", "datasets", "pip install 'leakk[hub]'"))
    if (p.get("training") or {}).get("lora"):
        out.append(("training.lora", "peft", "pip install 'leakk[lora]'"))
    return out



def cuda_device_count() -> int:
    """CUDA devices torch can use here; 0 without importing torch where no NVIDIA driver is."""
    if not Path("/proc/driver/nvidia/version").exists() and shutil.which("nvidia-smi") is None:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    import platform

    if platform.system() != "Darwin":
        return False
    import torch

    return bool(torch.backends.mps.is_available())


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot run here, or None (``auto`` and ``cpu`` always can)."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        count = cuda_device_count()
        if index >= count:
            return f"this machine has {count} usable CUDA device{'s' if count != 1 else ''}"
    elif device == "mps" and not mps_available():
        return "MPS is not available on this machine"
    return None


def check_host(p: dict[str, Any], src: str) -> None:
    """The device (and every judge's own) exists here, and every optional package the params
    need (:func:`requirements`) is installed. Run where the jobs run; elsewhere the rest of
    validation still holds."""
    off = f"(rule: available here; jobs that run on other machines: set {checks.HOST_ENV}=off where you submit them)"
    devices = {"device": p.get("device", "auto")}
    devices.update({f"{where}.device": spec["device"] for where, spec in checks.judge_specs(p)
                    if isinstance(spec.get("device"), str)})
    for key, device in devices.items():
        problem = device_problem(device)
        if problem:
            _fail(src, key, f"{device!r}: {problem}; use auto or cpu {off}")
    for key, module, hint in requirements(p):
        if importlib.util.find_spec(module) is None:
            _fail(src, key, f"needs the {module} package, which is not installed here ({hint}) {off}")

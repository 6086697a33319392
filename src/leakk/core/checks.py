"""Checks of params that go beyond the schema's shapes, made before any engine plans or deletes.

:mod:`leakk.config` and :mod:`leakk.core.schema` call these from their validation entry points;
they need nothing above the core, so the schema check itself can use them.

- **Numbers** (:data:`STRICT_VALIDATOR`): an ``integer`` is an int (``300.0`` is refused with
  the integer to write instead), a ``number`` is finite (``.nan``, ``.inf`` and ``1e400`` are
  refused); :func:`describe` words these errors and never echoes a secret.
- **YAML** (:func:`check_yaml_graph`, :class:`DepthGuard`): aliases may expand to at most
  :data:`MAX_NODES` values and nest :data:`MAX_DEPTH` levels, each refused in one line, fast:
  the check visits each distinct node once, never the expansion.
- **Model sources** (:func:`check_sources`): a local folder must exist (a model folder must
  hold a model), a hub id must look like one (a URL is refused with the id to use).
- **Secrets** (:func:`check_secrets`, :func:`redact`): ``api_key_env`` names a variable and
  never holds a key; no params value is key-shaped (params reach dvc.lock and Snakemake's
  metadata); a cache folder stays inside the project unless ``allow_outside: true``.
- **This machine** (:func:`check_host`): the device exists here and every package the params
  need is installed. Skipped where the jobs run on other machines (:func:`host_checks_apply`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from leakk.core.errors import ParamsError

# ---------------------------------------------------------------- numbers


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    if isinstance(instance, bool) or not isinstance(instance, (int, float)):
        return False
    return isinstance(instance, int) or math.isfinite(instance)


#: JSON Schema validator whose ``integer`` refuses every float (jsonschema's accepts 300.0)
#: and whose ``number`` refuses NaN and ±inf (they pass every range test: NaN compares false).
STRICT_VALIDATOR = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))

#: a YAML 1.1 float PyYAML reads as a string: an exponent without a decimal point or sign
_TEXT_FLOAT = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+")


def _yaml11_float(text: str) -> str:
    """``1e-4`` → ``1.0e-4``, ``2.5e5`` → ``2.5e+5``: how to write it so YAML 1.1 reads a number."""
    mant, _, exp = text.replace("E", "e").partition("e")
    if "." not in mant:
        mant += ".0"
    if exp[:1] not in "+-":
        exp = "+" + exp
    return f"{mant}e{exp}"


def _types(schema: Any) -> set[str]:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return {kind} if isinstance(kind, str) else set(kind or ())


def _number_message(e: jsonschema.ValidationError) -> str | None:
    """A clearer line for a value of the wrong numeric kind (None: keep jsonschema's)."""
    candidates = [e, *e.context] if e.validator in ("oneOf", "anyOf") else [e]
    wanted: set[str] = set()
    for err in candidates:
        if err.validator == "type":
            wanted |= _types(err.schema)
    value = e.instance
    if isinstance(value, float) and not math.isfinite(value):
        if wanted & {"number", "integer"}:
            return f"{value} is not a finite number (rule: finite)"
    elif isinstance(value, float) and "integer" in wanted and "number" not in wanted:
        if value.is_integer():
            return f"{value!r} is not an integer: write {int(value)} (rule: integer)"
        return f"{value!r} is not an integer (rule: integer)"
    elif isinstance(value, str) and wanted & {"number", "integer"} and _TEXT_FLOAT.fullmatch(value.strip()):
        return (f"{value!r} is text, not a number: YAML 1.1 reads an exponent as a number only with a "
                f"decimal point and a sign; write {_yaml11_float(value.strip())} (rule: type)")
    return None


def describe(e: jsonschema.ValidationError, key: str) -> str | None:
    """The message for schema error ``e`` at ``key`` where leakk words it itself (None: the
    caller's default): numbers of the wrong kind, and any error on a secret-holding key or a
    key-shaped value (never echoed)."""
    if is_secret_key(key) or looks_like_key(e.instance):
        return secret_message(key, e.instance) + f" (rule: {e.validator})"
    return _number_message(e)


# ---------------------------------------------------------------- YAML

#: the most values a params file's aliases may expand to (params.yaml has a few hundred)
MAX_NODES = 100_000
#: the deepest nesting a params file may have (params.yaml: 5)
MAX_DEPTH = 64


class DepthGuard:
    """Composer mixin: refuse nesting deeper than :data:`MAX_DEPTH` while composing (PyYAML's
    composer recurses once per level: 20,000 brackets would be a RecursionError)."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML's hook
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[attr-defined]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels (rule: depth ≤ {MAX_DEPTH})", mark)
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[tuple[Any, yaml.Node]]:
    """(path part, child) of a node: mapping keys and values, sequence items."""
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[Any, yaml.Node]] = []
        for k, v in node.value:
            name = k.value if isinstance(k, yaml.ScalarNode) else None
            out += [(name, k), (name, v)]
        return out
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def key_path(path) -> str:
    """A key path as params.yaml spells it: `sample.decodings[1].top_p`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _where(path: str, node: yaml.Node, keys: tuple) -> str:
    mark = node.start_mark
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {key_path(keys)}"


def check_yaml_graph(root: yaml.Node, path: str) -> None:
    """Refuse a composed params file whose aliases expand to more than :data:`MAX_NODES` values,
    nest deeper than :data:`MAX_DEPTH` (aliases can chain), or refer to themselves.

    One iterative walk over distinct nodes (a billion-laughs file has a few dozen), so the
    answer comes in milliseconds; the expansion itself is never built.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[tuple[yaml.Node, tuple, bool]] = [(root, (), False)]
    while stack:
        node, keys, done = stack.pop()
        nid = id(node)
        if done:
            kids = [c for _, c in _children(node)]
            size[nid] = 1 + sum(size[id(c)] for c in kids)
            depth[nid] = 1 + max((depth[id(c)] for c in kids), default=0)
            on_stack.discard(nid)
            if size[nid] > MAX_NODES:
                raise ParamsError(f"{_where(path, node, keys)}: aliases expand to more than {MAX_NODES:,} values "
                                  f"(rule: at most {MAX_NODES:,}; write the values out instead)")
            if depth[nid] > MAX_DEPTH:
                raise ParamsError(f"{_where(path, node, keys)}: nested deeper than {MAX_DEPTH} levels through "
                                  f"aliases (rule: depth ≤ {MAX_DEPTH})")
            continue
        if nid in size:
            continue
        if nid in on_stack:
            raise ParamsError(f"{_where(path, node, keys)}: an alias refers to the node that contains it "
                              "(rule: no recursive aliases)")
        on_stack.add(nid)
        stack.append((node, keys, True))
        for part, child in reversed(_children(node)):
            if id(child) not in size:
                stack.append((child, (*keys, part), False))


# ---------------------------------------------------------------- secrets

#: params keys whose values are never echoed in a message
SECRET_KEYS = ("api_key_env", "api_key", "apikey", "token", "password", "secret", "authorization")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: the shapes of common API keys and tokens (OpenAI/Anthropic sk-, Hugging Face hf_, GitHub,
#: GitLab, Slack, AWS, Google, JWTs)
_KEY_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{32,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{30,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{20,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)")
_REGISTERED: set[str] = set()


def is_secret_key(key: str) -> bool:
    """Whether params key path ``key`` ends in a secret-holding name (its value is never echoed)."""
    last = re.split(r"[.\[]", key)[-1].lower()
    return any(s in last for s in SECRET_KEYS)


def looks_like_key(value: Any) -> bool:
    """Whether ``value`` contains something shaped like a common API key or token (a known
    prefix and length: sk-…, hf_…, ghp_…; a commit hash or a hub id does not match)."""
    return isinstance(value, str) and _KEY_SHAPES.search(value) is not None


def _key_not_name(value: str) -> bool:
    """Whether an ``api_key_env`` value is a key rather than a variable's name: a known key
    shape, or a long run of letters mixed with digits (a name is words and underscores)."""
    return looks_like_key(value) or any(
        len(part) >= 24 and re.search(r"\d", part) and re.search(r"[A-Za-z]", part)
        for part in re.split(r"[\s_]+", value))


def secret_message(key: str, value: Any) -> str:
    """Why the value of secret-holding ``key`` is refused, without the value."""
    if key.endswith("api_key_env") and isinstance(value, str) and _key_not_name(value):
        return ("holds what looks like an API key itself (value not shown), not the name of an environment "
                "variable: delete it from the params file (revoke it if the file was shared), export the key "
                "as e.g. OPENAI_API_KEY and write that name here")
    if key.endswith("api_key_env"):
        return ("is not the name of an environment variable (value not shown): letters, digits and "
                "underscores, not starting with a digit, e.g. OPENAI_API_KEY")
    if looks_like_key(value):
        return ("looks like an API key or token (value not shown): params are written to dvc.lock and "
                "Snakemake's metadata, so a key never belongs in them; export it and name the variable "
                "with the judge's api_key_env")
    return "is refused (value not shown: a secret-holding key)"


def _strings(node: Any, keys: tuple = ()) -> Iterator[tuple[tuple, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, (*keys, k))
            if isinstance(k, str):
                yield (*keys, k), k
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, (*keys, i))
    elif isinstance(node, str):
        yield keys, node


def judge_specs(p: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(params key, spec with ``type``) of every judge the params configure, stop judges too
    (a stop criterion's ``judge`` is a type name or a spec, as :func:`leakk.unlearn.stopping.stop_judge` reads it)."""
    for label, cfg in (p.get("judge") or {}).items():
        yield f"judge.{label}", dict(cfg or {}, type=(cfg or {}).get("type", label))
    for name, run in (p.get("unlearn") or {}).items():
        if isinstance(run, dict) and run.get("stop"):
            judge = run["stop"].get("judge")
            if judge is not None:
                yield f"unlearn.{name}.stop.judge", {"type": judge} if isinstance(judge, str) else dict(judge)


def check_secrets(p: dict[str, Any], src: str) -> None:
    """No key in the params: ``api_key_env`` is a variable's name, no value is key-shaped, an
    endpoint URL carries no credentials, and a cache folder stays in the project."""
    for keys, text in _strings(p):
        if looks_like_key(text):
            key = key_path(keys)
            _fail(src, key, secret_message(key, text) + " (rule: no keys in params)")
    for where, spec in judge_specs(p):
        env = spec.get("api_key_env")
        if env is not None and not (isinstance(env, str) and _ENV_NAME.fullmatch(env) and not _key_not_name(env)):
            _fail(src, f"{where}.api_key_env", secret_message(f"{where}.api_key_env", env)
                  + " (rule: an environment variable name)")
        url = spec.get("base_url")
        if isinstance(url, str) and _url_has_credentials(url):
            _fail(src, f"{where}.base_url", "carries credentials (value not shown): the key goes in the "
                                            "environment variable named by api_key_env, never in the URL "
                                            "(rule: no credentials in params)")
        if spec.get("cache_dir") is not None:
            check_cache_dir(spec["cache_dir"], bool(spec.get("allow_outside", False)), f"{where}.cache_dir", src)


def _url_has_credentials(url: str) -> bool:
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        return True
    return any(is_secret_key(k) or k.lower() in ("key", "access_token", "auth") for k, _ in parse_qsl(parts.query))


def check_cache_dir(folder: str, allow_outside: bool, key: str, src: str, root: str | os.PathLike | None = None) -> None:
    """A cache folder lies inside the project (the working directory) unless ``allow_outside``."""
    if allow_outside:
        return
    root_path = Path(root or os.getcwd()).resolve()
    target = (root_path / Path(folder).expanduser()).resolve()
    if target != root_path and root_path not in target.parents:
        allow = key.rsplit(".", 1)[0] + ".allow_outside"
        _fail(src, key, f"{folder!r} is outside the project folder (rule: a cache inside the project; set "
                        f"{allow}: true to allow another place)")


def register_secret_values(p: dict[str, Any]) -> None:
    """Remember the values of the environment variables the params name as keys, so that
    :func:`redact` removes them from every message this process prints or logs."""
    for _, spec in judge_specs(p):
        env = spec.get("api_key_env")
        value = os.environ.get(env) if isinstance(env, str) and _ENV_NAME.fullmatch(env) else None
        if value and len(value) >= 8:
            _REGISTERED.add(value)


def redact(text: str) -> str:
    """``text`` without the registered key values and without anything key-shaped."""
    for value in sorted(_REGISTERED, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return _KEY_SHAPES.sub("[redacted]", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (install it on each handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# ---------------------------------------------------------------- model sources

#: a Hugging Face hub id: ``name`` or ``org/name`` (letters, digits, ``-_.``; no ``--`` or ``..``)
_HUB_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}"
                     r"[A-Za-z0-9])?)?")
_HUB_URL = re.compile(r"(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?:datasets/|models/|spaces/)?"
                      r"([^/?#\s]+(?:/[^/?#\s]+)?)")


def hub_id_problem(repo: str) -> str | None:
    """Why ``repo`` (not a local folder) is not a hub id, or None."""
    if "://" in repo or _HUB_URL.match(repo):
        m = _HUB_URL.match(repo.split("://", 1)[-1] if "://" in repo else repo)
        hint = f"write the hub id {m.group(1)!r}" if m and not _url_has_credentials(repo) else "write the hub id (org/name)"
        return f"is a URL; {hint}, with its revision (rule: a hub id or a local folder)"
    if not _HUB_ID.fullmatch(repo) or "--" in repo or ".." in repo:
        return (f"{repo!r} is neither a folder here nor a hub id (org/name: letters, digits, '-', '_', '.') "
                "(rule: a hub id or a local folder)")
    return None


def model_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a model folder leakk loads (config.json + safetensors), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return "no such folder"
    if not (folder / "config.json").is_file():
        return "not a model folder (no config.json)"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.safetensors.index.json")):
        return "has no safetensors weights (pickled weights are refused)"
    return None


def check_sources(p: dict[str, Any], src: str) -> None:
    """Every hub source and judge model: a local folder that exists (a model folder with its
    weights), or a well-formed hub id; a URL is refused with the id to use instead."""
    from leakk.core.layout import is_local

    bench = p["data"]["benchmark"]
    sources = {f"data.{bench}": (p["data"].get(bench), False)} if bench != "synthetic" else {}
    sources.update({f"models.{name}": (s, True) for name, s in (p.get("models") or {}).items()})
    for key, (source, is_model) in sources.items():
        if not source:
            continue
        repo = source["repo"]
        if is_local(repo):
            problem = model_folder_problem(Path(repo).expanduser()) if is_model else (
                None if Path(repo).expanduser().is_dir() else "no such folder")
            if problem:
                _fail(src, f"{key}.repo", f"{repo}: {problem} (rule: an existing folder, or a hub id with revision)")
        else:
            problem = hub_id_problem(repo)
            if problem:
                _fail(src, f"{key}.repo", problem)
    base = p["model"].get("base")
    if base and not is_local(base) and hub_id_problem(base):
        _fail(src, "model.base", hub_id_problem(base))
    for where, spec in judge_specs(p):
        model = spec.get("model")
        if spec["type"] in ("nli", "embedding") and isinstance(model, str):
            if is_local(model):
                if not Path(model).expanduser().is_dir():
                    _fail(src, f"{where}.model", f"{model}: no such folder (rule: an existing folder or a hub id)")
            elif hub_id_problem(model):
                _fail(src, f"{where}.model", hub_id_problem(model))


# ---------------------------------------------------------------- this machine

#: the environment variable that turns the checks of this machine off (``off``/``0``) or on
HOST_ENV = "LEAKK_HOST_CHECKS"
_LOCAL_EXECUTORS = {"local", "dryrun", "touch"}


def host_checks_apply(argv: list[str] | None = None) -> bool:
    """Whether this process's machine runs the jobs, so that the device and packages the params
    need must exist here: ``LEAKK_HOST_CHECKS`` when set, else (for Snakemake's ``argv``) not
    when a cluster executor submits them (``--executor slurm``, or a profile that names one)."""
    env = os.environ.get(HOST_ENV, "").strip().lower()
    if env:
        return env not in ("0", "off", "no", "false")
    if argv is None:
        return True
    executor = None
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name in ("--executor", "-e"):
            executor = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
        elif name in ("--profile", "--workflow-profile") and executor is None:
            folder = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            executor = _profile_executor(folder)
    if executor is None and os.environ.get("SNAKEMAKE_PROFILE"):
        executor = _profile_executor(os.environ["SNAKEMAKE_PROFILE"])
    return executor is None or executor in _LOCAL_EXECUTORS


def _profile_executor(folder: str) -> str | None:
    for name in ("config.v8+.yaml", "config.yaml"):
        path = Path(folder) / name
        if path.is_file():
            try:
                cfg = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                return None
            return str(cfg.get("executor")) if isinstance(cfg, dict) and cfg.get("executor") else None
    return None


def _fail(src: str, key: str, msg: str) -> None:
    raise ParamsError(f"{src}: {key}: {msg}")

"""JSON Schema helpers shared by params validation and by every plugin's own schema.

:func:`check` validates an instance and fills its ``default`` values; its failure is one
:class:`~leakk.core.errors.ParamsError` line: the params file, the key path, the value and the
rule (``params.yaml: sample.decodings[1].top_p: 1.5 is greater than the maximum of 1 (rule:
maximum)``). :func:`params_schema` is the central schema of params.yaml; it names the plugin
sections, whose keys each plugin's class declares itself.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from leakk.core import checks
from leakk.core.checks import key_path
from leakk.core.errors import ParamsError


@cache
def params_schema() -> dict[str, Any]:
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


def _error_line(e: jsonschema.ValidationError, prefix: tuple = ()) -> tuple[str, str]:
    """(key, message) of a schema error; an unknown key is named itself, not its parent."""
    path = [*prefix, *e.absolute_path]
    own = checks.describe(e, key_path(path))  # numbers of the wrong kind; secrets never echoed
    if own:
        return key_path(path), own
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        allowed = set(e.schema.get("properties", {}))
        extra = sorted(k for k in e.instance if k not in allowed)
        if extra and allowed:
            return key_path([*path, extra[0]]), unknown_key(extra[0], allowed)
        if extra:
            return key_path([*path, extra[0]]), "unknown key (this section takes no keys)"
    if e.validator == "pattern" and isinstance(e.schema, dict) and e.schema.get("description"):
        return key_path(path), f"{e.instance!r} is not one of: {e.schema['description']}"
    return key_path(path), e.message


def unknown_key(key: Any, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}allowed: {sorted(allowed)})"


def _nan(instance: Any, path: tuple = ()) -> tuple | None:
    """The path of the first NaN in ``instance`` (JSON Schema's ranges let NaN through)."""
    if isinstance(instance, float) and instance != instance:
        return path
    items = instance.items() if isinstance(instance, dict) else enumerate(instance) if isinstance(instance, list) else ()
    for k, v in items:
        found = _nan(v, (*path, k))
        if found is not None:
            return found
    return None


def check(instance: Any, schema_: dict[str, Any], src: str, prefix: tuple = (),
          fill_defaults: bool = False) -> None:
    """Validate ``instance`` against ``schema_`` (filling its defaults in place if asked); the first
    error is one ParamsError line: ``<src>: <key path>: <message> (rule: <keyword>)``."""
    validator_class = checks.STRICT_VALIDATOR  # integers are ints, numbers finite
    validator = (_with_defaults(validator_class) if fill_defaults else validator_class)(schema_)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        e = errors[0]
        key, msg = _error_line(e, prefix)
        raise ParamsError(f"{src}: {key}: {msg}" + ("" if "(rule: " in msg else f" (rule: {e.validator})"))
    nan = _nan(instance)
    if nan is not None:
        raise ParamsError(f"{src}: {key_path([*prefix, *nan])}: nan is not a number (rule: finite)")


def defaults(schema_: dict[str, Any]) -> dict[str, Any]:
    """The ``default`` of every top-level property of an object schema."""
    return {k: copy.deepcopy(v["default"]) for k, v in schema_.get("properties", {}).items()
            if isinstance(v, dict) and "default" in v}


def filled(instance: dict[str, Any] | None, schema_: dict[str, Any], src: str, prefix: tuple = ()) -> dict[str, Any]:
    """A validated, defaults-filled copy of ``instance`` (a plugin's parameters)."""
    out = copy.deepcopy(dict(instance or {}))
    check(out, schema_, src, prefix, fill_defaults=True)
    return out


def section(section: dict[str, Any], key: str, source: str = "params.yaml") -> dict[str, Any]:
    """A defaults-filled copy of one top-level params section checked against its schema alone
    (for code handed a section directly, e.g. a training loop's ``training=``)."""
    section = copy.deepcopy(section)
    check(section, params_schema()["properties"][key], source, prefix=(key,), fill_defaults=True)
    return section

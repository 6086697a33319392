"""dvc.yaml's model lists, set from a params file (``leakk dvc-yaml``).

DVC's templating can loop over a params section (``foreach: ${unlearn}``) but cannot compute
which base models are trained and where each model's folder is — a ``models:`` entry (a
published checkpoint) replaces fine-tuning ``full``/``retrain`` and lives under
``results/hub/models/<name>``. So dvc.yaml writes those few values out, and this module
rewrites them from params (``leakk.config``: the same functions the Snakefile uses):

- ``vars.full_dir``: the folder unlearning starts from;
- ``finetune.foreach``: the base models trained here;
- ``sample_base.foreach`` / ``bounds.foreach``: every model that is neither an unlearn nor a
  RULE run → ``{dir: its folder}``; ``judge.matrix.model``: the same names.

Each of these values sits on one line of its own, in flow style; the rewrite replaces those
lines only (comments and all else kept) and is total — every value depends on params alone —
so it applies to any dvc.yaml it wrote, and running it twice changes nothing. ``tests/test_dvc_yaml.py`` checks that the
checked-in dvc.yaml is the rewrite for params.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from leakk.core.layout import model_folder, model_names, trained_models
from leakk.core.errors import ArtifactError


def evaluated_models(p: dict[str, Any]) -> dict[str, str]:
    """Model name → folder, for the models that are neither unlearn nor RULE runs (trained
    base models and ``models:`` entries), in table order."""
    made_here = {*p["unlearn"], *(p.get("rule") or {})}
    return {m: model_folder(p, m) for m in model_names(p) if m not in made_here}


def model_lists(p: dict[str, Any]) -> dict[str, Any]:
    """The params-dependent values of dvc.yaml, by dotted place."""
    evaluated = evaluated_models(p)
    per_model = {name: {"dir": folder} for name, folder in evaluated.items()}
    return {"vars.full_dir": model_folder(p, "full"),
            "stages.finetune.foreach": trained_models(p),
            "stages.sample_base.foreach": per_model,
            "stages.bounds.foreach": per_model,
            "stages.judge.matrix.model": list(evaluated)}


def _flow(value: Any) -> str:
    """``value`` as one line of flow-style YAML (``[full, retrain]``, ``{full: {dir: …}}``)."""
    # inside a list, so that a plain string gets no document-end marker; then unwrapped
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 16, sort_keys=False).strip()[1:-1]


def _line_of(lines: list[str], place: str, source: str) -> int:
    """Index of the line holding ``place`` (``vars.x``, ``stages.<stage>.<key>[.<key>]``):
    each such value sits on one line of its own, in flow style."""
    parts = place.split(".")
    if parts[0] == "vars":
        found = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"- {parts[1]}:")]
    else:
        stage, *keys = parts[1:]
        first = lines.index(f"  {stage}:") if f"  {stage}:" in lines else None
        found = []
        if first is not None:
            end = next((i for i in range(first + 1, len(lines))
                        if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= 2), len(lines))
            found = [i for i in range(first + 1, end) if lines[i].lstrip().startswith(f"{keys[-1]}:")]
    if len(found) != 1:
        raise ArtifactError(f"{source}: {place}: expected on one line of its own (a dvc.yaml from leakk's "
                            "repository; rewrite it from there)")
    return found[0]


def render(text: str, p: dict[str, Any], source: str = "dvc.yaml") -> str:
    """``text`` (a dvc.yaml) with its model lists set for params ``p``; every other line,
    comments included, kept as it is."""
    lines = text.split("\n")
    for place, value in model_lists(p).items():
        i = _line_of(lines, place, source)
        key, _, rest = lines[i].partition(":")
        comment = rest[rest.index("  #"):] if "  #" in rest else ""
        lines[i] = f"{key}: {_flow(value)}{comment}"
    return "\n".join(lines)


def stale(path: str | Path, p: dict[str, Any]) -> list[str]:
    """The places where ``path``'s model lists differ from params (empty: up to date)."""
    doc = yaml.safe_load(Path(path).read_text())
    wrong = []
    for place, value in model_lists(p).items():
        parts = place.split(".")
        if parts[0] == "vars":
            node = next((v[parts[1]] for v in doc.get("vars") or [] if parts[1] in v), None)
        else:
            node = doc
            for part in parts:
                node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            wrong.append(place)
    return wrong

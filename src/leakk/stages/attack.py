"""The attack stage: one model folder in, its attacked copy out (``results/attacks/<attack>/<model>``)."""

from __future__ import annotations

import json
import sys
from typing import Any


def attack(params: dict[str, Any], *, name: str, model_dir: str, out: str) -> None:
    """Apply ``attack.<name>`` to the model in ``model_dir`` and save the result to ``out``."""
    from leakk.attacks import make_attack
    from leakk.core.errors import ParamsError
    from leakk.models.modeling import load_model, save_model

    spec = (params.get("attack") or {}).get(name)
    if spec is None:
        raise ParamsError(f"attack.{name}: no such attack (known: {sorted(params.get('attack') or {})})")
    model, tokenizer = load_model(model_dir, "cpu")
    done = make_attack(spec).apply(model)
    save_model(model, tokenizer, out)
    print(f"attack {name}: {json.dumps(done, sort_keys=True)}", file=sys.stderr)

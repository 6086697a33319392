"""The attack stage: one model folder in, its attacked copy out (``results/attacks/<attack>/<model>``)."""

from __future__ import annotations

import json
import sys
from typing import Any

from leakk.core.io import read_parquet


def attack(params: dict[str, Any], *, data: str, name: str, model_dir: str, out: str) -> None:
    """Apply ``attack.<name>`` to the model in ``model_dir`` and save the result to ``out``."""
    from leakk.attacks import Target, make_attack
    from leakk.core.errors import ParamsError
    from leakk.models.modeling import load_model, pick_device, save_model

    spec = (params.get("attack") or {}).get(name)
    if spec is None:
        raise ParamsError(f"attack.{name}: no such attack (known: {sorted(params.get('attack') or {})})")
    device = pick_device(params["device"])
    model, tokenizer = load_model(model_dir, device)
    target = Target(tokenizer=tokenizer, data=read_parquet(data, "data"), template=params["prompt_template"],
                    training=params.get("training"), device=device)
    done = make_attack(spec).apply(model, target)
    save_model(model, tokenizer, out)
    print(f"attack {name}: {json.dumps(done, sort_keys=True)}", file=sys.stderr)

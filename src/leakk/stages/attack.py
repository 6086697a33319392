"""The attack stage: one model folder in, its attacked copy out (``results/attacks/<attack>/<model>``,
with ``attack.json``: the attack's params and what it did)."""

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
    # what was done travels with the folder: a prompt attack's weights are the model's own, so
    # without it an edit of the attack's params would leave the folder (DVC's dependency) unchanged
    record = json.dumps({"attack": name, "params": spec, "done": done}, sort_keys=True, indent=1) + "\n"
    save_model(model, tokenizer, out, extra={"attack.json": lambda path: path.write_text(record)})
    print(f"attack {name}: {json.dumps(done, sort_keys=True)}", file=sys.stderr)

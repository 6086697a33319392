"""The training stages: the full and retrain models (``finetune``) and one unlearning run
(``unlearn``)."""

from __future__ import annotations

import sys
from typing import Any

from leakk.core.io import read_parquet


def finetune(params: dict[str, Any], *, data: str, which: str, out: str) -> None:
    """full trains on every QA (forget + retain), retrain on the retain split only."""
    from leakk.data.hub import base_folder
    from leakk.models.finetune import finetune as train

    splits = ["forget", "retain"] if which == "full" else ["retain"]
    model_params = dict(params["model"], base=base_folder(params))  # a hub id: its download
    train(read_parquet(data, "data"), out, splits=splits, model_params=model_params,
          train_params=params["finetune"], template=params["prompt_template"], seed=params["seed"],
          device=params["device"], name=which, training=params["training"])


def unlearn(params: dict[str, Any], *, data: str, name: str, model_dir: str, out: str) -> None:
    """Run ``unlearn.<name>`` from the full model; the log says when and why it stopped."""
    from leakk.core.errors import ParamsError
    from leakk.unlearn.run import run_unlearning

    if name not in params["unlearn"]:
        raise ParamsError(f"unlearn.{name}: no such unlearn run (known: {sorted(params['unlearn'])})")
    reason = run_unlearning(read_parquet(data, "data"), model_dir, out, name=name, params=params)
    print(f"unlearn {name}: {reason}", file=sys.stderr)

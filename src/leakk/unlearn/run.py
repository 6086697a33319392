"""The unlearn stage: one ``unlearn.<name>`` run from the full model to a saved folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from leakk.core.errors import ParamsError
from leakk.core.io import write_frame
from leakk.models.finetune import training_pairs
from leakk.models.modeling import load_model, pick_device, save_model
from leakk.unlearn.loop import unlearn_loop
from leakk.unlearn.methods import METHODS

#: keys of an unlearn run that are the shared loop's (the central schema's ``unlearn_run``), not
#: the method's own; ``stop`` and ``loop_seed`` are read by :func:`run_unlearning`
LOOP_KEYS = ("steps", "lr", "batch_size", "alpha", "gamma", "warmup_steps", "weight_decay", "retain_loss")
RUN_KEYS = ("method", "stop", "loop_seed")


def split_run_params(run: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method name, method kwargs, loop kwargs) from one validated ``unlearn.<name>`` entry."""
    method = run["method"]
    loop = {k: run[k] for k in LOOP_KEYS if k in run}
    own = {k: v for k, v in run.items() if k not in LOOP_KEYS and k not in RUN_KEYS}
    return method, own, loop


def run_unlearning(data: pl.DataFrame, start_model: str | Path, out: str | Path, *, name: str,
                   params: dict[str, Any]) -> str:
    """Unlearn the forget split from ``start_model`` for ``unlearn.<name>``: its fixed steps or,
    with ``stop``, until greedy decoding looks forgotten (``steps`` is then the cap). Saves an
    HF folder + ``train_log.parquet``; returns the one-line stop reason."""
    from leakk.unlearn.stopping import GreedyStop, stop_reason

    run = params["unlearn"][name]
    method_name, method_kw, loop_kw = split_run_params(run)
    method = METHODS.get(method_name)(**method_kw)
    forget = training_pairs(data.filter(pl.col("split") == "forget"))
    retain = training_pairs(data.filter(pl.col("split") == "retain"))
    if not forget:
        raise ParamsError("data: the forget split is empty; nothing to unlearn")
    dev = pick_device(params["device"])
    model, tokenizer = load_model(start_model, dev)
    stop = run.get("stop")
    check = GreedyStop(model, tokenizer, data, params, name=name, stop=stop) if stop else None
    log = unlearn_loop(model, tokenizer, method, forget, retain, template=params["prompt_template"],
                       seed=run.get("loop_seed", params["seed"]), device=dev, desc=f"unlearn {name}", check=check,
                       check_every=stop["every"] if stop else 0, training=params.get("training"), **loop_kw)
    reason = stop_reason(log, run)
    save_model(model, tokenizer, out,
               extra={"train_log.parquet": lambda p: write_frame(pl.DataFrame(log, infer_schema_length=None), p)})
    return reason



"""Where every result lives, spelled once: the ``results/`` tree and the models of an experiment.

Stages, the stage table, the Snakemake rules and dvc.yaml all take their paths from
:class:`Layout`; a path pattern for an engine is the same call with the engine's placeholder
(``RESULTS.samples("{model}", "{decoding}")``, ``RESULTS.samples("${key}", …)``). A seed of
``leakk replicates`` is the same layout under another root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the base models of every experiment: the target trained on everything and the gold standard
#: trained without the forget set
BASE_MODELS = ("full", "retrain")
#: the download key of ``model.base`` given as a hub id (not a valid ``models:`` name)
BASE_KEY = "models/_base"


@dataclass(frozen=True)
class Layout:
    """The results tree under ``root`` (``results`` relative to the working directory)."""

    root: str = "results"

    def _p(self, *parts: object) -> str:
        return "/".join([self.root, *map(str, parts)])

    # inputs -----------------------------------------------------------------------------------
    @property
    def hub_dir(self) -> str:
        return self._p("hub")

    def hub(self, key: str) -> str:
        """The folder of hub source ``key`` (``datasets/<benchmark>``, ``models/<name>``)."""
        return self._p("hub", key)

    @property
    def downloads(self) -> str:
        return self._p("hub", "downloads.json")

    @property
    def benchmark(self) -> str:
        return self._p("data", "benchmark.parquet")

    @property
    def params_stamp(self) -> str:
        """Written by DVC's first stage when params.yaml is valid."""
        return self._p(".params_valid")

    # models -----------------------------------------------------------------------------------
    def model(self, name: str) -> str:
        """A model trained here (fine-tuned or unlearned)."""
        return self._p("models", name)

    def attacked(self, attack: str, model: str) -> str:
        """Model ``model`` after attack ``attack`` (an ``attack.<name>`` entry)."""
        return self._p("attacks", attack, model)

    def rule_dir(self, name: str) -> str:
        return self._p("rule", name)

    def rule_round(self, name: str, r: object) -> str:
        return self._p("rule", name, f"round_{r}")

    # samples, judgments, tables ----------------------------------------------------------------
    @property
    def samples_dir(self) -> str:
        return self._p("samples")

    def model_samples(self, model: str) -> str:
        return self._p("samples", model)

    def samples(self, model: str, decoding: str) -> str:
        return self._p("samples", model, f"{decoding}.parquet")

    def sample_shard(self, model: str, decoding: str, shard: object) -> str:
        return self._p("samples", model, f"{decoding}.shard{shard}.parquet")

    @property
    def judgments_dir(self) -> str:
        return self._p("judgments")

    def model_judgments(self, model: str, judge: str | None = None) -> str:
        return self._p("judgments", model, *([judge] if judge is not None else []))

    def judgments(self, model: str, judge: str, decoding: str) -> str:
        return str(judgment_path(self.judgments_dir, model, decoding, judge))

    def rule_eval_dir(self, name: str) -> str:
        return self._p("rule_eval", name)

    def rule_eval(self, name: str, r: object) -> str:
        return self._p("rule_eval", name, f"round_{r}.parquet")

    def rule_rounds(self, name: str) -> str:
        return self._p("rule_eval", name, "rounds.parquet")

    def bounds(self, model: str) -> str:
        return self._p("bounds", f"{model}.parquet")

    @property
    def bounds_dir(self) -> str:
        return self._p("bounds")

    def file(self, name: str) -> str:
        """A top-level result: ``leak_at_k.parquet``, ``summary.md``, ``metrics.json``, …"""
        return self._p(name)

    @property
    def figures_dir(self) -> str:
        return self._p("figures")

    def figure(self, name: str) -> str:
        return self._p("figures", f"{name}.png")

    @property
    def llm_cache(self) -> str:
        return self._p("cache", "llm_judge")

    # the engines' own files ---------------------------------------------------------------------
    def log(self, job: str) -> str:
        return self._p("logs", f"{job}.log")

    def benchmark_log(self, job: str) -> str:
        return self._p("benchmarks", f"{job}.tsv")

    @property
    def replicates(self) -> str:
        return self._p("replicates")


RESULTS = Layout()


def judgment_path(judgments_dir: str | os.PathLike, model: str, decoding: str, judge: str) -> Path:
    """Where one (model, decoding, judge)'s judgments live: one file per judge, in a folder per
    (model, judge) so that DVC can track each judge's files as one stage output."""
    return Path(judgments_dir) / model / judge / f"{decoding}.parquet"


def is_local(repo: str) -> bool:
    """A hub source's ``repo`` names a local folder (used in place of a hub id)."""
    return repo.startswith((".", "/", "~")) or Path(repo).expanduser().is_dir()


def base_models(p: dict[str, Any]) -> list[str]:
    """``full`` and ``retrain``, except that with a published target (``models.full``) there
    is a retrain baseline only where ``models.retrain`` names one (WMDP has none; training one
    from scratch beside a published 7B target would be meaningless)."""
    models = p.get("models") or {}
    return [m for m in BASE_MODELS if "full" not in models or m in models]


def trained_models(p: dict[str, Any]) -> list[str]:
    """The base models the finetune stage trains (those not given under ``models:``)."""
    return [m for m in base_models(p) if m not in (p.get("models") or {})]


#: joins a model and an attack into the attacked model's name (``ga__int4``)
ATTACK_SEP = "__"


def clean_models(p: dict[str, Any]) -> list[str]:
    """Every model of the experiment before any attack, in table order."""
    extra = [m for m in (p.get("models") or {}) if m not in BASE_MODELS]
    return [*base_models(p), *p["unlearn"], *(p.get("rule") or {}), *extra]


def attacked_models(p: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Attacked model name → (its model, the ``attack.<name>`` entry), in table order: each
    attack applies to its ``models`` (default: every model, so that retrain is the control)."""
    clean = clean_models(p)
    return {f"{m}{ATTACK_SEP}{a}": (m, a) for a, spec in (p.get("attack") or {}).items()
            for m in (spec.get("models") or clean)}


def model_names(p: dict[str, Any]) -> list[str]:
    """Every model of the experiment, attacked ones last, in table order."""
    return [*clean_models(p), *attacked_models(p)]


def model_folder(p: dict[str, Any], name: str, layout: Layout = RESULTS) -> str:
    """Where model ``name``'s folder is: a ``models:`` entry's local folder as given, a hub
    entry's download under ``results/hub/models/<name>``, else the trained one under
    ``results/models/<name>`` (a RULE model: its last round, :func:`rule_model_folder`)."""
    attacked = attacked_models(p).get(name)
    if attacked is not None:
        return layout.attacked(attacked[1], attacked[0])
    source = (p.get("models") or {}).get(name)
    if source is None:
        return layout.model(name)
    return os.path.expanduser(source["repo"]) if is_local(source["repo"]) else layout.hub(f"models/{name}")


def round_folder(p: dict[str, Any], name: str, r: int, layout: Layout = RESULTS) -> str:
    """RULE run ``name``'s round ``r`` (round 0: the base run's model folder)."""
    return model_folder(p, p["rule"][name]["base"], layout) if r == 0 else layout.rule_round(name, r)


def sampled_folder(p: dict[str, Any], name: str, layout: Layout = RESULTS) -> str:
    """The model folder the sample and bounds stages read for model ``name`` (a RULE run: its
    last round's ``model/``)."""
    rule = (p.get("rule") or {}).get(name)
    if rule is not None:
        return f"{layout.rule_round(name, rule['rounds'])}/model"
    return model_folder(p, name, layout)


def workflow_output(path: str | os.PathLike) -> str:
    """The output a workflow job writes that holds ``path`` (what to rebuild it by): a RULE
    round's model lies inside its round folder, the ``rule_round`` job's one output."""
    p = Path(path)
    if p.name == "model" and p.parent.name.startswith("round_"):
        p = p.parent
    return str(p)

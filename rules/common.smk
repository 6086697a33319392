# Shared helpers: wildcard constraints and the model-name → folder mapping.
import re
from pathlib import Path


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    decoding="|".join(map(re.escape, DECODINGS)),
    name="|".join(map(re.escape, RULES)) or "^$",
    judge="|".join(map(re.escape, JUDGES)),
    round=r"\d+",


def last_round_dir(name):
    return f"results/rule/{name}/round_{RULES[name]['rounds']}"


def model_input(wildcards):
    """The folder a model's samples are drawn from (RULE: its last round's folder; a
    `models:` entry: its downloaded or local folder)."""
    if wildcards.model in RULES:
        return last_round_dir(wildcards.model)
    return model_folder(P, wildcards.model)


def base_input(wildcards):
    """The folder model.base names (a hub id: its download), if any."""
    folder = base_folder(P)
    return [folder] if folder else []


def dataset_input(wildcards):
    """The benchmark's dataset folder (none for the synthetic benchmark)."""
    folder = dataset_folder(P)
    return [str(folder)] if folder is not None else []


def model_dir(wildcards):
    path = model_input(wildcards)
    return f"{path}/model" if wildcards.model in RULES else path


def figure_files():
    return expand("results/figures/{kind}_{judge}.png", kind=["leak_at_k", "greedy_vs_sampled"], judge=JUDGES)

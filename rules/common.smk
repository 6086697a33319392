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


def data_input(wildcards):
    """What the data rule waits for: the benchmark's dataset folder and, for a hub
    model.base, its download (so the finetune rule, whose shell line predates hub bases and
    stays unchanged, finds it). Nothing for the synthetic benchmark."""
    folders = [dataset_folder(P), base_folder(P) if hub_sources(P).get(BASE_KEY) else None]
    return [str(f) for f in folders if f is not None]


def model_dir(wildcards):
    path = model_input(wildcards)
    return f"{path}/model" if wildcards.model in RULES else path


def figure_files():
    return expand("results/figures/{kind}_{judge}.png", kind=["leak_at_k", "greedy_vs_sampled"], judge=JUDGES)

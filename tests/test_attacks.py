"""Attacks (leakk.attacks): weight quantization against a brute-force computation, relearning
(its author split, what it trains on, what it is evaluated on), their params, the attack stage
in the DAG (an attacked copy of a model is one more model) and the attacked-vs-clean table."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import MICRO, write_params
from leakk.attacks import ATTACKS, make_attack
from leakk.attacks.quantize import fake_quantize
from leakk.cli import main
from leakk.config import validate_params
from leakk.core.errors import ParamsError
from leakk.core.io import write_parquet
from leakk.core.layout import model_folder, model_names, sampled_folder


def _brute_force(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Element by element: each row's consecutive groups share scale = max|w| / (2^(b−1) − 1)."""
    out = torch.empty_like(w)
    top = 2 ** (bits - 1) - 1
    for r in range(w.shape[0]):
        for start in range(0, w.shape[1], group):
            cells = [float(w[r, c]) for c in range(start, min(start + group, w.shape[1]))]
            scale = max(abs(x) for x in cells) / top or 1.0
            for i, x in enumerate(cells):
                out[r, start + i] = max(-top - 1, min(top, round(x / scale))) * scale
    return out


@pytest.mark.parametrize("bits, group", [(4, 8), (8, 8), (4, 5), (2, 3), (3, 64)])
def test_fake_quantize_equals_brute_force(bits, group):
    w = torch.randn(6, 20, generator=torch.Generator().manual_seed(bits * 100 + group))
    w[2, :8] = 0.0  # an all-zero group stays zero
    got = fake_quantize(w, bits, group)
    torch.testing.assert_close(got, _brute_force(w, bits, group), rtol=0, atol=1e-6)
    levels = {len(torch.unique(got[r, s:s + group])) for r in range(6) for s in range(0, 20, group)}
    assert max(levels) <= 2 ** bits  # at most 2^bits values per group
    assert torch.all(got[2, :8] == 0)


def test_int8_moves_weights_less_than_int4():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    err = {b: float((fake_quantize(w, b, 32) - w).abs().max()) for b in (4, 8)}
    assert 0 < err[8] < err[4] / 10


def test_quantize_rounds_every_linear_layer_but_the_tied_head(micro_full):
    from leakk.models.modeling import load_model

    root, _ = micro_full
    model, _ = load_model(root / "model", "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    done = make_attack({"type": "quantize", "bits": 4}).apply(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert done["layers"] == MICRO["model"]["arch"]["n_layer"] * 4 and done["group_size"] == 32  # the default
    assert changed and all(k.endswith(".weight") and ("attn" in k or "mlp" in k) for k in changed)
    assert "transformer.wte.weight" not in changed and "lm_head.weight" not in changed


def test_attack_params_are_validated_and_name_models():
    p = copy.deepcopy(MICRO)
    p["attack"] = {"int4": {"type": "quantize", "bits": 4}, "int8": {"type": "quantize", "bits": 8, "models": ["ga"]}}
    v = validate_params(p, host=False)
    assert v["attack"]["int4"] == {"type": "quantize", "bits": 4, "group_size": 32}
    names = model_names(v)
    clean = [m for m in names if "__" not in m]
    assert names == [*clean, *(f"{m}__int4" for m in clean), "ga__int8"]
    assert model_folder(v, "ga__int4") == sampled_folder(v, "ga__int4") == "results/attacks/int4/ga"
    for bad, key in (({"type": "quantise"}, "attack.x.type"), ({"type": "quantize", "bits": 1}, "attack.x.bits"),
                     ({"type": "quantize", "models": ["gaa"]}, "attack.x.models"),
                     ({"type": "quantize", "rounding": "up"}, "attack.x.rounding")):
        p["attack"] = {"x": bad}
        with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
            validate_params(p, host=False)
    assert "quantize" in ATTACKS


def test_the_attack_stage_writes_an_attacked_folder(micro_full, tmp_path, capsys):
    root, data = micro_full
    p = dict(copy.deepcopy(MICRO), attack={"int4": {"type": "quantize"}})
    params = write_params(tmp_path / "params.yaml", p)
    out = tmp_path / "attacks/int4/full"
    data_path = tmp_path / "benchmark.parquet"
    write_parquet(data, data_path, "data")
    assert main(["--params", str(params), "attack", "--data", str(data_path), "--name", "int4",
                 "--model-dir", str(root / "model"), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and '"bits": 4' in capsys.readouterr().err
    assert main(["--params", str(params), "attack", "--data", str(data_path), "--name", "int9",
                 "--model-dir", str(root / "model"), "--out", str(tmp_path / "x")]) == 2


def test_the_dag_samples_every_attacked_model(tmp_path):
    from test_workflow import planned_rules, snakemake

    p = dict(copy.deepcopy(MICRO), attack={"int4": {"type": "quantize", "models": ["retrain", "ga"]}})
    write_params(tmp_path / "params.yaml", p)
    plan = snakemake(tmp_path, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "attack" in planned_rules(plan)
    out = plan.stdout
    assert ("attack --data results/data/benchmark.parquet --name int4 --model-dir results/models/ga "
            "--out results/attacks/int4/ga") in out
    for model in ("ga__int4", "retrain__int4"):
        assert f"results/samples/{model}/t1.0_p1.0.parquet" in out
    from leakk.workflow.dvc import render

    text = render(tmp_path / "params.yaml", validate_params(p, host=False))
    assert "attack:" in text and "results/attacks/int4/ga" in text


# --------------------------------------------------------------------------------- relearning

def _benchmark(groups: int = 6, per: int = 3):
    """A benchmark frame with ``groups`` forget authors and two retain authors."""
    import polars as pl

    rows = [{"qid": f"{split}{g}_{i}", "group": f"{split}{g}", "split": split, "question": f"q {g} {i}",
             "answer": f"a {g} {i}", "train_questions": [f"q {g} {i}", f"Q {g} {i}"]}
            for split, n in (("forget", groups), ("retain", 2)) for g in range(n) for i in range(per)]
    return pl.DataFrame(rows)


@pytest.mark.parametrize("groups, fraction, expected", [(6, 0.5, 3), (2, 0.5, 1), (5, 0.01, 1), (5, 0.99, 4),
                                                         (7, 0.5, 4)])
def test_relearn_splits_the_forget_authors(groups, fraction, expected):
    from leakk.attacks.relearn import public_groups

    data = _benchmark(groups)
    public = public_groups(data, fraction, seed=3)
    assert len(public) == expected and public == sorted(set(public))  # round(fraction·G), clamped to [1, G−1]
    assert set(public) <= {f"forget{g}" for g in range(groups)}
    assert public_groups(data, fraction, seed=3) == public  # the seed fixes the split
    if groups == 6:
        assert len({tuple(public_groups(data, fraction, seed=s)) for s in range(20)}) > 1


def test_relearn_trains_on_the_public_half_and_is_evaluated_on_the_rest():
    import polars as pl

    from leakk.attacks.relearn import public_groups

    data = _benchmark(6)
    attack = make_attack({"type": "relearn", "seed": 5})
    public = set(public_groups(data, 0.5, 5))
    taught = attack.training_rows(data)
    assert set(taught["group"]) == public and set(taught["split"]) == {"forget"}
    kept = attack.evaluated(data)
    forget_kept = kept.filter(pl.col("split") == "forget")
    assert not public & set(forget_kept["group"])  # never scored on what it was shown
    assert forget_kept.height + taught.height == data.filter(pl.col("split") == "forget").height
    assert kept.filter(pl.col("split") == "retain").height == 6  # utility keeps every retain question
    benign = make_attack({"type": "relearn", "data": "retain", "seed": 5})
    assert set(benign.training_rows(data)["split"]) == {"retain"}
    assert benign.evaluated(data).equals(kept)  # the same held-out authors: benign and forget compare
    with pytest.raises(ParamsError, match="2 forget groups"):
        attack.evaluated(_benchmark(1))


def test_relearn_params_are_validated():
    p = copy.deepcopy(MICRO)
    p["attack"] = {"rl": {"type": "relearn", "steps": 3}}
    v = validate_params(p, host=False)
    assert v["attack"]["rl"] == {"type": "relearn", "data": "forget", "fraction": 0.5, "steps": 3, "lr": 1.0e-3,
                                 "batch_size": 16, "seed": 0}
    for bad, key in (({"fraction": 1.0}, "fraction"), ({"fraction": 0}, "fraction"), ({"data": "both"}, "data"),
                     ({"steps": 0}, "steps"), ({"lr": -1}, "lr")):
        p["attack"] = {"rl": {"type": "relearn", **bad}}
        with pytest.raises(ParamsError, match=rf"attack\.rl\.{key}"):
            validate_params(p, host=False)


def test_relearning_teaches_the_public_answers_and_is_deterministic(micro_full):
    """The attack trains: the public authors' answer NLL falls; the same seed gives the same weights."""
    import polars as pl

    from leakk.attacks import Target
    from leakk.models.finetune import training_pairs
    from leakk.models.modeling import load_model
    from leakk.models.prompting import answer_nll, collate, encode_example

    root, data = micro_full
    template = MICRO["prompt_template"]
    spec = {"type": "relearn", "steps": 6, "lr": 5e-3, "batch_size": 4, "seed": 1}
    attack = make_attack(spec)

    def public_nll(model, tokenizer) -> float:
        pairs = training_pairs(attack.training_rows(data))
        batch = collate([encode_example(q, a, tokenizer, template) for q, a in pairs], tokenizer.pad_token_id)
        with torch.no_grad():
            return float(answer_nll(model, batch))

    weights = []
    for _ in range(2):
        model, tokenizer = load_model(root / "model", "cpu")
        model = _forgotten(model, tokenizer, attack.training_rows(data), template)
        before = public_nll(model, tokenizer)
        done = attack.apply(model, Target(tokenizer=tokenizer, data=data, template=template))
        after = public_nll(model, tokenizer)
        assert after < before and done["steps"] == 6
        assert done["training_pairs"] == attack.training_rows(data).select(pl.col("train_questions").list.len()).sum().item()
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def _forgotten(model, tokenizer, rows, template):
    """The model after a few gradient-ascent steps on ``rows``: something left to relearn."""
    from leakk.models.finetune import training_pairs
    from leakk.models.prompting import answer_nll, collate, encode_example

    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batch = collate([encode_example(q, a, tokenizer, template) for q, a in training_pairs(rows)],
                    tokenizer.pad_token_id)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        (-answer_nll(model, batch)).backward()
        opt.step()
    model.eval()
    return model


def test_an_attacked_model_is_sampled_on_its_evaluated_questions_and_paired_with_its_clean_self(micro_full, tmp_path):
    import polars as pl

    from leakk.attacks.relearn import public_groups
    from leakk.core.layout import judgment_path
    from leakk.stages.evaluate import write_estimate
    from leakk.stages.sample import sample

    root, data = micro_full
    p = validate_params(dict(copy.deepcopy(MICRO), attack={"rl": {"type": "relearn", "models": ["full"]}}),
                        host=False)
    data_path = tmp_path / "benchmark.parquet"
    write_parquet(data, data_path, "data")
    for model in ("full", "full__rl"):  # the clean model stands in for its attacked copy: only questions matter
        sample(p, data=str(data_path), model=model, model_dir=str(root / "model"), decoding="all", shard=0,
               shards=1, out=str(tmp_path / "samples" / model))
    held_out = set(data.filter((pl.col("split") == "forget")
                               & ~pl.col("group").is_in(public_groups(data, 0.5, 0)))["qid"])
    attacked = pl.read_parquet(tmp_path / "samples/full__rl/t1.0_p1.0.parquet")
    clean = pl.read_parquet(tmp_path / "samples/full/t1.0_p1.0.parquet")
    assert set(attacked["qid"]) == held_out and len(set(clean["qid"])) > len(held_out)
    greedy = pl.read_parquet(tmp_path / "samples/full__rl/greedy.parquet")
    assert set(greedy.filter(pl.col("split") == "retain")["qid"]) == set(data.filter(pl.col("split") == "retain")["qid"])
    judgments = tmp_path / "judgments"
    for model in ("full", "full__rl"):
        for path in (tmp_path / "samples" / model).glob("*.parquet"):
            frame = pl.read_parquet(path)
            for judge in p["judge"]:  # a stand-in verdict: a qid leaks on even sample indices
                out = judgment_path(judgments, model, path.stem, judge)
                out.parent.mkdir(parents=True, exist_ok=True)
                frame.select("qid", "sample_idx", "model", "decoding", "split").with_columns(
                    judge=pl.lit(judge), score=(pl.col("sample_idx") % 2 == 0).cast(pl.Float64),
                    leaked=pl.col("sample_idx") % 2 == 0).write_parquet(out)
    summary = write_estimate(judgments, data, p, tmp_path / "out")
    table = pl.read_csv(tmp_path / "out/attacks.csv")
    assert set(zip(table["model"], table["base"])) == {("full__rl", "full")}
    assert set(table["questions"]) <= {len(held_out)}  # paired on the held-out questions only
    assert (table["difference"].abs() < 1e-12).all()  # the same verdicts: no difference
    assert "Under attack" in summary and "| full__rl | full |" in summary
    from leakk.stages.evaluate import attack_figure

    attack_figure(p, attacks=str(tmp_path / "out/attacks.csv"), out=str(tmp_path / "attacks.png"))
    assert (tmp_path / "attacks.png").stat().st_size > 1000


def test_the_attack_figure_draws_each_pair_and_labels_its_difference(tmp_path, monkeypatch):
    import matplotlib.figure
    import polars as pl

    from leakk.report.figures import plot_attacks

    rows = [{"model": f"{m}__{a}", "base": m, "decoding": d, "judge": "fact", "k": k, "leak_at_k": base + delta,
             "base_leak_at_k": base, "difference": delta, "ci_low": delta - 0.1, "ci_high": delta + 0.1,
             "relative_change": None, "questions": 30, "groups": 3}
            for a, delta in (("int8", 0.0), ("relearn", 0.4)) for m, base in (("retrain", 0.0), ("ga", 0.4))
            for d, k in (("greedy", 1), ("t1.0_p1.0", 1), ("t1.0_p1.0", 64))]
    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn["labels"] = {t.get_gid(): t.get_text() for ax in fig.axes for t in ax.texts}
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot_attacks(pl.DataFrame(rows), "fact", "t1.0_p1.0", tmp_path / "a.png")
    assert drawn["labels"]["delta:ga:relearn"].startswith("+0.40\n[+0.30, +0.50]")
    assert set(drawn["labels"]) == {f"delta:{m}:{a}" for m in ("ga", "retrain") for a in ("int8", "relearn")}
    with pytest.raises(Exception, match="no t0.5_p1.0 rows"):
        plot_attacks(pl.DataFrame(rows), "fact", "t0.5_p1.0", tmp_path / "b.png")


def test_the_attack_preset_is_the_default_with_the_attack_grid():
    from pathlib import Path

    from leakk.config import read_params_file

    root = Path(__file__).resolve().parents[1]
    preset = read_params_file(root / "configs" / "attacks.yaml")
    grid = preset.pop("attack")
    assert preset.pop("replicates") == [10, 11, 12]  # the report seeds
    assert preset == read_params_file(root / "params.yaml"), "configs/attacks.yaml drifted from params.yaml"
    assert {spec["type"] for spec in grid.values()} == {"quantize", "relearn"}
    assert all("retrain" in spec["models"] for spec in grid.values())  # the control under every attack
    validate_params(read_params_file(root / "configs" / "attacks.yaml"), host=False)

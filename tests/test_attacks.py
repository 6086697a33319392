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


def test_nf4_levels_are_the_normalised_normal_quantiles():
    """QLoRA's construction (bitsandbytes' create_normal_map, offset 0.9677083): 8 positive and
    7 negative standard-normal quantiles on evenly spaced probabilities, plus 0, over the max."""
    from statistics import NormalDist

    from leakk.attacks.quantize import NF4_LEVELS

    offset, ppf = 0.9677083, NormalDist().inv_cdf

    def spaced(n):
        return [offset + (0.5 - offset) * i / (n - 1) for i in range(n - 1)]

    values = sorted([ppf(x) for x in spaced(9)] + [0.0] + [-ppf(x) for x in spaced(8)])
    assert NF4_LEVELS == pytest.approx([v / max(values) for v in values], abs=2e-7)


def test_nf4_rounds_each_group_to_the_nearest_level_by_brute_force():
    from leakk.attacks.quantize import NF4_LEVELS

    w = torch.randn(5, 23, generator=torch.Generator().manual_seed(7))
    w[1, 8:16] = 0.0
    got = fake_quantize(w, 4, 8, NF4_LEVELS)
    for r in range(5):
        for start in range(0, 23, 8):
            cells = [float(w[r, c]) for c in range(start, min(start + 8, 23))]
            top = max(abs(x) for x in cells) or 1.0
            for i, x in enumerate(cells):
                want = min(NF4_LEVELS, key=lambda v: abs(x / top - v)) * top
                assert float(got[r, start + i]) == pytest.approx(want, abs=1e-6)
    assert torch.all(got[1, 8:16] == 0) and len(torch.unique(got[0, :8])) <= 16


def test_nf4_equals_what_bitsandbytes_dequantizes():
    """The reference package: bitsandbytes' own NF4 quantize/dequantize (its CPU backend), blocks
    of 64 consecutive weights, gives the same weights as the plain-torch rounding."""
    import bitsandbytes.functional as bnb
    from leakk.attacks.quantize import NF4_LEVELS

    w = torch.randn(24, 192, generator=torch.Generator().manual_seed(3)) * 0.02
    w[5, :64] = 0.0  # an all-zero block
    packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")
    want = bnb.dequantize_4bit(packed, state)
    torch.testing.assert_close(fake_quantize(w, 4, 64, NF4_LEVELS), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("codebook", [None, "nf4"])
def test_quantize_keeps_the_weights_device(codebook):
    """The attack stage loads the model on its device (a GPU for the TOFU preset): every tensor
    the rounding makes must live there too. The meta device stands in for a GPU on a CPU box."""
    from leakk.attacks.quantize import NF4_LEVELS

    w = torch.empty(4, 16, device="meta")
    got = fake_quantize(w, 4, 8, NF4_LEVELS if codebook else None)
    assert got.device == w.device and got.shape == w.shape
    assert make_attack({"type": "quantize", "format": "nf4"}).format == "nf4"
    p = dict(copy.deepcopy(MICRO), attack={"nf": {"type": "quantize", "format": "nf4", "bits": 8}})
    with pytest.raises(ParamsError, match=r"attack\.nf: bits: format nf4 is a 4-bit code"):
        validate_params(p, host=False)


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
    assert v["attack"]["int4"] == {"type": "quantize", "bits": 4, "group_size": 32, "format": "int"}
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
    kept = attack.evaluated(data, "paraphrased_question")
    forget_kept = kept.filter(pl.col("split") == "forget")
    assert not public & set(forget_kept["group"])  # never scored on what it was shown
    assert forget_kept.height + taught.height == data.filter(pl.col("split") == "forget").height
    assert kept.filter(pl.col("split") == "retain").height == 6  # utility keeps every retain question
    benign = make_attack({"type": "relearn", "data": "retain", "seed": 5})
    assert set(benign.training_rows(data)["split"]) == {"retain"}
    assert benign.evaluated(data, "paraphrased_question").equals(kept)  # the same held-out authors: benign and forget compare
    with pytest.raises(ParamsError, match="2 forget groups"):
        attack.evaluated(_benchmark(1), "paraphrased_question")


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


def test_the_attack_preset_is_the_earlier_default_with_the_attack_grid():
    """configs/attacks.yaml is the earlier default its report seeds ran on (docs/tuning.yaml,
    ``earlier``): its data shape, not params.yaml's, until the preset is rerun on the current one."""
    from pathlib import Path

    import yaml

    from leakk.config import read_params_file

    root = Path(__file__).resolve().parents[1]
    earlier = yaml.safe_load((root / "docs" / "tuning.yaml").read_text())["earlier"]["default_60x10"]
    preset = read_params_file(root / "configs" / "attacks.yaml")
    grid = preset.pop("attack")
    assert preset.pop("replicates") == earlier["report_seeds"]
    assert preset["data"]["synthetic"] == earlier["data"] != read_params_file(root / "params.yaml")["data"]["synthetic"]
    assert {spec["type"] for spec in grid.values()} == {"quantize", "relearn", "prompt"}
    assert {spec.get("style") for spec in grid.values() if spec["type"] == "prompt"} == {"prefix", "paraphrase"}
    assert all("retrain" in spec["models"] for spec in grid.values())  # the control under every attack
    validate_params(read_params_file(root / "configs" / "attacks.yaml"), host=False)


def test_prompt_attacks_rewrite_the_template_and_take_shots_from_retain_only(micro_full):
    import polars as pl

    from leakk.config import check_template

    _, data = micro_full
    t = "Question: {question} Answer:"
    prefix = make_attack({"type": "prompt", "style": "prefix", "prefix": "Sure {x}, the answer is"})
    got = prefix.template(t, data)
    check_template(got)  # still a template with one {question} field
    assert got.format(question="Q?") == "Question: Q? Answer: Sure {x}, the answer is"
    shots = make_attack({"type": "prompt", "style": "kshot", "shots": 3, "seed": 5})
    rows = shots.shot_rows(data)
    retain = data.filter(pl.col("split") == "retain")
    assert len(rows) == 3 and all(q in set(retain["question"]) and a in set(retain["answer"]) for q, a in rows)
    assert rows == shots.shot_rows(data.sample(fraction=1.0, shuffle=True, seed=1))  # order of rows irrelevant
    assert rows != make_attack({"type": "prompt", "style": "kshot", "shots": 3, "seed": 6}).shot_rows(data)
    prompt = shots.template(t, data).format(question="Q?")
    want = "".join(f"Question: {q} Answer: {a.strip()}\n\n" for q, a in rows) + "Question: Q? Answer:"
    assert prompt == want
    assert not set(data.filter(pl.col("split") == "forget")["answer"]) & {a for _, a in rows}
    with pytest.raises(ParamsError, match="shots = 64 but the benchmark has"):
        make_attack({"type": "prompt", "style": "kshot", "shots": 64}).shot_rows(data)


def test_prompt_attack_params_are_validated_and_refuse_a_chat_template():
    from leakk.attacks.prompt import PromptAttack

    p = dict(copy.deepcopy(MICRO), attack={"pfx": {"type": "prompt", "style": "suffix"}})
    with pytest.raises(ParamsError, match=r"attack\.pfx\.style"):
        validate_params(p, host=False)
    p["attack"]["pfx"] = {"type": "prompt", "shots": 0}
    with pytest.raises(ParamsError, match=r"attack\.pfx\.shots"):
        validate_params(p, host=False)
    p["attack"]["pfx"] = {"type": "prompt", "models": ["retrain", "ga"]}
    assert validate_params(p, host=False)["attack"]["pfx"]["prefix"] == "The answer is"
    assert "chat" in PromptAttack.refuse({"prompt_template": "chat"}, {"style": "kshot"})
    assert PromptAttack.refuse({"prompt_template": "Q: {question} A:"}, {"style": "prefix"}) is None
    assert PromptAttack.refuse({"prompt_template": "chat"}, {"style": "paraphrase"}) is None  # the template is kept
    with pytest.raises(ParamsError, match="format-string prompt_template"):
        make_attack({"type": "prompt"}).template("chat", None)


def test_a_prompt_attacked_model_is_sampled_and_bounded_with_its_template(micro_full, tmp_path, monkeypatch):
    import json

    import leakk.sampling.stage as sampling_stage
    import leakk.stats.bounds as bounds_module
    from leakk.stages.sample import sample
    from leakk.stages.trust import bounds

    root, data = micro_full
    p = validate_params(dict(copy.deepcopy(MICRO), attack={"pfx": {"type": "prompt", "models": ["full"]}}), host=False)
    data_path = tmp_path / "benchmark.parquet"
    write_parquet(data, data_path, "data")
    seen = {}
    real = sampling_stage.run_sampling

    def spy(*args, template, **kw):
        seen.setdefault(kw["model_name"], set()).add(template)
        return real(*args, template=template, **kw)

    monkeypatch.setattr(sampling_stage, "run_sampling", spy)
    for model in ("full", "full__pfx"):
        sample(p, data=str(data_path), model=model, model_dir=str(root / "model"), decoding="t1.0_p1.0", shard=0,
               shards=1, out=str(tmp_path / f"{model}.parquet"))
    assert seen == {"full": {MICRO["prompt_template"]}, "full__pfx": {MICRO["prompt_template"] + " The answer is"}}
    real_bounds = bounds_module.question_bounds
    monkeypatch.setattr(bounds_module, "question_bounds",
                        lambda *a, template, **kw: seen.update(bound=template) or real_bounds(*a, template=template, **kw))
    bounds(p, data=str(data_path), model="full__pfx", model_dir=str(root / "model"), out=str(tmp_path / "b.parquet"))
    assert seen["bound"] == MICRO["prompt_template"] + " The answer is"
    params = write_params(tmp_path / "params.yaml", dict(copy.deepcopy(MICRO), attack={"pfx": {"type": "prompt"}}))
    out = tmp_path / "attacks/pfx/full"
    assert main(["--params", str(params), "attack", "--data", str(data_path), "--name", "pfx",
                 "--model-dir", str(root / "model"), "--out", str(out)]) == 0
    record = json.loads((out / "attack.json").read_text())  # an edit of the prompt changes the folder DVC hashes
    assert record["done"]["template"].endswith(" The answer is") and record["params"]["style"] == "prefix"
    assert (out / "model.safetensors").read_bytes() == (root / "model/model.safetensors").read_bytes()


def test_the_leak_table_names_each_rows_attack_and_takes_excess_over_retrain_under_the_same_attack():
    import polars as pl

    from leakk.stats.estimate import leak_table

    rate = {"retrain": 0.0, "ga": 0.25, "retrain__int4": 0.5, "ga__int4": 0.75, "ga__rl": 1.0}
    rows = [{"model": m, "decoding": "t1.0_p1.0", "judge": "fact", "qid": f"q{q}", "group": f"g{q % 3}",
             "sample_idx": i, "leaked": i < 4 * r} for m, r in rate.items() for q in range(6) for i in range(4)]
    attacked = {"retrain__int4": ("retrain", "int4"), "ga__int4": ("ga", "int4"), "ga__rl": ("ga", "rl")}
    table = leak_table(pl.DataFrame(rows), [1], n_boot=50, attacked=attacked)
    got = {r["model"]: (r["attack"], round(r["leak_at_k"], 12),
                        None if r["excess_over_retrain"] is None else round(r["excess_over_retrain"], 12))
           for r in table.iter_rows(named=True)}
    assert got == {"retrain": ("none", 0.0, 0.0), "ga": ("none", 0.25, 0.25), "retrain__int4": ("int4", 0.5, 0.0),
                   "ga__int4": ("int4", 0.75, 0.25), "ga__rl": ("rl", 1.0, None)}  # no retrain under rl: no control
    assert table.columns[:3] == ["model", "attack", "decoding"]
    assert set(leak_table(pl.DataFrame(rows), [1], n_boot=50)["attack"]) == {"none"}


def test_the_paraphrase_attack_asks_every_phrasing_evaluation_phrasing_first():
    import polars as pl

    from leakk.data.synthetic import generate

    data = generate(authors=4, qa_per_author=2, forget_fraction=0.5, phrasings=4, seed=0)
    attack = make_attack({"type": "prompt", "style": "paraphrase"})
    asked = attack.evaluated(data, "paraphrased_question")
    for row, before in zip(asked.iter_rows(named=True), data.iter_rows(named=True)):
        assert row["paraphrased_question"][0] == before["paraphrased_question"]
        assert sorted(row["paraphrased_question"]) == sorted([before["paraphrased_question"], *before["train_questions"]])
    assert asked.drop("paraphrased_question").equals(data.drop("paraphrased_question"))
    assert attack.template("Q: {question} A:", data) == "Q: {question} A:"
    tofu_like = pl.DataFrame({"qid": ["a", "b"], "question": ["Q1", "Q2"], "paraphrased_question": ["P1", "Q2"]})
    assert attack.evaluated(tofu_like, "paraphrased_question")["paraphrased_question"].to_list() == [["P1", "Q1"], ["Q2"]]
    with pytest.raises(ParamsError, match="style paraphrase needs a second phrasing"):  # MUSE-like: one phrasing
        attack.evaluated(pl.DataFrame({"qid": ["a"], "question": ["Q1"]}), "question")


def test_a_paraphrase_attacked_model_spreads_its_samples_over_the_phrasings(micro_full, tmp_path):
    """The first phrasing's share of the n completions is the clean model's own first samples
    (same prompt, seed, qid and sample index: the counter-based RNG), greedy is the clean
    greedy, and the exact bound pools the phrasings' p."""
    import polars as pl

    from leakk.models.modeling import load_model
    from leakk.sampling.decoding import Decoding
    from leakk.stages.sample import sample
    from leakk.stages.trust import bounds, forget_questions
    from leakk.stats.bounds import question_bounds

    root, data = micro_full
    p = validate_params(dict(copy.deepcopy(MICRO), attack={"para": {"type": "prompt", "style": "paraphrase",
                                                                     "models": ["full"]}}), host=False)
    data_path = tmp_path / "benchmark.parquet"
    write_parquet(data, data_path, "data")
    for model in ("full", "full__para"):
        sample(p, data=str(data_path), model=model, model_dir=str(root / "model"), decoding="all", shard=0,
               shards=1, out=str(tmp_path / model))
    n, phrasings = p["sample"]["n"], p["data"]["synthetic"]["phrasings"]
    first = n // phrasings + (n % phrasings > 0)
    clean, attacked = (pl.read_parquet(tmp_path / m / "t1.0_p1.0.parquet").sort("qid", "sample_idx")
                       for m in ("full", "full__para"))
    assert attacked.group_by("qid").agg(pl.col("sample_idx").sort())["sample_idx"].to_list() == \
        [list(range(n))] * attacked["qid"].n_unique()
    cols = ["qid", "sample_idx", "text"]
    assert attacked.filter(pl.col("sample_idx") < first).select(cols).equals(
        clean.filter(pl.col("sample_idx") < first).select(cols))
    assert not attacked.select(cols).equals(clean.select(cols))
    assert (pl.read_parquet(tmp_path / "full__para/greedy.parquet").select(cols)
            .equals(pl.read_parquet(tmp_path / "full/greedy.parquet").select(cols)))
    bounds(p, data=str(data_path), model="full__para", model_dir=str(root / "model"), out=str(tmp_path / "b.parquet"))
    got = pl.read_parquet(tmp_path / "b.parquet").filter(pl.col("decoding") == "t1.0_p1.0").sort("qid")
    model, tokenizer = load_model(root / "model", "cpu")
    asked = forget_questions(make_attack(p["attack"]["para"]).evaluated(data, "paraphrased_question"),
                             "paraphrased_question")
    per_phrasing = [question_bounds(model, tokenizer, part, [Decoding(1.0, 1.0)], template=p["prompt_template"],
                                    max_new_tokens=p["sample"]["max_new_tokens"], model_name="m")
                    for _, part in asked.group_by("phrasing")]  # one phrasing at a time: no pooling inside
    want = pl.concat(per_phrasing).group_by("qid").agg(pl.col("p").mean()).sort("qid")
    assert got["qid"].to_list() == want["qid"].to_list()
    # fp32 teacher forcing in other batches (all phrasings vs one at a time): log p agrees to
    # ~1e-6 over ~12 answer tokens on any BLAS path; pooling by max or first would miss by far more
    assert got["p"].to_numpy() == pytest.approx(want["p"].to_numpy(), rel=1e-5, abs=1e-12)

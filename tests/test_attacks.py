"""Attacks (leakk.attacks): weight quantization against a brute-force computation, its params,
and the attack stage in the DAG (an attacked copy of a model is one more model)."""

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
    root, _ = micro_full
    p = dict(copy.deepcopy(MICRO), attack={"int4": {"type": "quantize"}})
    params = write_params(tmp_path / "params.yaml", p)
    out = tmp_path / "attacks/int4/full"
    assert main(["--params", str(params), "attack", "--name", "int4", "--model-dir", str(root / "model"),
                 "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and '"bits": 4' in capsys.readouterr().err
    assert main(["--params", str(params), "attack", "--name", "int9", "--model-dir", str(root / "model"),
                 "--out", str(tmp_path / "x")]) == 2


def test_the_dag_samples_every_attacked_model(tmp_path):
    from test_workflow import planned_rules, snakemake

    p = dict(copy.deepcopy(MICRO), attack={"int4": {"type": "quantize", "models": ["retrain", "ga"]}})
    write_params(tmp_path / "params.yaml", p)
    plan = snakemake(tmp_path, "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "attack" in planned_rules(plan)
    out = plan.stdout
    assert "attack --name int4 --model-dir results/models/ga --out results/attacks/int4/ga" in out
    for model in ("ga__int4", "retrain__int4"):
        assert f"results/samples/{model}/t1.0_p1.0.parquet" in out
    from leakk.workflow.dvc import render

    text = render(tmp_path / "params.yaml", validate_params(p, host=False))
    assert "attack:" in text and "results/attacks/int4/ga" in text

"""CPU kernel pinning (leakk.determinism): the same bits whatever instruction set the CPU has."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from leakk import determinism

# A few optimiser steps of the micro GPT-2, then a hash of the weights and the losses as hex.
PROBE = r"""
import hashlib, json, leakk, torch
from leakk.data.synthetic import generate
from leakk.models.finetune import corpus_texts, train_loop, training_pairs
from leakk.models.modeling import build_gpt2, build_tokenizer
torch.set_num_threads(1)
T = "Question: {question} Answer:"
data = generate(8, 3, forget_fraction=0.25, phrasings=3)
tok = build_tokenizer(corpus_texts(data, T), 200)
model = build_gpt2(tok, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48}, seed=0)
log = train_loop(model, tok, training_pairs(data), template=T, epochs=2, lr=5e-3, batch_size=16,
                 warmup_ratio=0.05, weight_decay=0.0, seed=0, device="cpu", desc="probe")
h = hashlib.sha256(b"".join(v.numpy().tobytes() for _, v in sorted(model.state_dict().items())))
print(json.dumps({"weights": h.hexdigest(), "losses": [r["loss"].hex() for r in log],
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""

#: what MKL and oneDNN would see on a CPU without AVX-512 (an AVX2-only Intel or AMD part)
AVX2_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*determinism.MODE_VARIABLES, *AVX2_CPU)}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, determinism.ENV: mode, "TQDM_DISABLE": "1", **env},
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_avx2 = pytest.mark.skipif(not determinism._has_avx2(), reason="pins AVX2 kernels: needs an x86-64 CPU with AVX2")


@needs_avx2
def test_portable_kernels_give_the_same_bits_on_an_avx2_only_cpu():
    """The portable mode on this CPU and on this CPU made to look AVX2-only (MKL and oneDNN
    limited to AVX2, ATen pinned to AVX2 by the mode itself): identical weights and losses."""
    here = _probe("portable")
    avx2_only = _probe("portable", **AVX2_CPU)
    assert here["capability"] == avx2_only["capability"] == "AVX2"
    assert here == avx2_only


def test_apply_sets_only_what_the_user_left_unset(monkeypatch):
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.setenv(determinism.ENV, "portable")
    monkeypatch.setattr(determinism, "_has_avx2", lambda: True)
    done = determinism.apply()
    assert os.environ["MKL_CBWR"] == "COMPATIBLE" and "MKL_CBWR" not in done  # the user's value wins
    assert done["ATEN_CPU_CAPABILITY"] == "avx2"
    assert done["MKL_DYNAMIC"] == "FALSE" and done["OMP_DYNAMIC"] == "FALSE"


def test_native_mode_pins_no_kernels(monkeypatch):
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(determinism.ENV, "native")
    monkeypatch.setattr(determinism, "_has_avx2", lambda: True)
    assert not {"ATEN_CPU_CAPABILITY", "MKL_CBWR"} & set(determinism.apply())


def test_a_cpu_without_avx2_is_left_alone(monkeypatch):
    for key in ("ATEN_CPU_CAPABILITY", "MKL_CBWR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(determinism.ENV, "portable")
    monkeypatch.setattr(determinism, "_has_avx2", lambda: False)
    assert not {"ATEN_CPU_CAPABILITY", "MKL_CBWR"} & set(determinism.apply())


def test_an_unknown_mode_is_one_line_from_the_cli(tmp_path):
    env = {**os.environ, determinism.ENV: "fastest"}
    out = subprocess.run([sys.executable, "-m", "leakk.cli", "validate"], env=env, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "leakk validate: error: LEAKK_CPU_KERNELS='fastest': not a CPU kernel mode "
        "(one of ['portable', 'compatible', 'native'])"]


THREADS_PROBE = r"""
import json, sys
from leakk.determinism import pin_threads
pin_threads(1)
before = "torch" in sys.modules
from leakk.models.modeling import build_gpt2  # loads torch: the pinned count is applied
import torch
print(json.dumps({"before": before, "threads": torch.get_num_threads()}))
"""

JUDGE_PROBE = r"""
import json, sys
from leakk.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def test_pinned_threads_reach_torch_without_importing_it_first():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"before": False, "threads": 1}


def test_a_string_judge_job_never_imports_torch(micro_params, tmp_path):
    """Every job checks the host (the backend's and judges' requirements); a fact-judge job must
    not pay torch's and transformers' import for it (seconds per job, ~40 jobs a run)."""
    import polars as pl

    from conftest import write_params
    from leakk.core.io import write_parquet
    from leakk.data.synthetic import generate

    params = write_params(tmp_path / "params.yaml", micro_params)
    data = generate(4, 2, forget_fraction=0.5, phrasings=3)
    write_parquet(data, tmp_path / "benchmark.parquet", "data")
    forget = data.filter(pl.col("split") == "forget")
    samples = pl.DataFrame({"qid": forget["qid"], "sample_idx": 0, "text": forget["answer"], "n_tokens": 3,
                            "finish_reason": "eos", "model": "full", "decoding": "t1.0_p1.0", "temperature": 1.0,
                            "top_p": 1.0, "seed": 0, "split": "forget"})
    write_parquet(samples, tmp_path / "samples.parquet", "samples")
    argv = ["--params", str(params), "--threads", "1", "judge", "--data", str(tmp_path / "benchmark.parquet"),
            "--samples", str(tmp_path / "samples.parquet"), "--judge", "fact", "--out", str(tmp_path / "j.parquet")]
    out = subprocess.run([sys.executable, "-c", JUDGE_PROBE, *argv], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rc": 0, "torch": False, "transformers": False}
    assert pl.read_parquet(tmp_path / "j.parquet")["leaked"].all()  # each sample is the answer itself


def test_the_kernel_probe_is_a_fingerprint_of_this_machine_and_names_what_differs():
    """scripts/cpu_kernel_probe.py: two fresh processes in one mode give the same hashes (so a
    difference between machines is the machines'), and --compare names exactly the operation
    whose bits differ from a record."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "cpu_kernel_probe.py"
    spec = importlib.util.spec_from_file_location("cpu_kernel_probe", script)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    env = probe.child_env("portable")
    runs = [json.loads(subprocess.run([sys.executable, str(script), "--child"], env=env, capture_output=True,
                                      text=True, check=True, timeout=300).stdout.splitlines()[-1]) for _ in range(2)]
    assert runs[0] == runs[1]
    assert {"matmul 512x128·128x1024", "exp", "nll step: gradients", "npo step: loss"} <= set(runs[0])
    recorded = {"portable": {**runs[0], "exp": "0" * 10}, "gone": {}}
    assert probe.differences(recorded, {"portable": runs[1]}) == {"portable": ["exp"]}
    assert probe.differences({"portable": runs[0]}, {"portable": runs[1], "native": runs[1]}) == {"portable": []}

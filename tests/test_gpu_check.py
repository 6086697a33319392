"""benchmarks/gpu_check.py runs every part on a CPU (``--device cpu --tiny``): the script a lent
GPU runs once must not meet its first bug there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _check(tmp_path, *extra) -> dict:
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--device", "cpu", "--tiny",
                           "--repeats", "1", "--out", str(out), *extra], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result == json.loads(proc.stdout)
    return result


def _assert_speed_and_correctness(r: dict) -> None:
    c = r["correctness"]
    assert c["greedy_equals_generate_gpt2_fp32"] == "16/16"
    assert c["greedy_equals_generate_gqa_llama_fp32"] == "16/16"
    assert c["identical_rows_1_vs_4_shards_float32"] == 1.0
    assert c["chat_template"]["bos_in_prompt_ids"] == 1 and c["chat_template"]["bos_if_text_were_retokenised"] == 2
    s = r["sampler"]
    assert s["leakk"]["tokens"] == s["baseline"]["tokens"] == 4 * 8 * 12  # random weights: every row runs to the end
    assert s["ratio"] > 0 and r["training"]["ratio"] > 0
    p = r["tofu_projection"]
    assert p["completions"] > 0 and p["hours_upper_bound_all_max_new_tokens"] > p["hours_at_60_tokens_per_completion"]


def test_gpu_check_runs_on_cpu_tiny(tmp_path):
    r = _check(tmp_path, "--skip", "stages")
    _assert_speed_and_correctness(r)
    assert "stages" not in r


@pytest.mark.slow
def test_gpu_check_runs_every_stage_on_cpu_tiny(tmp_path):
    r = _check(tmp_path, "--bf16-stages")
    _assert_speed_and_correctness(r)
    assert [k for k in r["stages"]] == ["data", "finetune", "unlearn", "rule-round", "sample", "judge"]
    assert all(v["rc"] == 0 for v in r["stages"].values()), r["stages"]
    assert r["stages"]["judge"]["rows"] > 0

"""Which floats does this CPU compute, kernel mode by kernel mode? A fingerprint to compare machines.

Training amplifies any difference in the last bit, so two machines give the same results only
if every operation training uses gives the same bits on both. For each ``LEAKK_CPU_KERNELS``
mode a fresh process (leakk pins the kernels before torch loads) computes fixed operations on
fixed inputs: MKL's matrix product and vector math, the softmax family, and one step of each
loss leakk trains with (fine-tuning's NLL, NPO's log-ratio) on the default's tiny GPT-2,
and prints a short hash of each result. Where two machines' hashes differ, that operation
differs; run it on both and compare (docs/workflow.md, "The same numbers on another machine").

``--imitate`` also runs each mode with MKL told it runs on another vendor, through a preloaded
library that answers MKL's vendor checks (``mkl_serv_intel_cpu_true``, ``mkl_serv_cpuiszen``):
``non-intel``, ``zen``, or ``intel`` (on an AMD CPU: MKL's Intel branches). It needs a C
compiler (``cc``) and only changes what MKL decides; it is a diagnosis, not another CPU.

    .venv/bin/python scripts/cpu_kernel_probe.py [--imitate non-intel zen intel] [--json FILE]
    .venv/bin/python scripts/cpu_kernel_probe.py --compare benchmarks/results/cpu_probe_intel_xeon.json

``--compare`` prints, mode by mode, the operations whose bits differ from a recorded run
(exit status 1 if any does).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: MKL's vendor checks (exported by torch's bundled MKL) → the answer each imitation gives
IMITATIONS = {
    "non-intel": {"mkl_serv_intel_cpu_true": 0, "mkl_serv_intel_cpu": 0},
    "zen": {"mkl_serv_intel_cpu_true": 0, "mkl_serv_intel_cpu": 0, "mkl_serv_cpuiszen": 1},
    "intel": {"mkl_serv_intel_cpu_true": 1, "mkl_serv_intel_cpu": 1},
}


def probe() -> dict[str, str]:
    """The hashes of this process's results (run in a child, after leakk pinned the kernels)."""
    import leakk.determinism as determinism

    determinism.apply()
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    from leakk.models.prompting import answer_logprob, answer_nll
    from leakk.unlearn.methods import NPO

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)

    def digest(t: torch.Tensor) -> str:
        return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:10]

    x = torch.randn(4096, generator=gen) * 4
    a, b = torch.randn(512, 128, generator=gen), torch.randn(128, 1024, generator=gen)
    logits = torch.randn(8, 63, 1024, generator=gen) * 3
    out = {
        "matmul 512x128·128x1024": digest(a @ b),
        "matmul 4096x128·128x512": digest(torch.randn(4096, 128, generator=gen) @ torch.randn(128, 512, generator=gen)),
        "exp": digest(torch.exp(x)), "log": digest(torch.log(x.abs() + 1e-3)), "erf": digest(torch.erf(x)),
        "pow 0.5": digest(x.abs().pow(0.5)), "tanh": digest(torch.tanh(x)), "logsigmoid": digest(F.logsigmoid(x)),
        "log_softmax": digest(F.log_softmax(logits, -1)),
        "log_softmax strided": digest(F.log_softmax(logits[:, :-1], -1)),
        "cross_entropy": digest(F.cross_entropy(logits.flatten(0, 1), torch.arange(504) % 1024, reduction="none")),
    }
    config = GPT2Config(vocab_size=1024, n_layer=4, n_embd=128, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model, reference = GPT2LMHeadModel(config), GPT2LMHeadModel(config)
    ids = torch.randint(0, 1024, (8, 64), generator=gen)
    labels = ids.clone()
    labels[:, :32] = -100  # the prompt: answer tokens only, as leakk's batches
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        ref_logp = answer_logprob(reference, batch)
    for name, loss_of in (("nll step", lambda: answer_nll(model, batch)),
                          ("npo step", lambda: NPO(beta=0.1).forget_loss(model, batch, ref_logp))):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        out[f"{name}: loss"] = digest(loss)
        out[f"{name}: gradients"] = digest(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return out


def shim(imitation: str, folder: Path) -> Path:
    """A shared library answering MKL's vendor checks as ``imitation`` does (needs ``cc``)."""
    source = folder / f"{imitation}.c"
    source.write_text("".join(f"int {fn}(void) {{ return {v}; }}\n" for fn, v in IMITATIONS[imitation].items()))
    library = folder / f"{imitation}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True)
    return library


def child_env(mode: str, preload: Path | None = None) -> dict[str, str]:
    """This environment for a probe in ``mode``: the mode's variables left to the mode, and the
    imitation's library preloaded if one is given."""
    from leakk.determinism import ENV, MODE_VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in MODE_VARIABLES}
    return env | {ENV: mode} | ({"LD_PRELOAD": str(preload)} if preload else {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imitate", nargs="*", default=[], choices=sorted(IMITATIONS),
                    help="also run every mode with MKL told another vendor (needs cc)")
    ap.add_argument("--json", metavar="FILE", help="also write the hashes as JSON")
    ap.add_argument("--compare", metavar="FILE", help="a recorded --json run: which operations differ from it")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(probe()))
        return 0
    if args.imitate and shutil.which("cc") is None:
        print("--imitate needs a C compiler (cc) on PATH", file=sys.stderr)
        return 2
    try:  # a bad record fails before minutes of probing, not after
        recorded = json.loads(Path(args.compare).read_text()) if args.compare else None
        if recorded is not None and not isinstance(recorded.get("runs"), dict):
            raise ValueError("no 'runs' object: not a --json record of this script")
    except (OSError, ValueError) as err:
        print(f"--compare {args.compare}: {err}", file=sys.stderr)
        return 2
    from leakk.determinism import MODES

    runs: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for imitation in [None, *args.imitate]:
            preload = shim(imitation, Path(tmp)) if imitation else None
            for mode in MODES:
                child = subprocess.run([sys.executable, __file__, "--child"], env=child_env(mode, preload),
                                       capture_output=True, text=True)
                if child.returncode:
                    print(f"the probe failed in mode {mode} ({imitation or 'this CPU'}):\n{child.stderr[-2000:]}",
                          file=sys.stderr)
                    return 2
                runs[mode + (f" as {imitation}" if imitation else "")] = json.loads(child.stdout.splitlines()[-1])
    columns = list(runs)
    from leakk.determinism import cpu_name

    print(f"{cpu_name()}: the first 10 hex digits of each result's sha256")
    print("| operation | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for op in next(iter(runs.values())):
        print(f"| {op} | " + " | ".join(runs[c][op] for c in columns) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "runs": runs}, indent=1) + "\n")
    if recorded is not None:
        differ = differences(recorded["runs"], runs)
        print(f"\nagainst {args.compare} ({recorded.get('cpu', 'an unnamed CPU')}; `native` is this machine's own):")
        for column in differ:
            print(f"- {column}: " + (", ".join(differ[column]) or "every operation bit for bit the same"))
        return 1 if any(differ.values()) else 0
    return 0


def differences(recorded: dict[str, dict[str, str]], runs: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Per column both runs have, the operations whose hashes differ."""
    return {column: [op for op, h in ops.items() if recorded[column].get(op) != h]
            for column, ops in runs.items() if column in recorded}


if __name__ == "__main__":
    sys.exit(main())

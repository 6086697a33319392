"""The same numbers on any x86-64 CPU: pin torch's and MKL's CPU kernels before torch loads.

torch (ATen) picks its vectorised kernels by the CPU's instruction set, and MKL picks its
BLAS code path by instruction set *and* vendor, so one commit and seed give other floats on
an AVX2 machine than on an AVX-512 one, and the difference grows through training. Every
``leakk`` process therefore fixes both before torch is first imported, by environment
variables that torch and MKL read when they load:

``LEAKK_CPU_KERNELS`` (default ``portable``):

- ``portable``: ATen's AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``) and MKL's AVX2 branch in
  strict conditional-numerical-reproducibility mode (``MKL_CBWR=AVX2,STRICT``). Bit-identical
  on every Intel CPU with AVX2, AVX-512 ones included (checked by emulation: see
  ``tests/test_determinism.py``); costs 19% on training and 8% on sampling
  against ``native`` on an AVX-512 Xeon (``benchmarks/cpu_kernels.py``). MKL documents that on
  non-Intel CPUs it then uses its automatic branch, so on AMD CPUs use ``compatible`` for the same
  bits (docs/workflow.md). bf16 autocast on such a CPU is not covered: with ATen pinned to AVX2 on
  an AVX-512 machine, oneDNN's bf16 matrix product fails ("pack_vnni2 is only supported when
  avx512 is supported"), so CPU bf16 runs need ``native``.
- ``compatible``: ATen's AVX2 kernels and MKL's ``COMPATIBLE`` branch (SSE2), which MKL
  documents as identical on Intel and AMD CPUs alike; training takes about twice as long.
  ``scripts/cpu_kernel_probe.py`` names the operations whose bits differ between two machines.
- ``native``: whatever the CPU runs fastest; reproducible on this machine only.

A value the user already set in the environment wins over the mode's. Results also depend
on the number of intra-op threads (reductions split differently), so stages run with a fixed
thread count (1 unless asked). The CLI records the mode in every Parquet artifact's execution
metadata; :func:`describe` reports the kernels actually in use.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

MODES = ("portable", "compatible", "native")
ENV = "LEAKK_CPU_KERNELS"

_SETTINGS = {
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"},
    "compatible": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
    "native": {},
}
#: the variables a mode sets (cleared by a caller that wants a mode, not its own environment, to decide)
MODE_VARIABLES = tuple(sorted({key for settings in _SETTINGS.values() for key in settings}))
#: MKL and OpenMP must not change their thread count on their own (MKL's reproducibility conditions)
_ALWAYS = {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}


def mode() -> str:
    """The requested mode (``LEAKK_CPU_KERNELS``; an unknown value is refused by :func:`apply`)."""
    return os.environ.get(ENV, "portable").strip().lower() or "portable"


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value in /proc/cpuinfo ("flags", "model name"; None off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _has_avx2() -> bool:
    """Whether this CPU runs AVX2 + FMA code (Linux /proc/cpuinfo; False elsewhere, so nothing is pinned)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return {"avx2", "fma"} <= set((_cpuinfo("flags") or "").split())


def apply() -> dict[str, str]:
    """Set the mode's environment variables (those not already set) and return what was set.

    Must run before ``torch`` is imported: torch and MKL read these once, when they load.
    If torch is already loaded the variables are still set (for child processes) and a
    warning says this process keeps the kernels it started with.
    """
    chosen = mode()
    if chosen not in MODES:
        from leakk.core.errors import ParamsError

        raise ParamsError(f"{ENV}={chosen!r}: not a CPU kernel mode (one of {list(MODES)})")
    wanted = dict(_ALWAYS)
    if _has_avx2():
        wanted.update(_SETTINGS[chosen])
    done = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
            done[key] = value
    if done and "torch" in sys.modules and set(done) & {"ATEN_CPU_CAPABILITY", "MKL_CBWR"}:
        logging.getLogger(__name__).warning(
            "torch was imported before leakk: this process keeps its CPU kernels (%s); import leakk first "
            "for reproducible numbers", ", ".join(f"{k}={v}" for k, v in done.items()))
    return done


#: the intra-op thread count this process was asked for (``leakk --threads``), or None
_THREADS: int | None = None


def pin_threads(threads: int) -> None:
    """Fix the intra-op thread count (reductions split by thread round differently) without
    importing torch: a job that never loads torch (a string judge, an estimate) must not pay
    its import. Before torch loads, OpenMP's and MKL's variables set the pool; torch, once
    loaded by :mod:`leakk.models.modeling`, is set explicitly (:func:`apply_threads`)."""
    global _THREADS
    _THREADS = int(threads)
    if "torch" in sys.modules:
        apply_threads(sys.modules["torch"])
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_THREADS)


def apply_threads(torch) -> None:
    """``torch.set_num_threads`` with the pinned count, if one was asked for."""
    if _THREADS:
        torch.set_num_threads(_THREADS)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; the platform's name elsewhere): recorded in every
    artifact, because the floats depend on it (a rerun on another CPU says where it ran)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def describe() -> dict[str, object]:
    """What this process computes with, for artifact metadata (imports torch)."""
    import torch

    return {"cpu_kernels": mode(), "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR"), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}

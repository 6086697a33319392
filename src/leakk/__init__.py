"""leakk: leak@k evaluation and RULE unlearning for LLMs."""

from leakk import determinism as _determinism

__version__ = "0.1.0"

# Before anything imports torch: the same CPU kernels on every x86-64 machine (leakk.determinism).
# An unknown LEAKK_CPU_KERNELS pins nothing here; the CLI then refuses it with one line.
if _determinism.mode() in _determinism.MODES:
    _determinism.apply()

"""The numbers: leak@k and its clustered-bootstrap CIs (``estimate``), the exact lower bound
(``bounds``), Clopper–Pearson guarantees (``guarantees``), Beta-binomial extrapolation
(``extrapolate``), judges against ground truth (``calibrate``) and spread across replicate
seeds (``replicate_stats``). Each takes frames and returns frames; none reads or writes files.

It may import :mod:`leakk.core`, :mod:`leakk.models` and :mod:`leakk.sampling` (the exact
bound runs the sampler's own per-step distribution); nothing above it.
"""

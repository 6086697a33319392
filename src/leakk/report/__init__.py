"""What people read: the figures (``figures``), the report's tables page (``tables``) and the
headless-browser check that the report renders (``check``, ``python -m leakk.report.check``).

It may import :mod:`leakk.core`, :mod:`leakk.stats` and the decoding names of
:mod:`leakk.sampling`; nothing above it.
"""

"""Stage entry functions: each reads its input artifacts, calls the library and writes its
outputs atomically. One function per stage; the ``leakk`` CLI, Snakemake and DVC call them
through :mod:`leakk.workflow`'s stage table.

It may import every library layer below it (core, data, models, sampling, judges, unlearn,
stats, report); never :mod:`leakk.config`, :mod:`leakk.workflow` or the CLI.
"""

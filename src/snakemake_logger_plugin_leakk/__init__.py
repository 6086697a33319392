"""leakk reads every ``snakemake --configfile`` preset before Snakemake does.

Snakemake parses each ``--configfile`` while it reads its own arguments, before the Snakefile
(where leakk validates params) runs: a YAML error in a preset would be Snakemake's "not valid
JSON or YAML" with no line, and an alias bomb would hang it. Snakemake imports every
installed ``snakemake_logger_plugin_*`` package while it builds its argument parser, before
it reads config files; importing this one wraps Snakemake's config-file loader so that
:func:`leakk.config.read_params_file` (UTF-8, valid YAML, no duplicated key, aliases and
nesting within budget) reads each file first, and a failure is leakk's one line with the
line and column. The logger itself (``--logger leakk``) prints Snakemake's messages with API
keys redacted; nothing selects it by default.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from snakemake_interface_logger_plugins.base import LogHandlerBase


class LogHandler(LogHandlerBase):
    """Snakemake's messages on stderr, with every API key leakk knows of redacted."""

    writes_to_stream = True
    writes_to_file = False
    has_filter = False
    has_formatter = False
    needs_rulegraph = False

    def emit(self, record: logging.LogRecord) -> None:
        from leakk.core.checks import redact

        sys.stderr.write(redact(record.getMessage()) + "\n")


def _shown(path) -> str:
    """The path as the user gave it (relative to the working directory where it lies below it)."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def _read_by_leakk_first(load_configfile):
    def load(configpath):
        from leakk.config import read_params_file
        from leakk.core.errors import ParamsError
        from leakk.core.checks import redact

        try:
            read_params_file(_shown(configpath))
        except ParamsError as err:
            sys.exit(f"leakk: error: {redact(str(err))}")
        return load_configfile(configpath)

    load.leakk_reads_first = True
    return load


def _install() -> None:
    try:
        import snakemake.settings.types as settings_types
    except Exception:  # pragma: no cover - another Snakemake layout: leave it as it is
        return
    if not getattr(settings_types.load_configfile, "leakk_reads_first", False):
        settings_types.load_configfile = _read_by_leakk_first(settings_types.load_configfile)


_install()

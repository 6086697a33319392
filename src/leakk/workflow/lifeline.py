"""Stop a stage when the workflow engine that started it dies.

``dvc repro`` killed by SIGTERM exits at once and leaves its running command behind: a
``leakk`` stage that goes on for minutes and then writes an output nobody will record. The
same happens under Snakemake when the job's shell wrapper (or Snakemake itself) is killed.
Under DVC (``DVC_STAGE`` is set) or Snakemake (the first non-shell ancestor is a
``snakemake`` process), :func:`watch_parent_engine` follows the engine and the shells between
from a daemon thread and sends the stage SIGTERM when one is gone; the stage then exits like
on Ctrl-C, and ``leakk.core.io.atomic_path`` removes its unfinished temp files. Run by hand (a
terminal, ``nohup``), a stage is never stopped this way. Linux only: elsewhere it does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

#: processes between the engine and us that stand for a command line, not for the engine
SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh"}
#: processes that adopt orphans (init and the usual subreapers): never a workflow engine
ADOPTERS = {"init", "systemd", "tini", "docker-init", "dumb-init", "catatonit", "s6-svscan", "runit"}


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(command name, parent pid, start time) of ``pid`` from /proc, or None if it is gone
    (an exited process its parent has not reaped yet, a zombie, counts as gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1: raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return name, int(fields[1]), fields[19]  # ppid, starttime (clock ticks since boot)


def ancestors_to_engine(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, start time) of our parent and of every shell above it, up to and including the
    first process that is not a shell (the engine)."""
    chain = []
    pid = os.getppid() if pid is None else pid
    while pid > 1:
        st = _stat(pid)
        if st is None:
            break
        chain.append((pid, st[2]))
        if st[0] not in SHELLS:
            break
        pid = st[1]
    return chain


def engine_gone(chain: list[tuple[int, str]]) -> bool:
    """Whether the walk up from a DVC stage ended at init or at a process that adopts orphans
    instead of at ``dvc``: the engine died before the stage started watching it."""
    if not chain:  # our parent is init
        return True
    top = _stat(chain[-1][0])
    return top is None or top[0] in SHELLS or top[0] in ADOPTERS  # a shell on top: its parent is init


def is_snakemake(pid: int) -> bool:
    """Whether process ``pid`` runs Snakemake (``snakemake …`` or ``python -m snakemake …``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [Path(a.decode(errors="replace")).name for a in argv[:3]]
    return "snakemake" in names[:2] or (len(argv) > 2 and argv[1] == b"-m" and argv[2] == b"snakemake")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def watch_parent_engine(interval: float = 1.0) -> threading.Thread | None:
    """Under DVC or Snakemake, interrupt the main thread once the engine (or a shell between)
    has exited."""
    if not Path("/proc/self/stat").exists():
        return None
    under_dvc = "DVC_STAGE" in os.environ
    chain = ancestors_to_engine()
    if under_dvc and engine_gone(chain):  # dvc died while we were starting: we are already orphaned
        raise KeyboardInterrupt
    if not chain or not (under_dvc or is_snakemake(chain[-1][0])):
        return None
    # DVC starts commands with SIGINT ignored, so the stage is stopped by SIGTERM, turned into
    # KeyboardInterrupt so that the CLI exits as on Ctrl-C (temp files removed, status 130)
    signal.signal(signal.SIGTERM, _interrupt)

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if any((_stat(pid) or (None, None, None))[2] != start for pid, start in chain):
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal also wakes a sleeping main thread
                return

    thread = threading.Thread(target=watch, name="leakk-lifeline", daemon=True)
    thread.start()
    return thread

"""The foundation every other layer stands on: errors, the one registry pattern, artifact I/O
and contracts (``io``), progress bars, and ``layout`` — where every result lives, spelled once.

It imports nothing from leakk outside itself (and no torch), so anything may import it.
"""

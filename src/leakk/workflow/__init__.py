"""Workflow glue: the stage table (``table``) from which the CLI's subcommands, the Snakemake
rules and the whole of dvc.yaml derive, DVC generation (``dvc``) and recording
(``dvc_record``), the replicate-seed runner (``replicates``) and the lifeline that stops a
stage when its engine dies (``lifeline``).

It may import anything in the library; the library never imports it (an import-linter
contract in the test suite says so).
"""

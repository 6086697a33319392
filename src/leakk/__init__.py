"""leakk: leak@k evaluation and RULE unlearning for LLMs."""

__version__ = "0.1.0"

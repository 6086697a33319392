"""Language models: build or load them (``modeling``), turn questions and answers into the one
token encoding every stage shares (``prompting``), the optimiser step that scales from the
miniature to a 7B model (``training``), and fine-tuning the full and retrain models
(``finetune``).

It may import :mod:`leakk.core` and :mod:`leakk.data` (the data contract's training
phrasings); nothing above it.
"""

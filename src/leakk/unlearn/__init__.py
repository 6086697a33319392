"""Unlearning: a method registry (:mod:`.methods`), one training loop (:mod:`.loop`) and
the stage that runs it (:mod:`.run`). Kept import-light so validating params is fast."""

"""Tiny dataset folders laid out like the hub repos (README.md ``configs`` + data files): what
`leakk download` fetches, built without any network. The builders live in the package
(:mod:`leakk.models.demo`), shared with `leakk demo tofu`."""

from leakk.models.demo import muse_repo, tofu_repo, wmdp_repo

__all__ = ["muse_repo", "tofu_repo", "wmdp_repo"]

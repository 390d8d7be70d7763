"""The operators of the jax backend: each family's functions under the names of ``backends.signatures.OPS``."""

from backends.signatures import collect

_OPS = collect(__package__)
globals().update(_OPS)
__all__ = sorted(_OPS)

"""The JAX backend (imported only through ``backends.get('jax')``); turns on 64-bit mode."""

from ._backend import BACKEND, JaxBackend

__all__ = ["BACKEND", "JaxBackend"]

"""The PyTorch backend (imported only through ``backends.get('torch')``)."""

from ._backend import BACKEND, TorchBackend

__all__ = ["BACKEND", "TorchBackend"]

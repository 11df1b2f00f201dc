"""Stores: the :class:`Store` protocol and the in-memory :class:`MemoryStore`."""

from .base import Artifact, ArtifactRef, Store
from .memory import MemoryStore

__all__ = ["Artifact", "ArtifactRef", "MemoryStore", "Store"]

"""Message buses: the :class:`Bus` protocol, the in-process :class:`MemoryBus`."""

from .base import Bus, Delivery, Subscription
from .memory import MemoryBus

__all__ = ["Bus", "Delivery", "MemoryBus", "Subscription"]

"""The coordinator: scheduling (pure), the runtime that carries it out, coordinator functions."""

from .core import Coordinator
from .functions import FunctionContext, coordinator_function

__all__ = ["Coordinator", "FunctionContext", "coordinator_function"]

"""The names a graph may use for its steps, each with the pydantic model of its arguments.

Two registries, one per kind of named step:

- :data:`INPUT_ADAPTERS`: ``io.input_inline.input_adapter`` → the model of ``input_args``;
- :data:`COORDINATOR_FUNCTIONS`: ``io.fn`` → the model of ``fn_args`` (None: any mapping).

Graph validation checks names and arguments against these registries only, so the graph
model depends on neither the worker nor the coordinator. Those hold the implementations
and register them here: ``flowkit.worker.adapters.ADAPTERS`` and
``flowkit.coordinator.functions.FUNCTIONS`` are :class:`ImplementationTable` s bound to
these registries, and :func:`flowkit.coordinator_function` adds to the latter.

The argument models of the built-ins are defined in this module rather than next to
their implementations: they are part of the graph language (what a graph file may
say), not of running it. So validation knows the built-ins as soon as ``flowkit.graph``
is imported, with no lazy import of the worker or the coordinator, no import-order
rule and no registration side effect to trigger first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails


class ArgsRegistry:
    """Names of one kind of graph step, each with the model of its arguments.

    ``args_model`` None accepts any mapping (a user function that validates its own).
    """

    def __init__(self, kind: str, describe: Callable[[ErrorDetails], str]) -> None:
        self.kind = kind
        self._describe = describe
        self._models: dict[str, type[BaseModel] | None] = {}

    def register(self, name: str, args_model: type[BaseModel] | None) -> None:
        """Make ``name`` valid in graphs; registering a name again replaces its model."""
        self._models[name] = args_model

    def unregister(self, name: str) -> None:
        """Forget ``name``; graphs that use it are rejected again. Unknown names are ignored."""
        self._models.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        return sorted(self._models)

    def check(self, name: str, args: dict[str, Any]) -> str | None:
        """None if ``args`` suit ``name``; else what is wrong. KeyError naming the known ones if unknown."""
        if name not in self._models:
            raise KeyError(f"unknown {self.kind} '{name}' (known: {', '.join(self.names())})")
        model = self._models[name]
        if model is None:
            return None
        try:
            model.model_validate(args)
        except ValidationError as exc:
            return "; ".join(self._describe(err) for err in exc.errors())
        return None


class _HasArgsModel(Protocol):
    @property
    def args_model(self) -> type[BaseModel] | None: ...


Impl = TypeVar("Impl", bound=_HasArgsModel)


class ImplementationTable(MutableMapping[str, Impl]):
    """name → implementation, kept in step with an :class:`ArgsRegistry`.

    Adding an entry registers its name and ``args_model``, removing one unregisters the
    name, so graph validation accepts exactly the steps that can run, whichever of the
    two a caller changes (tests remove what they registered with ``table.pop(name)``).
    """

    def __init__(self, registry: ArgsRegistry, entries: Mapping[str, Impl] | None = None) -> None:
        self._registry = registry
        self._entries: dict[str, Impl] = {}
        self.update(entries or {})

    def __getitem__(self, name: str) -> Impl:
        return self._entries[name]

    def __setitem__(self, name: str, impl: Impl) -> None:
        self._entries[name] = impl
        self._registry.register(name, impl.args_model)

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._registry.unregister(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _field(err: ErrorDetails, default: str) -> str:
    return ".".join(str(p) for p in err["loc"]) or default


def _describe_adapter_error(err: ErrorDetails) -> str:
    field = _field(err, "input_args")
    if err["type"] == "missing":
        return f"{field} is required"
    if err["type"] == "extra_forbidden":
        return f"{field} is not an argument of this adapter"
    return f"{field}: {err['msg']} (got {err.get('input')!r})"


def _describe_function_error(err: ErrorDetails) -> str:
    return f"{_field(err, 'fn_args')}: {err['msg']}"


INPUT_ADAPTERS = ArgsRegistry("input adapter", _describe_adapter_error)
"""``io.input_inline.input_adapter`` names → the model of ``input_args``."""

COORDINATOR_FUNCTIONS = ArgsRegistry("coordinator function", _describe_function_error)
"""``io.fn`` names of ``coordinator_fn`` nodes → the model of ``fn_args``."""


# --- arguments of the built-in input adapters ----------------------------------------


class FromArtifactsArgs(BaseModel):
    """``pull.from_artifacts``: read the artifacts of ``from_nodes`` (alias ``from_node``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_nodes: list[str] = Field(min_length=1)
    poll_ms: int | None = Field(default=None, gt=0)
    eof_on_task_done: bool = True

    @model_validator(mode="before")
    @classmethod
    def _single_node_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "from_node" in data:
            data = dict(data)
            single = data.pop("from_node")
            if "from_nodes" in data:
                raise ValueError("give from_nodes or from_node, not both")
            data["from_nodes"] = [single] if isinstance(single, str) else single
        return data


class RechunkArgs(FromArtifactsArgs):
    """``pull.from_artifacts.rechunk:size``: as above, regrouped into ``size`` items a batch."""

    size: int = Field(gt=0)
    meta_list_key: str | None = None


INPUT_ADAPTERS.register("pull.from_artifacts", FromArtifactsArgs)
INPUT_ADAPTERS.register("pull.from_artifacts.rechunk:size", RechunkArgs)


# --- arguments of the built-in coordinator functions -----------------------------------


class Target(BaseModel):
    """Where a built-in function writes its result: ``result[key]`` of the task."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)


class FromNodesArgs(BaseModel):
    """``merge.generic`` and ``metrics.aggregate``: which nodes to read, where the result goes."""

    model_config = ConfigDict(extra="forbid")

    from_nodes: list[str] | None = None
    target: Target | None = None

    @model_validator(mode="before")
    @classmethod
    def _single_node_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "from_node" in data:
            data = {**data, "from_nodes": [data["from_node"]]}
            del data["from_node"]
        return data


COORDINATOR_FUNCTIONS.register("merge.generic", FromNodesArgs)
COORDINATOR_FUNCTIONS.register("metrics.aggregate", FromNodesArgs)

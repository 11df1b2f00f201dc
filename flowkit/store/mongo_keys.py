"""Keys MongoDB refuses (containing ``.``, starting with ``$``), percent-encoded.

Every mapping MongoStore stores has its keys encoded and decoded on read, so any node
id, metric name or user key round-trips.
"""

from __future__ import annotations

from typing import Any


def encode_key(key: str) -> str:
    """``%`` → ``%25``, ``.`` → ``%2E``, a leading ``$`` → ``%24``: a key MongoDB accepts."""
    key = key.replace("%", "%25").replace(".", "%2E")
    return "%24" + key[1:] if key.startswith("$") else key


def decode_key(key: str) -> str:
    if "%" not in key:
        return key
    return key.replace("%24", "$").replace("%2E", ".").replace("%25", "%")


def encode_keys(value: Any) -> Any:
    """A copy of ``value`` (JSON-like) with every mapping key encoded."""
    if isinstance(value, dict):
        return {encode_key(str(k)): encode_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_keys(v) for v in value]
    return value


def decode_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {decode_key(k): decode_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_keys(v) for v in value]
    return value


def encode_path(path: tuple[str, ...]) -> str:
    """A dotted ``$set`` path with each segment encoded: ``("run", "$x")`` → ``run.%24x``."""
    return ".".join(encode_key(name) for name in path)

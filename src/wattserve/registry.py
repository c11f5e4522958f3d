"""Named, pluggable things (GPUs, models, routers, transports, controllers, governors, scenarios).

One registry type is the single source of a kind's allowed names: the schema validates against it,
the CLI's `choices` and help come from it, and an unknown name is one UsageError naming the field
and the allowed values. An entry is a factory, or a "module:attribute" string imported only when the
entry is made, so that listing the names of, say, the KV transports does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from wattserve.errors import UsageError

T = TypeVar("T")


class Registry(Mapping[str, Callable[..., T]], Generic[T]):
    """A read-only mapping name -> factory, in declaration order, with aliases for lookup."""

    def __init__(self, field: str, entries: Mapping[str, Callable[..., T] | str],
                 aliases: Mapping[str, str] | None = None, case_sensitive: bool = True) -> None:
        self.field = field
        self._entries = dict(entries)
        self._aliases = dict(aliases or {})
        self._case_sensitive = case_sensitive

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def resolve(self, name: str) -> str:
        """The canonical name for `name` (aliases and, where asked, case folded), or a UsageError."""
        key = name if self._case_sensitive or not isinstance(name, str) else name.lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise self.unknown(name)
        return key

    def unknown(self, name: object) -> UsageError:
        return UsageError(f"unknown value {name!r}; allowed: {', '.join(self.names())}", self.field)

    def make(self, name: str, **params: Any) -> T:
        return self[self.resolve(name)](**params)

    def __getitem__(self, name: str) -> Callable[..., T]:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            return getattr(importlib.import_module(module), attr)
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

"""Name-to-object tables: one :class:`Registry` per family of things a name selects.

A registry maps each name (``"il"``, ``"mlp"``, ...) to an :class:`Entry`: what the name
builds (a class or factory, for the docs), a function that builds it, and flags that
describe it.  Whatever lists the names (the command line's choices, the config's
validation, the error messages, the docs tables) reads them from the registry, so a name
added to the registry shows up everywhere and a name missing from it is unknown everywhere.

The families: energies (:data:`predcode.energy.ENERGIES`) and inference solvers
(:data:`predcode.inference.SOLVERS`) sit next to their classes; the
learning rules and models the ``predcode train`` command builds from its configuration are
:data:`predcode.app.registry.RULES` and :data:`predcode.app.registry.MODELS`; the claim
reproductions are :data:`predcode.experiments.EXPERIMENTS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .exceptions import OptionError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One name of a registry: ``build(*args)`` makes the object, ``builds`` is the class or
    factory it comes from (the docs name it and quote its docstring's first line), ``tags``
    are the entry's properties that other code asks about (``"flat-inputs"``, ...)."""

    name: str
    build: Callable[..., T]
    builds: Any
    tags: frozenset[str] = field(default_factory=frozenset)


class Registry(Mapping[str, Entry[T]]):
    """An ordered, read-only-once-filled mapping ``name -> Entry``.

    ``family`` names the kind of thing in messages (``"rule"`` gives ``unknown rule 'x';
    choose one of [...]``)."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, builds: Any, *tags: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register the decorated function as the builder of ``name``."""

        def add(build: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.family} '{name}' is registered twice")
            self._entries[name] = Entry(name, build, builds, frozenset(tags))
            return build

        return add

    def add(self, name: str, builds: Callable[..., T], *tags: str) -> None:
        """Register a class (or factory) ``builds`` under ``name``; building calls it."""
        self.register(name, builds, *tags)(builds)

    def __getitem__(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise OptionError(f"unknown {self.family} '{name}'; choose one of {list(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: Any = None) -> Any:
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """Every name, in registration order (the order of choices and docs rows)."""
        return tuple(self._entries)

    def tagged(self, tag: str) -> tuple[str, ...]:
        """The names whose entry carries ``tag``."""
        return tuple(name for name, entry in self._entries.items() if tag in entry.tags)

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Build ``name``'s object: ``self[name].build(*args, **kwargs)``."""
        return self[name].build(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {list(self._entries)})"

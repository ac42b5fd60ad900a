"""`Registry`: the named things of one kind (networks, autoencoders, prior families) that a
decorator registers beside their class and the rest of the code looks up by name."""

from __future__ import annotations


class Registry:
    """{name: item} in registration order. `kind` names it in errors ("network"); `argument` is
    what a user gives the name as ("network", "model", "prior family")."""

    def __init__(self, kind: str, argument: str | None = None):
        self.kind = kind
        self.argument = argument or kind
        self._items: dict = {}

    def add(self, name: str, item) -> None:
        """Registers `item` as `name`; the same item again is a no-op, another one a ValueError."""
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"A {self.kind} named {name!r} is registered already ({_describe(self._items[name])}).")
        self._items[name] = item

    def names(self) -> tuple:
        return tuple(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def get(self, name: str):
        """The item registered as `name`; a ValueError lists the names there are."""
        if name not in self._items:
            raise ValueError(f"{self.argument} must be one of {', '.join(map(repr, self._items))}, got {name!r}.")
        return self._items[name]


def _describe(item) -> str:
    cls = item if isinstance(item, type) else type(item)
    return cls.__qualname__

"""A name -> function registry with help text, for the pieces users extend by adding one function
(weight schemes, interpretable cues, synthetic cues). Unknown names raise an error listing the valid ones."""

from __future__ import annotations

from typing import Callable, TypeVar

from audit.errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(dict):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.help: dict[str, str] = {}

    def register(self, name: str, help: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self[name] = fn
            self.help[name] = help
            return fn
        return deco

    def get_or_raise(self, name: str) -> Callable:
        if name not in self:
            raise ConfigError(f"unknown {self.kind} `{name}`; valid: {', '.join(self)}")
        return self[name]

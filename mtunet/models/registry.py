"""``Registry``: named entries of one kind (encoders, skip modules, decoders, heads, presets).

An entry registers itself where it is defined (``@DECODERS.register("unet")``); ``get`` raises a ``ConfigError`` that
lists the valid names, so a misspelt option names its choices.
"""

from collections.abc import Iterator, MutableMapping

from mtunet.errors import ConfigError


class Registry(MutableMapping):
    """Entries of one ``kind`` by name, in the order they were registered; read (and, e.g. for a test's temporary
    entry, written) like a ``dict``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, object] = {}

    def register(self, name: str, entry=None):
        """Registers ``entry`` under ``name``; without ``entry``, returns a decorator that registers what it wraps."""
        if entry is None:
            return lambda wrapped: self.register(name, wrapped)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str, *default):
        """The entry named ``name``; if there is none, ``default`` when given (as ``dict.get``), else ``ConfigError``
        listing the valid names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default:
                return default[0]
            raise ConfigError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self._entries)}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str):
        return self._entries[name]

    def __setitem__(self, name: str, entry):
        self._entries[name] = entry

    def __delitem__(self, name: str):
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

"""Read-only containers: the config as captured functions see it (Sacred's ``custom_containers``).

With ``SETTINGS.CONFIG.READ_ONLY_CONFIG`` (on by default, as in Sacred) every dict and list of
the config a captured function receives is a :class:`ReadOnlyDict` or :class:`ReadOnlyList`:
changing it raises :class:`~prefect_sacred.utils.SacredError`, so a run's recorded config is the
config it ran with. A copy (``copy.copy``, ``copy.deepcopy``, ``dict(...)``) is an ordinary,
mutable container.
"""

from __future__ import annotations

import copy
from typing import Any, NoReturn

from prefect_sacred.utils import SacredError

__all__ = ["ReadOnlyDict", "ReadOnlyList", "make_read_only"]

_MESSAGE = "The configuration is read-only in a captured function!"


class ReadOnlyContainer:
    """What both read-only containers share: every mutation raises, copies are plain."""

    #: Records store the plain container (see :mod:`prefect_sacred.serialization`).
    __recorded_plain__ = True

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise SacredError(_MESSAGE)

    def __reduce__(self) -> tuple[Any, ...]:  # pickles (and jsonpickles) as the plain container
        plain = copy.copy(self)
        return type(plain), (plain,)


class ReadOnlyDict(ReadOnlyContainer, dict):  # type: ignore[type-arg]
    """A ``dict`` that raises :class:`SacredError` on any change."""

    clear = ReadOnlyContainer._readonly
    pop = ReadOnlyContainer._readonly
    popitem = ReadOnlyContainer._readonly
    setdefault = ReadOnlyContainer._readonly
    update = ReadOnlyContainer._readonly
    __setitem__ = ReadOnlyContainer._readonly
    __delitem__ = ReadOnlyContainer._readonly
    __ior__ = ReadOnlyContainer._readonly

    def __copy__(self) -> dict[Any, Any]:
        return {**self}

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return copy.deepcopy(dict(self), memo)


class ReadOnlyList(ReadOnlyContainer, list):  # type: ignore[type-arg]
    """A ``list`` that raises :class:`SacredError` on any change."""

    append = ReadOnlyContainer._readonly
    clear = ReadOnlyContainer._readonly
    extend = ReadOnlyContainer._readonly
    insert = ReadOnlyContainer._readonly
    pop = ReadOnlyContainer._readonly
    remove = ReadOnlyContainer._readonly
    reverse = ReadOnlyContainer._readonly
    sort = ReadOnlyContainer._readonly
    __setitem__ = ReadOnlyContainer._readonly
    __delitem__ = ReadOnlyContainer._readonly
    __iadd__ = ReadOnlyContainer._readonly
    __imul__ = ReadOnlyContainer._readonly

    def __copy__(self) -> list[Any]:
        return [*self]

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list(self), memo)


def make_read_only(value: Any) -> Any:
    """``value`` with every nested ``dict`` and ``list`` (in dicts, lists and tuples) read-only.

    ``value`` itself is left as it is: the result is a new structure.
    """
    if type(value) is dict:
        return ReadOnlyDict({key: make_read_only(item) for key, item in value.items()})
    if type(value) is list:
        return ReadOnlyList([make_read_only(item) for item in value])
    if type(value) is tuple:
        return tuple(make_read_only(item) for item in value)
    return value

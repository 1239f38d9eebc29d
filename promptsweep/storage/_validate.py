"""Argument checks shared by the :class:`~promptsweep.storage.Storage` methods.

Both backends must accept the same input, so these refuse up front (with a ``ValueError`` naming
the argument) what PostgreSQL would refuse at write time: ids beyond ``integer``, text longer than
its column or holding a NUL character, values JSON cannot write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from promptsweep.storage._records import json_safe

#: The largest id, trial number or step the INTEGER columns hold (PostgreSQL ``integer``).
MAX_INT = 2**31 - 1


def check_id(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer in ``0..MAX_INT``; else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ValueError(f"{name} must be a non-negative integer (at most {MAX_INT}), got {value!r}")
    return value


def check_text(column: Any, name: str, value: str | None) -> str | None:
    """Refuse text that PostgreSQL would refuse (longer than its column, or with a NUL character), so
    that both backends accept the same input and the error names the field."""
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters (\\x00), got {value[:80]!r}")
    length = getattr(column.type, "length", None)
    if length is not None and len(value) > length:
        raise ValueError(f"{name} must be at most {length} characters, got {len(value)}: {value[:80]!r}…")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def json_field(name: str, value: Any, *, finite_only: bool = False) -> Any:
    """A JSON copy of ``value`` as both backends store it (tuples → lists, keys → strings).

    Non-finite numbers become ``None`` and NumPy scalars plain numbers (:func:`json_safe`); with
    ``finite_only`` the value is taken as is, so non-finite numbers are refused.

    Raises:
        ValueError: a value JSON cannot write (e.g. a ``Path`` or a set), a non-finite number with
            ``finite_only``, or a NUL character (PostgreSQL refuses it) - naming the field.
    """
    clean = value if finite_only else json_safe(value)
    try:
        text = json.dumps(clean, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable (finite numbers, str keys): {exc}") from None
    if _has_nul(clean):
        raise ValueError(f"{name} must not contain NUL characters (\\x00): PostgreSQL cannot store them")
    return json.loads(text)


def enum_value(kind: type[Any], name: str, value: Any) -> Any:
    """``kind(value)``, or a ``ValueError`` naming ``name`` and the allowed values."""
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {[m.value for m in kind]}, got {value!r}") from None

"""Typed access to a parsed TOML mapping, with errors that name the file, the key and the value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from linetwin.api.opcua_errors import OpcUaMappingError


class TomlReader:
    """Typed access to TOML values with errors that name the file, the key and the value.

    Each accessor takes the table, the key's full dotted path (for messages) and, where the
    path's last part is not the name inside the table (station names may hold dots), `name`.
    """

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def err(self, key: str, value: Any, problem: str) -> OpcUaMappingError:
        shown = "" if value is None else f" = {value!r}"
        return OpcUaMappingError(f"{self.source}: key {key!r}{shown}: {problem}")

    def keys(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for k in table:
            if k not in allowed:
                name = f"{where}.{k}" if where else k
                raise self.err(name, None, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    @staticmethod
    def _get(table: Mapping[str, Any], key: str, name: str | None) -> Any:
        return table.get(name if name is not None else key.rsplit(".", 1)[-1])

    def table(
        self, data: Mapping[str, Any], key: str, *, required: bool = False, name: str | None = None
    ) -> Mapping[str, Any]:
        value = self._get(data, key, name)
        if value is None:
            if required:
                raise self.err(key, None, "missing (a table is required here)")
            return {}
        if not isinstance(value, Mapping):
            raise self.err(key, value, "expected a table")
        return value

    def string(
        self, data: Mapping[str, Any], key: str, *, default: Any = ..., name: str | None = None
    ) -> Any:
        value = self._get(data, key, name)
        if value is None:
            if default is ...:
                raise self.err(key, None, "missing (a string is required here)")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.err(key, value, "expected a non-empty string")
        return value.strip()

    def choice(
        self, data: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str
    ) -> str:
        value = self.string(data, key, default=default)
        if value not in allowed:
            raise self.err(key, value, f"expected one of {', '.join(map(repr, allowed))}")
        return str(value)

    def number(self, data: Mapping[str, Any], key: str, default: float) -> float:
        value = self._get(data, key, None)
        if value is None:
            return float(default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.err(key, value, "expected a finite number")
        return float(value)

    def positive(self, data: Mapping[str, Any], key: str, default: float) -> float:
        value = self.number(data, key, default)
        if value <= 0:
            raise self.err(key, value, "expected a positive number of seconds")
        return value

    def datetime(self, data: Mapping[str, Any], key: str, default: datetime) -> datetime:
        value = self._get(data, key, None)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError as exc:
                raise self.err(key, value, "expected an ISO 8601 date-time") from exc
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise self.err(
                key, value, "expected a date-time with a UTC offset, e.g. 2026-01-01T00:00:00Z"
            )
        return value.astimezone(UTC)

    def path(self, data: Mapping[str, Any], key: str) -> Path | None:
        value = self.string(data, key, default=None)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def node_id(self, data: Mapping[str, Any], key: str, name: str | None = None) -> str:
        value = self.string(data, key, name=name)
        if not _NODE_ID.match(value):
            raise self.err(
                key,
                value,
                "expected an OPC UA node id such as 'ns=2;s=press.speed' or 'ns=3;i=1042'",
            )
        return str(value)


_NODE_ID = re.compile(r"^(ns=\d+;)?(i=\d+|s=.+|g=[0-9A-Fa-f-]{36}|b=[A-Za-z0-9+/=]+)$")

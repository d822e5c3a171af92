"""API keys and roles.

A key is `lt_` + 32 random bytes (urlsafe base64), shown once when created. Only its sha256 is
stored: the keys are 256-bit random secrets, not passwords, so a slow KDF (bcrypt, argon2)
would add nothing against guessing and cost every request; a fast hash still keeps a stolen
database from yielding usable keys. A key's public id is its first 11 characters (`lt_` and 8
random ones, 48 of its 256 bits), so a holder can tell which listed key is theirs; the other
208 bits stay secret. Creating and revoking keys writes an audit record in the same
transaction; keys are revoked, never deleted.

Roles are explicit permission sets rather than a ladder: a `controller` acknowledges what the
plant applied, which no human role does (so per-client acknowledgement tracking cannot be
spoofed by an engineer's key), and an `admin` can do what an `engineer` can, plus keys and
plant data. A `gateway` is the plant's data gateway in external mode: it sends plant data
(`POST /v1/plant/snapshots`), and, as a control system's, reads and acknowledges setpoints.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from linetwin.api.audit import AuditLog
from linetwin.api.errors import UsageError
from linetwin.api.storage import ConflictError, NotFoundError, Storage, StorageValueError
from linetwin.api.text import check_text

KEY_PREFIX = "lt_"
KEY_ID_LENGTH = len(KEY_PREFIX) + 8
KEY_LENGTH = len(KEY_PREFIX) + 43  # token_urlsafe(32): 43 characters
_NO_HASH = "0" * 64  # compared against when no key has the id, so timing does not tell


class Role(StrEnum):
    """Who holds a key."""

    VIEWER = "viewer"
    CONTROLLER = "controller"
    GATEWAY = "gateway"
    ENGINEER = "engineer"
    ADMIN = "admin"


class Permission(StrEnum):
    """What a request needs."""

    READ = "read"  # line, state, setpoints, KPIs, decision history, audit log
    ACKNOWLEDGE = "acknowledge"  # report the setpoints a control system applied
    MODE = "mode"  # change the controller's mode
    APPROVE = "approve"  # approve or reject a pending advisory decision
    OVERRIDE = "override"  # manual setpoint overrides
    ROLLBACK = "rollback"  # republish an earlier decision
    OBJECTIVE = "objective"  # change objective weights and caps
    WHAT_IF = "what_if"  # evaluate candidate setpoints (surrogate and forked twins)
    KEYS = "keys"  # create, list and revoke API keys
    PLANT_DATA = "plant_data"  # send the plant's measured rows (external mode)


_ENGINEER = frozenset(
    {
        Permission.READ,
        Permission.MODE,
        Permission.APPROVE,
        Permission.OVERRIDE,
        Permission.ROLLBACK,
        Permission.OBJECTIVE,
        Permission.WHAT_IF,
    }
)
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.CONTROLLER: frozenset({Permission.READ, Permission.ACKNOWLEDGE}),
    Role.ENGINEER: _ENGINEER,
    Role.GATEWAY: frozenset({Permission.READ, Permission.ACKNOWLEDGE, Permission.PLANT_DATA}),
    Role.ADMIN: _ENGINEER | {Permission.KEYS, Permission.PLANT_DATA},
}


def parse_role(role: Role | str) -> Role:
    """Return `role` as a `Role`; an unknown name raises `UsageError` listing the roles."""
    try:
        return Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise UsageError(f"unknown role {role!r} (roles: {roles})") from None


def allows(role: Role | str, required: Permission | Role | str) -> bool:
    """Whether `role` may do `required`: a permission, or everything another role may do."""
    have = PERMISSIONS[parse_role(role)]
    if isinstance(required, Permission):
        return required in have
    if isinstance(required, Role):
        return PERMISSIONS[required] <= have
    if required in {p.value for p in Permission}:
        return Permission(required) in have
    return PERMISSIONS[parse_role(required)] <= have


def hash_key(key: str) -> str:
    """Return the stored form of a key: sha256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, as listed: never its secret. Times in s since the epoch."""

    key_id: str
    role: Role
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "role": str(self.role),
            "label": self.label,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
        }


@dataclass(frozen=True)
class NewKey:
    """A key just created: `key` is its plaintext, available only now."""

    key: str = field(repr=False)
    info: KeyInfo


class KeyStore:
    """Create, authenticate, revoke and list the API keys of `storage`."""

    def __init__(self, storage: Storage, cache_size: int = 1024) -> None:
        self.storage = storage
        self.audit = AuditLog(storage)
        self.cache_size = cache_size
        # key -> (data version it was read at, (key id, role)); see `authenticate`.
        self._cache: dict[str, tuple[int, tuple[str, Role]]] = {}
        self._active: dict[str, tuple[int, bool]] = {}  # key id -> (data version, active)

    def create(self, role: Role | str, label: str = "", *, actor: str, reason: str = "") -> NewKey:
        """Create a key for `role`; return it with its plaintext, which is not stored."""
        role = parse_role(role)
        if not isinstance(label, str) or len(label) > 200:
            raise StorageValueError("key label: expected printable text of at most 200 chars")
        try:
            check_text(label, "key label")
        except ValueError as exc:
            raise StorageValueError(str(exc)) from None
        for _ in range(5):  # a clash of 48-bit ids is rare; draw again if it happens
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            info = KeyInfo(key[:KEY_ID_LENGTH], role, label, self.storage.clock(), None)
            try:
                with self.storage.write("create api key") as con:
                    con.execute(
                        "INSERT INTO api_keys (key_id, hash, role, label, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (info.key_id, hash_key(key), str(role), label, info.created_at),
                    )
                    new = {"key_id": info.key_id, "role": str(role), "label": label}
                    self.audit.append(actor, "key.create", new=new, reason=reason)
            except ConflictError:
                continue
            return NewKey(key, info)
        raise ConflictError(f"{self.storage.path}: could not draw an unused key id")

    def authenticate(self, key: str) -> tuple[str, Role] | None:
        """Return (key id, role) of an active key, or None (unknown, malformed or revoked).

        An accepted key is remembered with the database's data version it was read at and
        reused only while that version is current: any commit, from this process or another
        (`linetwin keys revoke`), invalidates it, so a revoked key stops working at once.
        """
        if not isinstance(key, str) or len(key) != KEY_LENGTH or not key.startswith(KEY_PREFIX):
            return None
        version = self.storage.data_version()  # read before the lookup: see the docstring
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        found = self._lookup(key)
        if found is not None:
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[key] = (version, found)
        return found

    def is_active(self, key_id: str) -> bool:
        """Whether key `key_id` exists and is not revoked (a long-lived request asks again
        every few seconds). Cached like `authenticate`: reused while the data version holds."""
        version = self.storage.data_version()
        hit = self._active.get(key_id)
        if hit is not None and hit[0] == version:
            return hit[1]
        info = self.get(key_id)
        active = info is not None and info.active
        if len(self._active) >= self.cache_size:
            self._active.clear()
        self._active[key_id] = (version, active)
        return active

    def _lookup(self, key: str) -> tuple[str, Role] | None:
        with self.storage.read("authenticate api key") as con:
            row = con.execute(
                "SELECT hash, role, revoked_at FROM api_keys WHERE key_id = ?",
                (key[:KEY_ID_LENGTH],),
            ).fetchone()
        match = hmac.compare_digest(hash_key(key), _NO_HASH if row is None else str(row[0]))
        if row is None or not match or row[2] is not None:
            return None
        return key[:KEY_ID_LENGTH], Role(row[1])

    def revoke(self, key_id: str, *, actor: str, reason: str = "") -> KeyInfo:
        """Revoke key `key_id` (it stops authenticating at once); return it as revoked."""
        with self.storage.write("revoke api key") as con:
            row = con.execute(
                "SELECT key_id, role, label, created_at, revoked_at FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.storage.path}: no api key {key_id!r}")
            old = _info(row)
            if not old.active:
                raise ConflictError(f"{self.storage.path}: api key {key_id!r} is already revoked")
            now = self.storage.clock()
            con.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (now, key_id))
            self.audit.append(
                actor,
                "key.revoke",
                old=old.as_dict(),
                new={**old.as_dict(), "revoked_at": now, "active": False},
                reason=reason,
            )
        return KeyInfo(old.key_id, old.role, old.label, old.created_at, now)

    def get(self, key_id: str) -> KeyInfo | None:
        """Return key `key_id`, or None."""
        with self.storage.read("read api key") as con:
            row = con.execute(
                "SELECT key_id, role, label, created_at, revoked_at FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else _info(row)

    def list(self) -> builtins.list[KeyInfo]:
        """Return every key, revoked ones too, oldest first."""
        with self.storage.read("list api keys") as con:
            rows = con.execute(
                "SELECT key_id, role, label, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at, key_id"
            ).fetchall()
        return [_info(r) for r in rows]


def _info(row: tuple[Any, ...]) -> KeyInfo:
    key_id, role, label, created_at, revoked_at = row
    return KeyInfo(key_id, Role(role), label, created_at, revoked_at)

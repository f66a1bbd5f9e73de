"""Who is asking, and what they may see and do: identity and scopes for the command-centre API.

Every request carries a bearer token; an :class:`Authenticator` turns it into a
:class:`Principal` or refuses with :class:`AuthError` 401. The principal then
answers every question the API and the console ask before showing an alert,
taking an action or showing a district's vital signs. :class:`TokenBook` is the
authenticator built from ``config/roles.yaml`` (:func:`load_roles`); an OIDC
verifier can take its place behind the same protocol.

===========  ==============================================  =================================
role         sees                                            may
===========  ==============================================  =================================
operator     every alert; full history; the audit trail      every action
department   alerts its department owns (``department``)     every action on them (reroute
             or co-handles (``co_departments``), or that     only on those it owns); list
             were dispatched to it (a ``dispatch`` action    their history; its categories'
             naming the department)                          appeal feedback
area         alerts in its districts, or on its streets      acknowledge, note, dispatch,
                                                             resolve, false_positive,
                                                             silence; list their history
responder    open alerts owned by or dispatched to its       acknowledge, field_report; no
             department, in its districts if it has any      history, no audit trail
open         no alerts; aggregates of indicators shared      nothing
             ``open``, a domain index only if all the
             domain's indicators are ``open``, the
             composite only if every domain is visible
===========  ==============================================  =================================

"Open" for a responder means the alert's status is not ``resolved`` and its
workflow is neither ``resolved`` nor ``false_positive``. Only the hash
``sha256:<hex>`` of a token is ever stored; tokens are compared with
:func:`hmac.compare_digest`, and a token is revoked by removing its entry. A bad
roster stops start-up with a :class:`~streams.core.config.ConfigError`, e.g.::

    config/roles.yaml:49: users[1] (traffic.desk).department: unknown department 'transport'; known: ['command_centre', ...]
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol, runtime_checkable

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.core.config import (
    Catalogue,
    CityConfig,
    Code,
    ConfigError,
    Sharing,
    _Strict,
    format_path,
    load_model,
    nearest_line,
)
from streams.core.messages import AlertActionType, AlertEvent, AlertStatus, Workflow

TOKEN_PREFIX = "cv_"
HASH_PREFIX = "sha256:"
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_TOKEN = 512  # longer "tokens" are refused without hashing them


class Role(StrEnum):
    """What a user is to the command centre; decides what it sees and may do."""

    OPERATOR = "operator"  # command-centre operator: the whole city
    DEPARTMENT = "department"  # a department's desk: its own alerts
    AREA = "area"  # a district or street office: alerts in its area
    RESPONDER = "responder"  # a department's field unit: open alerts routed to it
    OPEN = "open"  # the public view: open aggregates only, never an alert


_ALL_ACTIONS = frozenset(AlertActionType) - {AlertActionType.ESCALATE}  # escalation: system only
ROLE_ACTIONS: Mapping[Role, frozenset[AlertActionType]] = {
    Role.OPERATOR: _ALL_ACTIONS,
    Role.DEPARTMENT: _ALL_ACTIONS,
    Role.AREA: _ALL_ACTIONS - {AlertActionType.FIELD_REPORT, AlertActionType.REROUTE},
    Role.RESPONDER: frozenset({AlertActionType.ACKNOWLEDGE, AlertActionType.FIELD_REPORT}),
    Role.OPEN: frozenset(),
}
_CLOSED_WORKFLOWS = frozenset({Workflow.RESOLVED, Workflow.FALSE_POSITIVE})


class AuthError(Exception):
    """A refused request: 401 (who are you?) or 403 (you may not), with the reason.

    ``str(error)`` is ready to return to the client, e.g.
    ``401: token expired at 2026-11-20T10:00:00Z``.
    """

    def __init__(self, status: Literal[401, 403], reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


def _role_problems(
    role: Role, department: str | None, districts: Iterable[str], streets: Iterable[str]
) -> list[tuple[str, str]]:
    """What is wrong with this combination of role and scope: (field, reason) pairs."""
    has_districts, has_streets = bool(list(districts)), bool(list(streets))
    out: list[tuple[str, str]] = []
    if role in (Role.DEPARTMENT, Role.RESPONDER):
        if department is None:
            out.append(("department", f"role {role} needs a department"))
    elif department is not None:
        why = {
            Role.OPERATOR: "it sees every department's alerts",
            Role.AREA: "it sees alerts by place, whoever owns them",
            Role.OPEN: "it sees no alerts",
        }[role]
        out.append(("department", f"role {role} takes no department: {why}"))
    if role is Role.AREA and not has_districts and not has_streets:
        out.append(("districts", "role area needs districts or streets (or both)"))
    if role not in (Role.AREA, Role.RESPONDER) and has_districts:
        why = {
            Role.OPERATOR: "it sees the whole city",
            Role.DEPARTMENT: "it sees its department's alerts in every district",
            Role.OPEN: "it sees no alerts",
        }[role]
        out.append(("districts", f"role {role} takes no districts: {why}"))
    if role is not Role.AREA and has_streets:
        out.append(("streets", f"role {role} takes no streets; only area users have streets"))
    return out


class Principal(BaseModel):
    """An authenticated user and its scope; answers every access question.

    ``street_districts`` holds the districts the user's streets lie in (from
    ``city.yaml``; :func:`load_roles` fills it): an area user with streets sees
    those districts' vital signs, but only the alerts on its streets.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field(min_length=1)
    role: Role
    department: str | None = None
    districts: frozenset[str] = frozenset()
    streets: frozenset[str] = frozenset()
    display_name: str = Field(min_length=1)
    street_districts: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _coherent(self) -> Principal:
        problems = _role_problems(self.role, self.department, self.districts, self.streets)
        if problems:
            field, reason = problems[0]
            raise ValueError(f"{field}: {reason}")
        if self.streets and not self.street_districts:
            raise ValueError("street_districts must name the districts of the streets")
        return self

    # -- alerts ------------------------------------------------------------------------
    @property
    def may_see_alerts(self) -> bool:
        """Whether any alert can be visible to this user (not for the open view)."""
        return self.role is not Role.OPEN

    @property
    def may_list_history(self) -> bool:
        """Whether the user may query past and resolved alerts (by time range)."""
        return self.role in (Role.OPERATOR, Role.DEPARTMENT, Role.AREA)

    @property
    def may_read_audit(self) -> bool:
        """Whether the user may read the audit trail of actions (operators only)."""
        return self.role is Role.OPERATOR

    @property
    def actions(self) -> frozenset[AlertActionType]:
        """The actions the role may take on an alert it sees."""
        return ROLE_ACTIONS[self.role]

    def _dispatched_here(self, alert: AlertEvent) -> bool:
        return any(
            r.action == AlertActionType.DISPATCH and r.department == self.department
            for r in alert.actions
        )

    def can_see(self, alert: AlertEvent) -> bool:
        """Whether this alert (and its details) may be shown to the user."""
        match self.role:
            case Role.OPERATOR:
                return True
            case Role.DEPARTMENT:
                return (
                    alert.department == self.department
                    or self.department in alert.co_departments
                    or self._dispatched_here(alert)
                )
            case Role.AREA:
                return (
                    alert.district in self.districts
                    or (alert.street is not None and alert.street in self.streets)
                    or not self.streets.isdisjoint(alert.evidence.streets)
                )
            case Role.RESPONDER:
                if alert.status is AlertStatus.RESOLVED or alert.workflow in _CLOSED_WORKFLOWS:
                    return False
                if self.districts and alert.district not in self.districts:
                    return False
                return alert.department == self.department or self._dispatched_here(alert)
            case Role.OPEN:
                return False

    def can_act(self, alert: AlertEvent, action: AlertActionType) -> bool:
        """Whether the user may take ``action`` on this alert (only on alerts it sees).

        A department re-routes only what it owns: a co-handler or a department an
        alert was dispatched to cannot hand the owner's alert to someone else."""
        if action is AlertActionType.REROUTE and self.role is Role.DEPARTMENT:
            return alert.department == self.department
        return action in ROLE_ACTIONS[self.role] and self.can_see(alert)

    # -- vital signs ---------------------------------------------------------------------
    def can_see_district(self, district: str) -> bool:
        """Whether the district's vital signs may be shown: area users see their
        districts and the districts of their streets, everyone else every district."""
        if self.role is Role.AREA:
            return district in self.districts or district in self.street_districts
        return True

    def can_see_indicator(self, code: str, catalogue: Catalogue) -> bool:
        """Whether the indicator's aggregates may be shown: the open view sees only
        indicators the catalogue shares ``open``; unknown codes are hidden from it."""
        if self.role is not Role.OPEN:
            return True
        indicator = catalogue.by_code.get(code)
        return indicator is not None and indicator.sharing is Sharing.OPEN

    def can_see_domain(self, domain: str, catalogue: Catalogue) -> bool:
        """Whether the domain's sub-index may be shown: for the open view, only if
        every indicator of the domain in the catalogue is shared ``open``."""
        if self.role is not Role.OPEN:
            return True
        if domain not in catalogue.domains:
            return False
        return all(i.sharing is Sharing.OPEN for i in catalogue.indicators if i.domain == domain)

    def can_see_composite(self, catalogue: Catalogue) -> bool:
        """Whether the composite index may be shown: for the open view, only if every
        domain is visible (it is computed from all of them)."""
        return all(self.can_see_domain(d, catalogue) for d in catalogue.domains)

    def visible_vitals(self, doc: Mapping[str, Any], catalogue: Catalogue) -> dict[str, Any]:
        """A ``DistrictVitals`` JSON document cut down to what the user may see.

        Hidden indicators and domains are left out of ``indicators`` and
        ``domains``; a hidden composite is left out altogether (as when there is
        none), and ``events`` then counts only the visible indicators' events of
        the closed minute. The input is not changed. Whether the district itself
        may be shown is :meth:`can_see_district`'s question.
        """
        out = dict(doc)
        indicators: Mapping[str, Any] = doc.get("indicators") or {}
        shown = {c: v for c, v in indicators.items() if self.can_see_indicator(c, catalogue)}
        if len(shown) != len(indicators):
            out["indicators"] = shown
            if "events" in doc:
                out["events"] = sum(
                    int((v.get("minute") or {}).get("count", 0)) for v in shown.values()
                )
        if "domains" in doc:
            out["domains"] = {
                d: v for d, v in (doc["domains"] or {}).items() if self.can_see_domain(d, catalogue)
            }
        if not self.can_see_composite(catalogue):
            out.pop("composite", None)
        return out

    # -- refusals ------------------------------------------------------------------------
    def require_alerts(self) -> None:
        """Raise :class:`AuthError` 403 unless the user may see alerts at all."""
        if not self.may_see_alerts:
            raise AuthError(403, f"role {self.role} may not see alerts")

    def require_history(self) -> None:
        """Raise :class:`AuthError` 403 unless the user may list alert history."""
        if not self.may_list_history:
            raise AuthError(403, f"role {self.role} may not list alert history")

    def require_audit(self) -> None:
        """Raise :class:`AuthError` 403 unless the user may read the audit trail."""
        if not self.may_read_audit:
            raise AuthError(403, f"role {self.role} may not read the audit trail")

    def require_act(self, alert: AlertEvent, action: AlertActionType) -> None:
        """Raise :class:`AuthError` 403 unless the user may take ``action`` on ``alert``."""
        if not self.can_see(alert):
            raise AuthError(403, f"user {self.user} may not see alert {alert.alert_id}")
        if action not in ROLE_ACTIONS[self.role]:
            allowed = ", ".join(sorted(ROLE_ACTIONS[self.role])) or "none"
            raise AuthError(403, f"role {self.role} may not {action} alerts (it may: {allowed})")


# --- tokens ---------------------------------------------------------------------------


def new_token() -> str:
    """A fresh bearer token: ``cv_`` and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The form a token is stored in: ``sha256:`` and the hex SHA-256 of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _utc_text(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@runtime_checkable
class Authenticator(Protocol):
    """Turns a bearer token into a :class:`Principal`, or raises :class:`AuthError` 401."""

    def authenticate(self, token: str | None, now: datetime) -> Principal: ...


@dataclass(frozen=True)
class StoredToken:
    """A token as it is kept: its hash, whose it is, and when it stops working."""

    user: str
    digest: str
    expires: datetime | None = None


class TokenBook:
    """An :class:`Authenticator` over a fixed roster of users and hashed tokens."""

    def __init__(self, principals: Iterable[Principal], tokens: Iterable[StoredToken] = ()) -> None:
        self._principals: dict[str, Principal] = {}
        for p in principals:
            if p.user in self._principals:
                raise ValueError(f"duplicate user {p.user!r}")
            self._principals[p.user] = p
        stored = tuple(tokens)
        for t in stored:
            if t.user not in self._principals:
                raise ValueError(f"token for unknown user {t.user!r}")
            if not _HASH.match(t.digest):
                raise ValueError(f"malformed token hash for user {t.user!r}")
            if t.expires is not None and t.expires.tzinfo is None:
                raise ValueError(f"token expiry for user {t.user!r} has no time zone")
        if len({t.digest for t in stored}) != len(stored):
            raise ValueError("duplicate token hash")
        # replaced, never changed in place, so a concurrent authenticate sees one state
        self._tokens: tuple[StoredToken, ...] = stored

    @property
    def users(self) -> tuple[str, ...]:
        """The configured users, in roster order."""
        return tuple(self._principals)

    def principal(self, user: str) -> Principal:
        """The configured principal of ``user`` (KeyError if there is none)."""
        return self._principals[user]

    def authenticate(self, token: str | None, now: datetime) -> Principal:
        """The principal the token belongs to; :class:`AuthError` 401 if it is missing,
        unknown or expired at ``now`` (an aware time)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if token is None or not token.strip():
            raise AuthError(401, "no bearer token given")
        if len(token) > _MAX_TOKEN or not token.isascii():
            raise AuthError(401, "unknown token")
        digest = hash_token(token)
        found: StoredToken | None = None
        for stored in self._tokens:  # every entry, so the time does not tell which matched
            if hmac.compare_digest(stored.digest, digest) and found is None:
                found = stored
        if found is None:
            raise AuthError(401, "unknown token")
        if found.expires is not None and now >= found.expires:
            raise AuthError(401, f"token expired at {_utc_text(found.expires)}")
        return self._principals[found.user]

    def issue(self, user: str, ttl: timedelta | None = None, *, now: datetime | None = None) -> str:
        """A fresh token for a configured user, valid for ``ttl`` from ``now`` (default:
        the wall clock) or without expiry. It lives in memory only: gone at restart."""
        if user not in self._principals:
            raise ValueError(f"unknown user {user!r}; configured: {sorted(self._principals)}")
        expires = None
        if ttl is not None:
            if ttl <= timedelta(0):
                raise ValueError(f"ttl must be positive, got {ttl}")
            expires = (now if now is not None else datetime.now(UTC)) + ttl
        token = new_token()
        self._tokens = (*self._tokens, StoredToken(user, hash_token(token), expires))
        return token


# --- config/roles.yaml ------------------------------------------------------------------


class TokenEntry(_Strict):
    hash: str
    expires: AwareDatetime | None = None
    comment: str = ""

    @field_validator("hash")
    @classmethod
    def _hashed(cls, v: str) -> str:
        if not _HASH.match(v):
            shown = v if len(v) <= 16 else v[:12] + "..."
            raise ValueError(
                f"expected 'sha256:' and 64 lowercase hex digits (streams.api.auth.hash_token), "
                f"got {shown!r}; never put a token itself in this file"
            )
        return v


class UserEntry(_Strict):
    user: Code
    role: Role
    display_name: str = Field(min_length=1)
    department: Code | None = None
    districts: list[Code] = Field(default_factory=list)
    streets: list[Code] = Field(default_factory=list)
    tokens: list[TokenEntry] = Field(default_factory=list)


class RolesFile(_Strict):
    version: Literal[1]
    users: list[UserEntry] = Field(min_length=1)


def load_roles(path: Path | str, city: CityConfig) -> TokenBook:
    """Load ``roles.yaml`` and check it against the city: roles, departments,
    districts, streets, token hashes; anything wrong is a ConfigError."""
    file = Path(path)
    data, lines = load_model(file, RolesFile)

    def fail(loc: tuple[str | int, ...], reason: str) -> NoReturn:
        shown = format_path(loc)
        if len(loc) >= 2 and loc[0] == "users" and isinstance(loc[1], int):
            shown = f"users[{loc[1]}] ({data.users[loc[1]].user})" + format_path(
                ("x", *loc[2:])
            ).removeprefix("x")
        raise ConfigError(file, shown, reason, nearest_line(lines, loc))

    departments = city.catalogue.departments
    street_district = city.city.street_district
    users: dict[str, int] = {}
    hashes: dict[str, tuple[int, int]] = {}
    principals: list[Principal] = []
    tokens: list[StoredToken] = []
    for i, u in enumerate(data.users):
        if u.user in users:
            fail(("users", i, "user"), f"duplicate user {u.user!r} (also users[{users[u.user]}])")
        users[u.user] = i
        for field, reason in _role_problems(u.role, u.department, u.districts, u.streets):
            fail(("users", i, field), reason)
        if u.department is not None and u.department not in departments:
            fail(
                ("users", i, "department"),
                f"unknown department {u.department!r}; known: {sorted(departments)}",
            )
        for k, d in enumerate(u.districts):
            if d not in city.districts:
                fail(("users", i, "districts", k), f"unknown district {d!r}")
        for k, s in enumerate(u.streets):
            if s not in street_district:
                fail(("users", i, "streets", k), f"unknown street {s!r}")
        for j, t in enumerate(u.tokens):
            if t.hash in hashes:
                a, b = hashes[t.hash]
                fail(
                    ("users", i, "tokens", j, "hash"),
                    f"duplicate token hash (also users[{a}].tokens[{b}])",
                )
            hashes[t.hash] = (i, j)
            tokens.append(StoredToken(u.user, t.hash, t.expires))
        principals.append(
            Principal(
                user=u.user,
                role=u.role,
                department=u.department,
                districts=frozenset(u.districts),
                streets=frozenset(u.streets),
                display_name=u.display_name,
                street_districts=frozenset(street_district[s] for s in u.streets),
            )
        )
    return TokenBook(principals, tokens)


def write_roles_with_tokens(
    source: Path, dest: Path, *, ttl: timedelta | None = None, now: datetime | None = None
) -> dict[str, str]:
    """Copy a roles file to ``dest`` with one fresh token added per user; return the tokens.

    The demo and the tests use it: the worker reads ``dest`` (``CITYVITALS_ROLES_FILE``)
    and only the digests are written. ``ttl`` gives the tokens an expiry.
    """
    import yaml

    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    issued_at = now if now is not None else datetime.now(UTC)
    tokens: dict[str, str] = {}
    for user in data.get("users", []):
        token = new_token()
        entry: dict[str, Any] = {
            "hash": hash_token(token),
            "comment": f"issued {issued_at:%Y-%m-%d %H:%M}Z",
        }
        if ttl is not None:
            entry["expires"] = (issued_at + ttl).isoformat()
        user["tokens"] = [*(user.get("tokens") or []), entry]
        tokens[str(user["user"])] = token
    dest.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return tokens

"""The domain's own errors. No HTTP knowledge: geofence/http/errors.py maps them to statuses."""

from __future__ import annotations

from typing import Any

import msgspec


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing wrong with an input: where (``path`` or ``feature``), a stable code, a detail."""

    code: str
    detail: str
    path: str | None = None
    feature: int | None = None
    id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


class GeofenceError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code


class InvalidInput(GeofenceError):
    """The input breaks a rule; ``problems`` lists every one found, not just the first."""

    code = "invalid-input"

    def __init__(self, problems: list[Problem], detail: str = "") -> None:
        super().__init__(detail or f"{len(problems)} problem(s) in the input")
        self.problems = problems


class NotFound(GeofenceError):
    code = "not-found"


class Conflict(GeofenceError):
    code = "conflict"


class Unauthorized(GeofenceError):
    """A missing or invalid credential."""

    code = "unauthorized"


class Forbidden(GeofenceError):
    """A valid credential of a kind that may not do this."""

    code = "forbidden"


class ConsentRequired(GeofenceError):
    code = "consent-required"


class Unavailable(GeofenceError):
    """A dependency (Redis) cannot be reached; the caller should retry later."""

    code = "unavailable"


class BackendUnavailable(Unavailable):
    """The state store did not answer in time (down, hung, or every connection busy)."""

    code = "backend-unavailable"

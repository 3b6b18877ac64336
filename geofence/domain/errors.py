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
    retry_after_s: int | None = None  # when retrying later may succeed

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code

    def extensions(self) -> dict[str, Any]:
        """Members the problem document carries beside the standard ones."""
        return {}


class InvalidInput(GeofenceError):
    """The input breaks a rule; ``problems`` lists every one found, not just the first."""

    code = "invalid-input"

    def __init__(self, problems: list[Problem], detail: str = "") -> None:
        super().__init__(detail or f"{len(problems)} problem(s) in the input")
        self.problems = problems

    def __reduce__(self) -> tuple[Any, ...]:  # it crosses from the upload worker process
        return (type(self), (self.problems, self.detail))


class MalformedInput(GeofenceError):
    """The body is not JSON at all (checked where it is decoded, maybe in a worker)."""

    code = "malformed-json"


class NotFound(GeofenceError):
    code = "not-found"


class Conflict(GeofenceError):
    code = "conflict"


class Refused(Conflict):
    """A change held back until the caller confirms it; ``report`` says what it would do."""

    def __init__(self, detail: str, report: dict[str, Any]) -> None:
        super().__init__(detail)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.report))

    def extensions(self) -> dict[str, Any]:
        return {"report": self.report}


class CatalogueShrink(Refused):
    code = "catalogue-shrink"


class ConfirmMove(Refused):
    code = "confirm-move"


class UploadInProgress(Conflict):
    """This process is already checking a catalogue upload."""

    code = "upload-in-progress"
    retry_after_s = 5


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

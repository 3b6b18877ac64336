"""Devices (contract §4): registration, profile and consent, export, erasure, and who may act.

``authorize`` is the one gate of every device-scoped route: a device token reaches only
its own device, and another device's id looks exactly like one that does not exist.
Raw device ids live only in this module's arguments: the store sees refs, and log
records name a device by its ref only.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import msgspec

from geofence.domain.callers import Caller, CallerKind, new_device_token, token_key, verified_ref
from geofence.domain.devices import (
    ConsentChange,
    DeviceProfile,
    ProfilePatch,
    Registration,
    apply_patch,
    device_ref,
    install_matches,
    new_profile,
    token_hash,
    token_matches,
    valid_device_id,
    withdrew,
)
from geofence.domain.errors import (
    Conflict,
    ConsentRequired,
    Forbidden,
    GeofenceError,
    NotFound,
    Unauthorized,
)
from geofence.domain.model import DeviceState
from geofence.domain.offers import Ledger
from geofence.ports import DeviceStore, StoredState, VisitStore

logger = logging.getLogger(__name__)

ERASERS: tuple[CallerKind, ...] = ("device", "admin")
REFS_KEPT = 16_384  # pseudonyms kept per process: about 3 MB


class DeviceView(msgspec.Struct, frozen=True, kw_only=True):
    """A device's profile as its owner sees it (never the token hash)."""

    device_id: str
    consent: dict[str, bool]
    tier: str | None
    segments: tuple[str, ...]
    timezone: str | None
    push_token: str | None
    created_at: float
    updated_at: float


class StoredKey(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    ttl_s: float | None


class DeviceExport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything held about one device (GDPR access), the token hash excepted."""

    device_id: str
    device_ref: str
    profile: DeviceView
    consent_ledger: tuple[ConsentChange, ...]
    visit_state: DeviceState
    state_version: int
    offer_ledger: Ledger
    keys: tuple[StoredKey, ...]


class DeviceRoles(DeviceStore, VisitStore, Protocol):
    """The roles of the state store the device service uses: profiles, and the visit
    state read with them (authorization, export)."""


class DeviceService:
    def __init__(
        self, id_secret: str, store: DeviceRoles, *, clock: Callable[[], float] = time.time
    ) -> None:
        """``id_secret``: the key of device refs and token tags (empty: development, a
        key for this process only)."""
        self.store = store
        self.clock = clock
        self._secret = id_secret.encode() if id_secret else development_id_secret()
        self.token_key = token_key(self._secret)
        # every ping names its device: the pseudonyms of the devices seen lately, kept
        # rather than an HMAC computed again for each
        self._refs = functools.lru_cache(maxsize=REFS_KEPT)(self._ref)

    def ref_of(self, device_id: str) -> str:
        """The device's pseudonym, the only name of it a log record may hold."""
        return self._refs(device_id)

    def _ref(self, device_id: str) -> str:
        return device_ref(device_id, self._secret)

    def verified_ref(self, token: str) -> str | None:
        """The ref a device token names if this service minted it (its tag), else None:
        no store read. Its stored hash is checked later by :meth:`authorize`."""
        return verified_ref(token, self.token_key)

    def names(self, caller: Caller, device_id: str) -> bool:
        """Whether ``caller`` is a device token of ``device_id``: no store read, and no
        pseudonym remembered for an id that is not the caller's own."""
        ref = self._refs(device_id) if valid_device_id(device_id) else None
        return ref is not None and _same(caller.device_ref, ref)

    async def register(self, body: Registration) -> tuple[str, str, bool]:
        """A new device: (device_id, device_token, True). An id already registered is a
        conflict, unless the install secret it was registered with comes along: then
        the same device gets a new token, the old one revoked: (.., .., False)."""
        ref = self.ref_of(body.device_id)
        token = new_device_token(ref, self.token_key)
        profile = new_profile(body, ref=ref, token_hash=token_hash(token), now=self.clock())
        if await self.store.create_device(profile):
            logger.info("device registered device=%s %s", ref, _consent_kv(profile))
            return body.device_id, token, True
        existing = await self.store.get_device(ref)
        if existing is None or not install_matches(body.install_secret, existing):
            raise Conflict("A device with this id is already registered.")
        return body.device_id, await self.rotate(existing, reason="re-registered"), False

    async def rotate(self, profile: DeviceProfile, *, reason: str = "rotated") -> str:
        """A new token for the device; the one it replaces is refused from now on."""
        token = new_device_token(profile.ref, self.token_key)
        changed = msgspec.structs.replace(
            profile, token_hash=token_hash(token), updated_at=self.clock()
        )
        if not await self.store.put_device(changed):  # erased meanwhile: not brought back
            raise _no_such_device()
        logger.info("device token replaced device=%s reason=%s", profile.ref, reason)
        return token

    async def update(self, profile: DeviceProfile, patch: ProfilePatch) -> DeviceProfile:
        """Apply ``patch``; withdrawing location consent erases the location state at once,
        withdrawing offers consent the device's queued notifications and dead letters."""
        updated = apply_patch(profile, patch, self.clock())
        if not await self.store.put_device(updated):  # erased meanwhile: not brought back
            raise _no_such_device()
        if withdrew(profile, updated, "location"):
            await self.store.erase_location(profile.ref)
            logger.info("location erased device=%s reason=consent-withdrawn", profile.ref)
        if withdrew(profile, updated, "offers"):
            await self.store.erase_notifications(profile.ref)
            logger.info("notifications erased device=%s reason=consent-withdrawn", profile.ref)
        logger.info("device updated device=%s %s", profile.ref, _consent_kv(updated))
        return updated

    def view(self, device_id: str, profile: DeviceProfile) -> DeviceView:
        return DeviceView(
            device_id=device_id,
            consent=dict(profile.consent),
            tier=profile.tier,
            segments=profile.segments,
            timezone=profile.timezone,
            push_token=profile.push_token,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )

    async def export(self, device_id: str, profile: DeviceProfile) -> DeviceExport:
        stored = await self.store.load_state(profile.ref)
        keys = await self.store.device_keys(profile.ref)
        logger.info("device exported device=%s keys=%d", profile.ref, len(keys))
        return DeviceExport(
            device_id=device_id,
            device_ref=profile.ref,
            profile=self.view(device_id, profile),
            consent_ledger=profile.ledger,
            visit_state=stored.state,
            state_version=stored.version,
            offer_ledger=stored.ledger,
            keys=tuple(StoredKey(name=k, ttl_s=ttl) for k, ttl in sorted(keys.items())),
        )

    async def erase(self, ref: str) -> None:
        """Remove everything held about the device; idempotent.

        The one place erasure happens: whatever else comes to hold device data (pending
        notifications included) is removed here too. Every such key carries the device's
        hash tag ``{d:<ref>}`` and is listed in the store's ``erase_device``.
        """
        await self.store.erase_device(ref)
        logger.info("device erased device=%s", ref)

    async def erase_as(self, caller: Caller, device_id: str) -> None:
        """``DELETE``: the owner or an admin; repeating it answers the same.

        Once erased, a device's token can no longer be checked against a hash. The token
        still names its device through its ref, so its owner repeating the call succeeds,
        while a token naming another device still gets 404.
        """
        try:
            ref = (await self.authorize(caller, device_id, ERASERS)).ref
        except NotFound:
            ref = self._ref_if_erased(caller, device_id)
        await self.erase(ref)

    def _ref_if_erased(self, caller: Caller, device_id: str) -> str:
        ref = self.ref_of(device_id) if valid_device_id(device_id) else None
        if ref is None or (caller.kind == "device" and not _same(caller.device_ref, ref)):
            raise _no_such_device()
        return ref

    async def authorize(
        self, caller: Caller, device_id: str, allow: Collection[CallerKind]
    ) -> DeviceProfile:
        """The device's profile if ``caller`` may act on it (contract §1), else refuse.

        403: the caller's kind is not allowed here; an sdk key never is, since it ships
        inside the app. 401: a device token that is not valid. 404: no such device, or a
        valid device token of another device (the two are indistinguishable). Admin and
        ingest keys, where allowed, need only the device to exist.
        """
        [answer] = await self.authorize_each([(caller, device_id)], allow)
        if isinstance(answer, GeofenceError):
            raise answer
        return answer

    async def authorize_many(
        self, caller: Caller, device_ids: Sequence[str], allow: Collection[CallerKind]
    ) -> tuple[list[DeviceProfile | NotFound], dict[str, StoredState]]:
        """:meth:`authorize` for many devices of one caller; an unknown device fails alone
        (NotFound), a caller refused outright (401/403) fails them all. With the stored
        states read in the same round trip, as :meth:`authorize_loading`."""
        answers, states = await self.authorize_loading([(caller, d) for d in device_ids], allow)
        for answer in answers:
            if isinstance(answer, GeofenceError) and not isinstance(answer, NotFound):
                raise answer
        return answers, states  # type: ignore[return-value]  # only profiles and NotFound left

    async def authorize_each(
        self, asks: Sequence[tuple[Caller, str]], allow: Collection[CallerKind]
    ) -> list[DeviceProfile | GeofenceError]:
        """:meth:`authorize` of each (caller, device id), its refusal in place of a
        profile; every profile needed comes in one round trip."""
        planned = self.plan_each(asks, allow)
        wanted = planned.reads
        read = await self.store.get_devices(wanted) if wanted else []
        return _decided(planned.plans, dict(zip(wanted, read, strict=True)))

    async def authorize_loading(
        self, asks: Sequence[tuple[Caller, str]], allow: Collection[CallerKind]
    ) -> tuple[list[DeviceProfile | GeofenceError], dict[str, StoredState]]:
        """:meth:`authorize_each`, and the stored state of every device it reads, from
        the same round trip (for :meth:`PingService.handle_many`, which then need not
        load them)."""
        planned = self.plan_each(asks, allow)
        return planned.decide(await self.load(planned))

    def plan_each(
        self, asks: Sequence[tuple[Caller, str]], allow: Collection[CallerKind]
    ) -> Planned:
        """:meth:`authorize_loading` up to its read: the devices it needs read, and how
        to decide each ask once they are (the read may come in another call)."""
        plans = [self._plan(caller, device_id, allow) for caller, device_id in asks]
        return Planned(plans=plans, reads=_reads(plans))

    async def load(self, planned: Planned) -> list[tuple[DeviceProfile | None, StoredState]]:
        """The profiles and stored states ``planned`` needs, in one round trip."""
        return await self.store.load_devices(planned.reads) if planned.reads else []

    def _plan(
        self, caller: Caller, device_id: str, allow: Collection[CallerKind]
    ) -> _Ask | GeofenceError:
        if caller.kind not in allow or caller.kind == "sdk":
            return Forbidden(f"A {caller.kind} credential may not call this.")
        ref = self.ref_of(device_id) if valid_device_id(device_id) else None
        if caller.kind == "device" and (ref is None or not _same(caller.device_ref, ref)):
            return _Ask(caller, caller.device_ref or "", other_device=True)
        return _Ask(caller, ref, other_device=False)


def _reads(plans: Sequence[_Ask | GeofenceError]) -> list[str]:
    """The devices whose profiles the plans need, each once."""
    return sorted({ref for plan in plans if isinstance(plan, _Ask) for ref in plan.reads})


def _decided(
    plans: Sequence[_Ask | GeofenceError], profiles: Mapping[str, DeviceProfile | None]
) -> list[DeviceProfile | GeofenceError]:
    return [p if isinstance(p, GeofenceError) else p.decide(profiles) for p in plans]


class Planned(msgspec.Struct, frozen=True):
    """Asks to authorize, and the devices whose profiles and states decide them."""

    plans: list[_Ask | GeofenceError]
    reads: list[str]

    def decide(
        self, read: Sequence[tuple[DeviceProfile | None, StoredState]]
    ) -> tuple[list[DeviceProfile | GeofenceError], dict[str, StoredState]]:
        """Each ask's profile or refusal, and the stored states, from ``read``: what
        ``load_devices(reads)`` answered."""
        profiles = {ref: profile for ref, (profile, _) in zip(self.reads, read, strict=True)}
        states = {ref: stored for ref, (_, stored) in zip(self.reads, read, strict=True)}
        return _decided(self.plans, profiles), states


class _Ask(msgspec.Struct, frozen=True):
    """One authorization to decide once the profiles it reads are in."""

    caller: Caller
    ref: str | None  # the device acted on; with other_device, the one the token names
    other_device: bool

    @property
    def reads(self) -> tuple[str, ...]:
        return () if not self.ref else (self.ref,)

    def decide(self, profiles: Mapping[str, DeviceProfile | None]) -> DeviceProfile | GeofenceError:
        profile = profiles.get(self.ref) if self.ref else None
        is_device = self.caller.kind == "device"
        if is_device and profile is not None and not token_matches(self.caller.token, profile):
            return _invalid_token(profile.ref)
        if self.other_device:
            if profile is None:  # a forged token is a 401 wherever it points
                return _invalid_token(self.ref or "")
            logger.info("device token refused device=%s reason=other-device", self.ref)
            return _no_such_device()
        return _no_such_device() if profile is None else profile


@functools.cache
def development_id_secret() -> bytes:
    """Development mode: a key for device refs that lives as long as this process."""
    logger.warning(
        "DEVELOPMENT MODE: GEOFENCE_ID_SECRET is not set; device refs use a random key "
        "generated for this process only (refs change on restart and differ between "
        "processes). Set GEOFENCE_ID_SECRET in production."
    )
    return secrets.token_bytes(32)


def _same(claimed: str | None, ref: str) -> bool:
    return claimed is not None and hmac.compare_digest(claimed.encode(), ref.encode())


def no_location_consent() -> ConsentRequired:
    return ConsentRequired("The device has not consented to location; the ping is not stored.")


def located(answer: DeviceProfile | GeofenceError) -> DeviceProfile | GeofenceError:
    """An authorized device whose pings may be stored, or why not: the refusal it came
    with, or no consent to location."""
    if isinstance(answer, DeviceProfile) and not answer.allows("location"):
        return no_location_consent()
    return answer


def _no_such_device() -> NotFound:
    return NotFound("No such device.")


def _invalid_token(ref: str) -> Unauthorized:
    logger.info("device token refused device=%s reason=invalid", ref)
    return Unauthorized("The device token is not valid.")


def _consent_kv(profile: DeviceProfile) -> str:
    return " ".join(f"{p}={str(g).lower()}" for p, g in sorted(profile.consent.items()))

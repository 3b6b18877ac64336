"""Devices (contract §4): registration, profile and consent, export, erasure, and who may act.

``authorize`` (and its batched forms, for pings) is the one gate of every device-scoped
route; the rule it applies is ``domain.callers.may_act``: a device token reaches only its
own device, and another device's id looks exactly like one that does not exist. Here is
only the plumbing around it: the profiles it needs, read in one round trip, and the log.
Raw device ids live only in this module's arguments: the store sees refs, and log
records name a device by its ref only.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

import msgspec

from geofence.domain.callers import (
    Caller,
    CallerKind,
    Refusal,
    may_act,
    new_device_token,
    profile_to_read,
    reaches,
    token_key,
    verified_ref,
)
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
    valid_device_id,
    withdrew,
)
from geofence.domain.errors import (
    Conflict,
    ConsentRequired,
    GeofenceError,
    NotFound,
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
        return reaches(caller, ref)

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
        ask = self._ask(caller, device_id, ERASERS)
        outcome = ask.decide(await self._profiles([ask.read] if ask.read else []))
        if isinstance(outcome, DeviceProfile):
            await self.erase(outcome.ref)
        elif outcome.why == "no-device" and ask.ref is not None:
            await self.erase(ask.ref)  # erased already: the same answer again
        else:
            raise _refused(ask, outcome)

    async def authorize(
        self, caller: Caller, device_id: str, allow: Collection[CallerKind]
    ) -> DeviceProfile:
        """The device's profile if ``caller`` may act on it (``callers.may_act``, the one
        rule, contract §1), else its refusal raised: 403 a kind that may not, 401 a
        device token that is not valid, 404 no such device or another device's."""
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
        return planned.answers(await self._profiles(planned.reads))

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
        """:meth:`authorize_loading` up to its read: the profiles the rule needs, and
        the asks to decide once they are read (the read may come in another call)."""
        plans = [self._ask(caller, device_id, allow) for caller, device_id in asks]
        return Planned(plans=plans, reads=sorted({p.read for p in plans if p.read}))

    async def load(self, planned: Planned) -> list[tuple[DeviceProfile | None, StoredState]]:
        """The profiles and stored states ``planned`` needs, in one round trip."""
        return await self.store.load_devices(planned.reads) if planned.reads else []

    async def _profiles(self, refs: Sequence[str]) -> dict[str, DeviceProfile | None]:
        read = await self.store.get_devices(refs) if refs else []
        return dict(zip(refs, read, strict=True))

    def _ask(self, caller: Caller, device_id: str, allow: Collection[CallerKind]) -> _Ask:
        ref = self.ref_of(device_id) if valid_device_id(device_id) else None
        return _Ask(caller, ref, tuple(allow))


class _Ask(msgspec.Struct, frozen=True):
    """One caller asking to act on one device (``ref``, None: an id no device can
    have): ``may_act`` once the profile it needs (``read``) is in."""

    caller: Caller
    ref: str | None
    allowed: tuple[CallerKind, ...]

    @property
    def read(self) -> str | None:
        return profile_to_read(self.caller, self.ref, self.allowed)

    def decide(self, profiles: Mapping[str, DeviceProfile | None]) -> DeviceProfile | Refusal:
        stored = profiles.get(self.read) if self.read else None
        return may_act(self.caller, self.ref, self.allowed, stored)

    def answer(self, profiles: Mapping[str, DeviceProfile | None]) -> DeviceProfile | GeofenceError:
        outcome = self.decide(profiles)
        return outcome if isinstance(outcome, DeviceProfile) else _refused(self, outcome)


class Planned(msgspec.Struct, frozen=True):
    """Asks to authorize, and the devices whose profiles (and states) decide them."""

    plans: list[_Ask]
    reads: list[str]

    def answers(
        self, profiles: Mapping[str, DeviceProfile | None]
    ) -> list[DeviceProfile | GeofenceError]:
        return [plan.answer(profiles) for plan in self.plans]

    def decide(
        self, read: Sequence[tuple[DeviceProfile | None, StoredState]]
    ) -> tuple[list[DeviceProfile | GeofenceError], dict[str, StoredState]]:
        """Each ask's profile or refusal, and the stored states, from ``read``: what
        ``load_devices(reads)`` answered."""
        profiles = {ref: profile for ref, (profile, _) in zip(self.reads, read, strict=True)}
        states = {ref: stored for ref, (_, stored) in zip(self.reads, read, strict=True)}
        return self.answers(profiles), states


def _refused(ask: _Ask, refusal: Refusal) -> GeofenceError:
    """The refusal's error; a device token refused is logged, by its ref only."""
    if refusal.why in ("invalid", "other-device"):
        logger.info("device token refused device=%s reason=%s", ask.caller.device_ref, refusal.why)
    return refusal.error()


@functools.cache
def development_id_secret() -> bytes:
    """Development mode: a key for device refs that lives as long as this process."""
    logger.warning(
        "DEVELOPMENT MODE: GEOFENCE_ID_SECRET is not set; device refs use a random key "
        "generated for this process only (refs change on restart and differ between "
        "processes). Set GEOFENCE_ID_SECRET in production."
    )
    return secrets.token_bytes(32)


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


def _consent_kv(profile: DeviceProfile) -> str:
    return " ".join(f"{p}={str(g).lower()}" for p, g in sorted(profile.consent.items()))

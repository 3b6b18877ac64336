"""Conversions (issue 27): which eligible entry a reported purchase is attributed to.

An entry is eligible for an offer when the offer was chosen on it: notified (treated) or
held out by the offer's control group (control). A device's eligible entries are kept
for the longest attribution window among them; a conversion at ``at`` goes to the
latest one within its offer's ``attribution_window_s`` before ``at`` (at the same store
when one is named), once: that entry and the older ones are then forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from geofence.domain.offers import EntryDecision, Group, Offer

MAX_KEPT: Final = 32  # eligible entries kept per device: the latest ones win anyway


class Eligible(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """An entry an offer was chosen on, as attribution keeps it (no coordinate)."""

    offer_id: str
    store_id: str
    at: float
    group: Group
    window_s: float


def eligible(decisions: Iterable[EntryDecision], offers: Sequence[Offer]) -> list[Eligible]:
    """The eligible entries among a plan's decisions, each with its offer's window."""
    windows = {o.id: o.attribution_window_s for o in offers}
    return [
        Eligible(
            offer_id=d.offer_id,
            store_id=d.store_id,
            at=d.entry_at,
            group=d.group,
            window_s=windows[d.offer_id],
        )
        for d in decisions
        if d.offer_id is not None and d.group is not None and d.offer_id in windows
    ]


def attributed(kept: Iterable[Eligible], at: float, store_id: str | None) -> Eligible | None:
    """The latest entry a conversion at ``at`` (at ``store_id``, if given) counts for."""
    fitting = [
        e
        for e in kept
        if e.at <= at < e.at + e.window_s and (store_id is None or e.store_id == store_id)
    ]
    return max(fitting, key=lambda e: e.at, default=None)


def remaining(kept: Iterable[Eligible], taken: Eligible) -> list[Eligible]:
    """What is kept once ``taken`` converted: the entries after it."""
    return [e for e in kept if e.at > taken.at]

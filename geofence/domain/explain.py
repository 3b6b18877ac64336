"""Why a device got what it got (contract §6, explain): a pure view of its state and ledger.

Per store: the visit, when its entry cooldown ends, and the last decisions on its
entries; for the device: the cap used and when a slot frees; per offer: the per-device
limit used and when its cooldown ends, and the budget spent. Nothing here holds a
coordinate: the visit state never did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from geofence.domain.model import DeviceState, Visit, VisitRules
from geofence.domain.offers import Ledger, Offer, Rules


def explain(
    state: DeviceState,
    ledger: Ledger,
    offers: Sequence[Offer],
    spent: Mapping[str, int],
    *,
    now: float,
    visit_rules: VisitRules,
    rules: Rules,
) -> dict[str, Any]:
    store_ids = sorted(
        {*state.visits, *state.last_entry_at, *(d.store_id for d in ledger.decisions)}
    )
    return {
        "now": now,
        "device_cap": _device_cap(ledger, now, rules),
        "stores": [_store(s, state, ledger, visit_rules) for s in store_ids],
        "offers": [_offer(o, ledger, spent.get(o.id, 0), now) for o in offers],
    }


def visit_phase(visit: Visit) -> str:
    if not visit.confirmed:
        return "pending"
    if visit.suppressed:
        return "suppressed"
    return "departing" if visit.departing_since is not None else "confirmed"


def _store(
    store_id: str, state: DeviceState, ledger: Ledger, visit_rules: VisitRules
) -> dict[str, Any]:
    visit = state.visits.get(store_id)
    last_entry = state.last_entry_at.get(store_id)
    return {
        "store_id": store_id,
        "visit": None if visit is None else _visit(visit),
        "cooldown_ends_at": None
        if last_entry is None
        else last_entry + visit_rules.entry_cooldown_s,
        "decisions": [d for d in ledger.decisions if d.store_id == store_id],
    }


def _visit(visit: Visit) -> dict[str, Any]:
    return {
        "state": visit_phase(visit),
        "arrived_at": visit.arrived_at,
        "last_inside_at": visit.last_inside_at,
        "departing_since": visit.departing_since,
    }


def _device_cap(ledger: Ledger, now: float, rules: Rules) -> dict[str, Any]:
    window = sorted(t for t in ledger.device_sent if t > now - rules.device_cap_window_s)
    over = len(window) - rules.device_cap  # >= 0: capped until that many sends age out
    return {
        "used": len(window),
        "cap": rules.device_cap,
        "window_s": rules.device_cap_window_s,
        "frees_at": window[over] + rules.device_cap_window_s if over >= 0 and window else None,
    }


def _offer(offer: Offer, ledger: Ledger, spent: int, now: float) -> dict[str, Any]:
    sent = ledger.per_offer_sent.get(offer.id, ())
    cooldown_end = max(sent) + offer.per_device_cooldown_s if sent else None
    return {
        "offer_id": offer.id,
        "used": len(sent),
        "per_device_limit": offer.per_device_limit,
        "cooldown_ends_at": cooldown_end
        if cooldown_end is not None and cooldown_end > now
        else None,
        "budget": offer.budget,
        "budget_spent": spent,
    }

"""Typed application keys: how handlers reach what create_app built.

``CREDENTIALS`` lives beside ``Credentials`` in auth.py (``allow`` reads it), and
``PING_GATE`` beside ``PingGate`` in limits.py (its middleware reads it); both are
re-exported here with the others.
"""

from __future__ import annotations

from aiohttp import web

from geofence.config import Settings
from geofence.delivery import Dispatcher
from geofence.http.auth import CREDENTIALS
from geofence.http.limits import PING_GATE
from geofence.metrics import Metrics
from geofence.ports import PushGateway, StateStore
from geofence.service.catalogue import CatalogueService
from geofence.service.coalescer import PingCoalescer
from geofence.service.devices import DeviceService
from geofence.service.offers import OfferService
from geofence.service.pings import PingService

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", StateStore)
PUSH = web.AppKey("push", PushGateway)
METRICS = web.AppKey("metrics", Metrics)
CATALOGUE = web.AppKey("catalogue", CatalogueService)
DEVICES = web.AppKey("devices", DeviceService)
PINGS = web.AppKey("pings", PingService)
COALESCER = web.AppKey("coalescer", PingCoalescer)
OFFERS = web.AppKey("offers", OfferService)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)

__all__ = [
    "CATALOGUE",
    "COALESCER",
    "CREDENTIALS",
    "DEVICES",
    "DISPATCHER",
    "METRICS",
    "OFFERS",
    "PINGS",
    "PING_GATE",
    "PUSH",
    "SETTINGS",
    "STORE",
]

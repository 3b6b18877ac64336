"""The whole route table on one screen."""

from __future__ import annotations

from aiohttp import web

from geofence.http import console as c
from geofence.http import delivery as dl
from geofence.http import devices as d
from geofence.http import handlers as h
from geofence.http import offers as o
from geofence.http import pings as p


def setup_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", h.healthz),
            web.get("/readyz", h.readyz),
            web.get("/metrics", h.metrics),
            web.get("/openapi.json", h.openapi),
            # stores (contract §3)
            web.put("/v1/stores", h.put_stores),
            web.get("/v1/stores", h.get_stores),
            web.get("/v1/stores/versions", h.store_versions),
            web.put("/v1/stores/{store_id}", h.put_store),
            web.get("/v1/stores/{store_id}", h.get_store),
            web.delete("/v1/stores/{store_id}", h.delete_store),
            # devices (contract §4)
            web.post("/v1/devices", d.register),
            web.patch("/v1/devices/{device_id}", d.patch),
            web.get("/v1/devices/{device_id}/export", d.export),
            web.delete("/v1/devices/{device_id}", d.delete),
            web.get("/v1/devices/{device_id}/explain", o.device_explain),
            web.post("/v1/devices/{device_id}/token", d.rotate_token),
            # pings (contract §5)
            web.post("/v1/pings", p.post_ping),
            web.post("/v1/pings/batch", p.post_batch),
            # offers and their results (contract §6)
            web.get("/v1/offers", o.list_offers),
            web.put("/v1/offers/{offer_id}", o.put_offer),
            web.get("/v1/offers/{offer_id}", o.get_offer),
            web.get("/v1/offers/{offer_id}/preview", o.preview),
            web.delete("/v1/offers/{offer_id}", o.delete_offer),
            web.get("/v1/stats", o.stats),
            web.post("/v1/conversions", o.post_conversion),
            # delivery (contract §6)
            web.post("/v1/receipts", dl.post_receipt),
            web.get("/v1/deadletters", dl.list_dead_letters),
            web.post("/v1/deadletters/{notification_id}/retry", dl.retry_dead_letter),
            # the marketers' console (static pages over the admin API)
            web.get("/console", c.redirect),
            web.get("/console/config.json", c.config),
            web.get("/console/{path:.*}", c.static),
        ]
    )

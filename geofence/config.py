"""Settings: one frozen dataclass, read from GEOFENCE_* variables or the same-named flags.

Nothing is read at import time; only ``cli.main()`` looks at the environment.
Every field ``foo_bar`` is set by ``GEOFENCE_FOO_BAR`` and by ``geofence serve --foo-bar``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

from redis.connection import parse_url

from geofence.domain.delivery import webhook_key
from geofence.domain.model import ScreeningRules, VisitRules
from geofence.domain.offers import Rules as OfferRules

ENV_PREFIX = "GEOFENCE_"
MiB = 1024 * 1024
KEY_LISTS = ("admin_keys", "sdk_keys", "ingest_keys")
# never a command-line flag (flags show in `ps`): the environment, --config or --<name>-file
SECRETS = (*KEY_LISTS, "id_secret", "push_secret", "gateway_secret")
MIN_KEY_CHARS = 16
REDIS_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")  # a Redis Cluster: host:port,host:port
MAX_SHARDS = 16_384  # a Redis Cluster's hash slots
OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
TILE_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class SettingsError(ValueError):
    """A GEOFENCE_* value that cannot be used; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "port to listen on"})
    workers: int = field(
        default=1,
        metadata={"help": "processes sharing the port (SO_REUSEPORT); over 1 needs Redis"},
    )
    redis_url: str | None = field(
        default=None,
        metadata={
            "help": "Redis URL (redis+cluster://host:port,... for a Redis Cluster); "
            "unset keeps all state in memory"
        },
    )
    redis_shards: int | None = field(
        default=None,
        metadata={
            "help": "shards the devices are spread over (default 16 on Redis, 256 on a "
            "cluster); fixed at the first start"
        },
    )
    redis_prefix: str = field(default="geofence", metadata={"help": "prefix of every Redis key"})
    redis_timeout_s: float = field(
        default=2.0, metadata={"help": "Redis connect/command timeout; then 503"}
    )
    redis_max_connections: int = field(
        default=64, metadata={"help": "Redis connections per process; more requests wait"}
    )
    redis_wait_replicas: int = field(
        default=0,
        metadata={
            "help": "replicas that must acknowledge a write of notifications (WAIT) before"
            " the ping is answered; fewer within half the Redis timeout: 503 (0: off)"
        },
    )
    stores: str = field(
        default="stores.geojson",
        metadata={"help": "GeoJSON loaded at start when the catalogue is empty ('' for none)"},
    )
    push_url: str | None = field(
        default=None, metadata={"help": "push gateway URL; unset writes notifications to stdout"}
    )
    push_secret: str | None = field(
        default=None,
        metadata={"help": "outgoing signature key; a whsec_<base64> one is decoded for webhook-*"},
    )
    push_timeout_s: float = field(default=5.0, metadata={"help": "one delivery's time limit"})
    push_concurrency: int = field(default=16, metadata={"help": "deliveries in flight at once"})
    backend_retry_max_s: float = field(
        default=5.0,
        metadata={"help": "longest wait of delivery between tries of a Redis that failed"},
    )
    gateway_secret: str | None = field(default=None, metadata={"help": "receipt signature key"})
    admin_keys: tuple[str, ...] = field(default=(), metadata={"help": "comma list"})
    sdk_keys: tuple[str, ...] = field(default=(), metadata={"help": "comma list"})
    ingest_keys: tuple[str, ...] = field(default=(), metadata={"help": "comma list"})
    id_secret: str | None = field(
        default=None, metadata={"help": "key of the device-id HMAC (generated in dev mode)"}
    )
    default_timezone: str = field(default="Europe/Helsinki", metadata={"help": "IANA zone"})
    max_fence_area_m2: float = field(default=5_000_000.0, metadata={"help": "largest fence"})
    max_vertices: int = field(default=5000, metadata={"help": "most vertices in one fence"})
    region: tuple[float, ...] = field(
        default=(), metadata={"help": "min_lng,min_lat,max_lng,max_lat fences must lie in"}
    )
    h3_resolution: int = field(default=11, metadata={"help": "H3 resolution of the index"})
    max_body_bytes: int = field(default=1 * MiB, metadata={"help": "request body limit"})
    max_upload_bytes: int = field(default=64 * MiB, metadata={"help": "store upload limit"})
    catalogue_poll_s: float = field(
        default=1.0, metadata={"help": "how often workers look for a new catalogue version"}
    )
    device_ttl_s: int = field(default=30 * 86_400, metadata={"help": "device keys' TTL"})
    position_ttl_s: int = field(default=86_400, metadata={"help": "last position's TTL"})
    dead_letter_ttl_s: int = field(
        default=14 * 86_400,
        metadata={"help": "dead letters' TTL; undelivered outbox items go by then too"},
    )
    stats_retention_days: int = field(
        default=400,
        metadata={"help": "how long each hour's aggregate counters (GET /v1/stats) are kept"},
    )
    # admission on the ping routes, per process (geofence/http/limits.py)
    device_rate_per_s: float = field(
        default=2.0, metadata={"help": "ping requests a second per device token (0: no limit)"}
    )
    device_burst: int = field(default=20, metadata={"help": "ping requests a device may burst"})
    ingest_rate_per_s: float = field(
        default=50.0, metadata={"help": "ping requests a second per ingest key (0: no limit)"}
    )
    ingest_burst: int = field(default=100, metadata={"help": "ping requests an ingest key bursts"})
    max_inflight: int = field(
        default=256, metadata={"help": "ping requests handled at once; more get 503 (0: no cap)"}
    )
    # the public edge (geofence/http/edge.py, geofence/http/server.py)
    stranger_rate_per_s: float = field(
        default=5.0,
        metadata={"help": "unauthenticated or sdk-key requests a second per client address"},
    )
    stranger_burst: int = field(
        default=50, metadata={"help": "such requests one client address may burst"}
    )
    stranger_addresses: int = field(
        default=4096, metadata={"help": "client addresses whose buckets are kept (LRU)"}
    )
    body_timeout_s: float = field(
        default=10.0, metadata={"help": "time for a request body to arrive; then 408"}
    )
    keepalive_s: float = field(
        default=15.0, metadata={"help": "idle keep-alive connections are closed after this"}
    )
    # contract §5 screening
    max_accuracy_m: float = field(default=100.0, metadata={"help": "coarser pings are flagged"})
    # contract §5 visit rules
    dwell_s: float = field(default=120.0, metadata={"help": "dwell before an entry"})
    max_gap_s: float = field(default=900.0, metadata={"help": "gap that drops a pending visit"})
    exit_margin_m: float = field(default=30.0, metadata={"help": "hysteresis band width"})
    exit_s: float = field(default=60.0, metadata={"help": "exit debounce"})
    visit_timeout_s: float = field(default=14_400.0, metadata={"help": "silent device closes"})
    entry_cooldown_s: float = field(default=21_600.0, metadata={"help": "between two entries"})
    # contract §6
    quiet_hours: str = field(default="21:00-08:00", metadata={"help": "no offers then"})
    device_cap: int = field(default=2, metadata={"help": "notifications per rolling 48 h"})
    notify_max_lag_s: float = field(default=900.0, metadata={"help": "late entries get none"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING"})
    access_log: bool = field(
        default=False,
        metadata={"help": "log each request: method, route template, status, time, size"},
    )
    # the console's map (geofence/http/console.py); empty: no tiles, the stores on a blank map
    tile_url: str = field(
        default=OSM_TILES,
        metadata={"help": "the console's map tiles, {z}/{x}/{y}; empty: none", "empty_ok": True},
    )
    tile_attribution: str = field(
        default="© OpenStreetMap contributors",
        metadata={"help": "credit shown under the console's map tiles", "empty_ok": True},
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from GEOFENCE_* variables; ``overrides`` (already typed) win."""
        values: dict[str, Any] = {}
        hints = get_type_hints(cls)
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and (raw != "" or f.metadata.get("empty_ok")):
                values[f.name] = parse_value(f.name, raw, hints[f.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # the rules are read for every ping: each is built once per Settings
    @functools.cached_property
    def screening_rules(self) -> ScreeningRules:
        return ScreeningRules(max_accuracy_m=self.max_accuracy_m)

    @functools.cached_property
    def offer_rules(self) -> OfferRules:
        return OfferRules(
            quiet_hours=self.quiet_hours,
            device_cap=self.device_cap,
            notify_max_lag_s=self.notify_max_lag_s,
        )

    @functools.cached_property
    def visit_rules(self) -> VisitRules:
        return VisitRules(
            dwell_s=self.dwell_s,
            max_gap_s=self.max_gap_s,
            exit_margin_m=self.exit_margin_m,
            exit_s=self.exit_s,
            visit_timeout_s=self.visit_timeout_s,
            entry_cooldown_s=self.entry_cooldown_s,
        )

    @property
    def catalogue_limits(self) -> dict[str, Any]:
        """What every store upload is checked against, whichever way it arrives."""
        return {
            "default_timezone": self.default_timezone,
            "max_area_m2": self.max_fence_area_m2,
            "max_vertices": self.max_vertices,
            "region": self.region_bbox,
        }

    @property
    def stats_ttl_s(self) -> int:
        """How long each hour's aggregate counters are kept, in seconds."""
        return self.stats_retention_days * 86_400

    @property
    def region_bbox(self) -> tuple[float, float, float, float] | None:
        if not self.region:
            return None
        min_lng, min_lat, max_lng, max_lat = self.region
        return (min_lng, min_lat, max_lng, max_lat)

    @property
    def dev_mode(self) -> bool:
        """No keys configured: the service generates some and says so loudly."""
        return not (self.admin_keys or self.sdk_keys or self.ingest_keys)


def parse_value(name: str, raw: str, hint: Any) -> Any:
    """Turn one environment string into the field's type, or say which variable is wrong.

    The message of a secret names the variable, never its value."""
    base = _strip_optional(hint)
    if name in KEY_LISTS:
        return parse_key_list(name, raw)
    try:
        if base is tuple or get_origin(base) is tuple:
            item = get_args(base)[0] if get_args(base) else str
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            return tuple(item(p) for p in parts)
        if base is bool:
            return _parse_bool(raw)
        return base(raw)
    except (TypeError, ValueError) as e:
        shown = "" if name in SECRETS else f"={raw!r}"
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}{shown}: {e}") from e


def parse_key_list(name: str, raw: str) -> tuple[str, ...]:
    """A comma list of API keys: no empty item, no blank around or inside a key."""
    keys = tuple(raw.split(","))
    for n, key in enumerate(keys, start=1):
        if not key:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}: key {n} of {len(keys)} is empty")
        if any(c.isspace() for c in key):
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}: key {n} contains whitespace")
    return keys


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def validate(settings: Settings) -> None:
    """Checks that span fields; raises SettingsError with the variable's name."""
    if settings.region and len(settings.region) != 4:
        raise SettingsError("GEOFENCE_REGION needs four numbers: min_lng,min_lat,max_lng,max_lat")
    if not 0 <= settings.h3_resolution <= 15:
        raise SettingsError("GEOFENCE_H3_RESOLUTION must be 0..15")
    if settings.dead_letter_ttl_s < 1:
        raise SettingsError("GEOFENCE_DEAD_LETTER_TTL_S must be at least 1")
    if settings.stats_retention_days < 1:
        raise SettingsError("GEOFENCE_STATS_RETENTION_DAYS must be at least 1")
    if settings.max_body_bytes <= 0 or settings.max_upload_bytes < settings.max_body_bytes:
        raise SettingsError("GEOFENCE_MAX_UPLOAD_BYTES must be at least GEOFENCE_MAX_BODY_BYTES")
    if settings.body_timeout_s <= 0 or settings.keepalive_s < 0:
        raise SettingsError("GEOFENCE_BODY_TIMEOUT_S must be > 0 and GEOFENCE_KEEPALIVE_S >= 0")
    if settings.redis_wait_replicas < 0:
        raise SettingsError("GEOFENCE_REDIS_WAIT_REPLICAS must be 0 (off) or more")
    _validate_workers(settings)
    _validate_offers(settings)
    _validate_keys(settings)
    _validate_redis_url(settings.redis_url)
    if settings.redis_shards is not None and not 1 <= settings.redis_shards <= MAX_SHARDS:
        raise SettingsError(f"GEOFENCE_REDIS_SHARDS must be 1 to {MAX_SHARDS}")
    _validate_tile_url(settings.tile_url)


def _validate_workers(settings: Settings) -> None:
    """Several workers share nothing but Redis: each has its own memory, so the state,
    the device-ref key and the API keys must not be ones a process makes for itself."""
    if settings.workers < 1:
        raise SettingsError("GEOFENCE_WORKERS must be at least 1")
    if settings.workers == 1:
        return
    if not settings.redis_url:
        raise SettingsError(
            "GEOFENCE_WORKERS over 1 needs GEOFENCE_REDIS_URL: in-memory state is per process"
        )
    if not settings.id_secret or settings.dev_mode:
        raise SettingsError(
            "GEOFENCE_WORKERS over 1 needs GEOFENCE_ID_SECRET and GEOFENCE_*_KEYS set: "
            "generated ones would differ between the workers"
        )


def _validate_offers(settings: Settings) -> None:
    if settings.push_url and not settings.push_secret:
        raise SettingsError("GEOFENCE_PUSH_URL needs GEOFENCE_PUSH_SECRET to sign deliveries")
    try:
        webhook_key(settings.push_secret or "")
    except ValueError as e:
        raise SettingsError(f"GEOFENCE_PUSH_SECRET: {e}") from None
    if settings.device_cap < 0 or settings.push_concurrency < 1 or settings.push_timeout_s <= 0:
        raise SettingsError(
            "GEOFENCE_DEVICE_CAP must be >= 0, GEOFENCE_PUSH_CONCURRENCY >= 1, "
            "GEOFENCE_PUSH_TIMEOUT_S > 0"
        )
    if settings.backend_retry_max_s <= 0:
        raise SettingsError("GEOFENCE_BACKEND_RETRY_MAX_S must be > 0")
    try:
        settings.offer_rules  # noqa: B018 - builds the rules, which check the quiet hours
    except ValueError as e:
        raise SettingsError(f"GEOFENCE_QUIET_HOURS: {e}") from None


def _validate_keys(settings: Settings) -> None:
    """Each key long enough, and one key for one kind of caller only."""
    owner: dict[str, str] = {}
    for name in KEY_LISTS:
        variable = ENV_PREFIX + name.upper()
        for n, key in enumerate(getattr(settings, name), start=1):
            if len(key) < MIN_KEY_CHARS:
                raise SettingsError(
                    f"{variable}: key {n} is shorter than {MIN_KEY_CHARS} characters"
                )
            if key in owner:
                raise SettingsError(f"{variable}: key {n} is also in {owner[key]}")
            owner[key] = variable


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``CLUSTER_SCHEMES``), whatever its case."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _validate_redis_url(url: str | None) -> None:
    """A URL redis-py can connect with; the message never repeats it (it may hold a password)."""
    if not url:
        return
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        _validate_cluster_url(url)
        return
    if scheme not in REDIS_SCHEMES:
        schemes = ", ".join((*REDIS_SCHEMES, *CLUSTER_SCHEMES))
        raise SettingsError(f"GEOFENCE_REDIS_URL: the scheme must be one of {schemes}")
    try:
        parsed = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as e:
        raise SettingsError(f"GEOFENCE_REDIS_URL: {e}") from None
    if scheme != "unix" and not parsed.get("host"):
        raise SettingsError("GEOFENCE_REDIS_URL: no host")
    database = urllib.parse.urlsplit(url).path.strip("/")
    if scheme != "unix" and database and not database.isdigit():
        raise SettingsError("GEOFENCE_REDIS_URL: the database must be a number")


def _validate_cluster_url(url: str) -> None:
    """``redis+cluster://[user:password@]host:port[,host:port...][?options]``: at least
    one node, each a host and a port; no database (a cluster has only 0)."""
    hosts = url.partition("://")[2].rpartition("@")[2].partition("?")[0]
    nodes, _, database = hosts.partition("/")
    if database.strip("/") not in ("", "0"):
        raise SettingsError("GEOFENCE_REDIS_URL: a Redis Cluster has no database but 0")
    if not nodes:
        raise SettingsError("GEOFENCE_REDIS_URL: no host:port of a cluster node")
    for node in nodes.split(","):
        try:
            parts = urllib.parse.urlsplit(f"//{node}")
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise SettingsError("GEOFENCE_REDIS_URL: each cluster node is host:port")


def _validate_tile_url(url: str) -> None:
    """Empty (no tiles) or an http(s) URL with {z}, {x} and {y}; its host goes into the
    console's Content-Security-Policy, so it is a plain host name (with {s} at most)."""
    if not url:
        return
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.replace("{s}.", "", 1)
    if parts.scheme not in ("http", "https") or not TILE_HOST.fullmatch(host):
        raise SettingsError("GEOFENCE_TILE_URL must be an http(s) URL (or empty for no tiles)")
    if not all(f"{{{p}}}" in url for p in "zxy"):
        raise SettingsError("GEOFENCE_TILE_URL must contain {z}, {x} and {y}")

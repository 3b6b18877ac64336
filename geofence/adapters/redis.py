"""The Redis state store, on a single Redis or a Redis Cluster.

Every key name is built in ``Keys`` below, in one place. All keys of one device share the
hash tag of its shard (``shard_tags``) with that shard's outbox, so they live in one Redis
Cluster slot and one script can write a device's state, spend its caps and put the
notification in the outbox atomically. The delivery side claims from every shard.
On a single Redis the batched calls (profiles, loads, compare-and-sets of many devices)
go as one command each whatever the shards, on a lane (``redis_lane``). On a cluster
(``RedisCluster``) every script touches the keys of one hash tag only: a batch is split by
shard, one call per shard, and the calls of a batch go in one cluster pipeline, which
sends each primary its calls in order on one connection, the primaries concurrently (one
round trip and one await per primary, not per shard; ``RedisStore._on_nodes``); plain
reads of many slots go in a cluster pipeline too. The catalogue and the offers are
globals under ``{cat}``; an offer's spent budget is a counter of its own slot
``{o:<id>}``, reserved before the device's write and given back when the write does not
land (see ``RedisStore.reserve_budget``).
Values are msgpack-encoded domain structs. Any connection failure or timeout becomes the
domain's ``BackendUnavailable`` (the HTTP layer answers 503), within ``timeout_s`` of the
call: waiting for a pooled connection, connecting, sending and reading all count against
that one bound, and a command is never sent twice (a timed-out or broken one may have run:
sent again, a script that adds or claims would apply twice).
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import hashlib
import itertools
import time
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.connection import parse_url
from redis.crc import key_slot

from geofence.adapters.redis_lane import (
    Arg,
    Call,
    HiredisPackedConnection,
    Lane,
    ScriptLane,
    Wait,
)
from geofence.domain.conversions import MAX_KEPT, Eligible, attributed
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import BackendUnavailable, NotFound
from geofence.domain.model import DeviceState, Fence, Fix
from geofence.domain.offers import Ledger, Notification, Offer
from geofence.domain.stats import summed
from geofence.ports import (
    HISTORY_KEPT,
    Catalogue,
    CatalogueChange,
    DeadLetter,
    OutboxItem,
    Persistence,
    Receipt,
    Saved,
    StateWrite,
    StoredState,
)

T = TypeVar("T")
_REDIS_DOWN = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    OSError,
    # a cluster without a primary for a slot (a failover under way), or none reachable
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.SlotNotCoveredError,
    rexc.RedisClusterUnreachableError,
)
SHARDS = 16  # on a single Redis: the layout of the first releases, key names unchanged
CLUSTER_SHARDS = 256  # on a cluster: 3 to 30 primaries each get an equal share (+-1)
SLOTS = 16_384  # the hash slots of a Redis Cluster
CATALOGUE_PAGE = 1000  # fences a page of a catalogue's read asks for (HSCAN's COUNT)
CATALOGUE_READS = 5  # reads of a catalogue that changed meanwhile, then a 503
LANES = 2  # connections kept aside for the script calls (two batches in flight each get one)
STEMS_KEPT = 16_384  # the key stems of as many devices, kept per process
COUNTS_TTL_S = 400 * 86_400  # aggregate counters (GEOFENCE_STATS_RETENTION_DAYS)
DEAD_LETTER_TTL_S = 14 * 86_400  # dead letters, and the outbox keys after their last write
RECEIPTS_TTL_S = 30 * 86_400


@functools.cache
def shard_tags(shards: int) -> tuple[str, ...]:
    """The hash tag of each shard: ``s<n>`` for the 16 shards of a single Redis (the
    names of the first releases); else shard n's tag is the first of ``s.0``, ``s.1``,
    ... ``s.<hex>`` whose slot is ``n * 16384 // shards``.

    ``redis-cli --cluster create`` gives each primary one contiguous range of slots of
    equal length, so slots spaced evenly give each primary an equal share of the shards
    (256 shards on 3 to 30 primaries: at most one apart), where tags chosen anyhow (the
    slots of ``{s<n>}`` fall at random) would not. The rule is part of the stored layout:
    changing it moves every key. About 0.1 s once per process for 256 shards.
    """
    if not 1 <= shards <= SLOTS:
        raise ValueError(f"the shards must be 1 to {SLOTS}, not {shards}")
    if shards == SHARDS:
        return tuple(f"s{n}" for n in range(shards))
    wanted = {n * SLOTS // shards: n for n in range(shards)}
    tags = [""] * shards
    for k in itertools.count():
        tag = f"s.{k:x}"
        n = wanted.pop(binascii.crc_hqx(tag.encode(), 0) % SLOTS, None)
        if n is not None:
            tags[n] = tag
            if not wanted:
                break
    return tuple(tags)


class Keys:
    """Every key prefix of the service, in one block."""

    def __init__(self, prefix: str, shards: int = SHARDS) -> None:
        self.prefix = prefix
        self.shards = shards
        self._tags = shard_tags(shards)
        # the number of shards the data was written with, recorded at the first start
        self.layout = f"{prefix}:{{cat}}:shards"
        self.fences = f"{prefix}:{{cat}}:fences"
        self.catalogue_version = f"{prefix}:{{cat}}:version"
        # a short digest of each fence, to count what a new version changed, and the changes
        self.digests = f"{prefix}:{{cat}}:digests"
        self.history = f"{prefix}:{{cat}}:history"
        self.offers = f"{prefix}:{{cat}}:offers"
        # every flush and batch names the keys of each of its devices: their stems are
        # made once (a few hundred bytes each)
        self._stems = functools.lru_cache(maxsize=STEMS_KEPT)(self._stem)

    def shard_of(self, ref: str) -> int:
        return zlib.crc32(ref.encode()) % self.shards

    def shard(self, n: int) -> str:
        return f"{self.prefix}:{{{self._tags[n]}}}"

    def _stem(self, ref: str) -> tuple[str, int]:
        shard = self.shard_of(ref)
        return f"{self.shard(shard)}:d:{ref}", shard

    def device(self, ref: str) -> str:
        """The stem of every key of one device, under its shard's hash tag."""
        return self._stems(ref)[0]

    def profile(self, ref: str) -> str:
        return f"{self.device(ref)}:profile"

    def state(self, ref: str) -> str:
        return f"{self.device(ref)}:state"

    def fix(self, ref: str) -> str:
        return f"{self.device(ref)}:fix"

    def eligible(self, ref: str) -> str:
        """The device's eligible entries for attribution: a sorted set by entry time."""
        return f"{self.device(ref)}:eligible"

    def pending(self, ref: str) -> str:
        """The ids of the device's notifications still in the outbox (for erasure)."""
        return f"{self.device(ref)}:pending"

    def state_and_fix(self, ref: str) -> list[str]:
        """The keys a load reads and a location erasure clears (one stem for both)."""
        stem = self.device(ref)
        return [f"{stem}:state", f"{stem}:fix"]

    def compare_and_set(self, ref: str) -> list[str]:
        """The keys a device's compare-and-set touches: its state, fix, profile and
        pending ids, and its shard's outbox (one stem and one shard for all)."""
        stem, shard = self._stems(ref)
        own = [f"{stem}:state", f"{stem}:fix", f"{stem}:profile", f"{stem}:pending"]
        return [*own, *self.outbox(shard)]

    def outbox(self, shard: int) -> list[str]:
        """The shard's outbox: a sorted set of ids by due time and a hash of the items."""
        return [f"{self.shard(shard)}:outbox:due", f"{self.shard(shard)}:outbox:items"]

    def dead(self, shard: int) -> str:
        """The shard's index of dead letters: a sorted set of their ids by time."""
        return f"{self.shard(shard)}:dead:at"

    def letter(self, shard: int, notification_id: str) -> str:
        """One dead letter, a key of its own so that it expires on its own."""
        return f"{self.shard(shard)}:dead:n:{notification_id}"

    def device_outbox(self, ref: str) -> list[str]:
        return [self.pending(ref), *self.outbox(self.shard_of(ref))]

    def notifications_of(self, ref: str) -> list[str]:
        """The keys erasing a device's notifications touches: its pending ids, its
        shard's outbox and its shard's index of dead letters."""
        return [*self.device_outbox(ref), self.dead(self.shard_of(ref))]

    def receipts(self, notification_id: str) -> str:
        return f"{self.prefix}:{{r:{notification_id}}}"

    def spent(self, offer_id: str) -> str:
        return f"{self.prefix}:{{o:{offer_id}}}:spent"

    def counts(self, bucket: int) -> str:
        return f"{self.prefix}:{{stats}}:{bucket}"


# The compare-and-set of many devices. KEYS: per device its state, fix, profile and pending
# keys and its shard's outbox due and items. ARGV: ttl, fix ttl, outbox ttl (the outbox keys
# live that long after their last write), then per device: expected
# version, state, fix ('' = none), ledger ('' = unchanged), the number of notifications
# made and (id, outbox item, due at) for each. Answers per device: -1 when the device is
# gone (erased while its pings were computed: nothing may be written back), 0 on a version
# conflict, 1 when written. The state hash holds the version 'v', the visit state 's' and
# the offer ledger 'l': one version covers both.
SAVE_STATES = """
local ttl, fix_ttl, outbox_ttl = ARGV[1], ARGV[2], ARGV[3]
local out, a = {}, 4
for k = 1, #KEYS, 6 do
  local state, fix, profile, pending = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local due, items = KEYS[k + 4], KEYS[k + 5]
  local version, body, position, ledger = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local first = a + 5
  a = first + 3 * tonumber(ARGV[a + 4])
  if redis.call('EXISTS', profile) == 0 then
    table.insert(out, -1)
  elseif tonumber(redis.call('HGET', state, 'v') or '0') ~= version then
    table.insert(out, 0)
  else
    redis.call('HSET', state, 'v', version + 1, 's', body)
    if ledger ~= '' then redis.call('HSET', state, 'l', ledger) end
    redis.call('EXPIRE', state, ttl)
    if position ~= '' then redis.call('SET', fix, position, 'EX', fix_ttl) end
    redis.call('EXPIRE', profile, ttl)
    for i = first, a - 1, 3 do
      redis.call('HSET', items, ARGV[i], ARGV[i + 1])
      redis.call('ZADD', due, ARGV[i + 2], ARGV[i])
      redis.call('SADD', pending, ARGV[i])
    end
    if a > first then
      redis.call('EXPIRE', items, outbox_ttl)
      redis.call('EXPIRE', due, outbox_ttl)
    end
    if redis.call('EXISTS', pending) == 1 then
      redis.call('EXPIRE', pending, math.max(tonumber(ttl), tonumber(outbox_ttl)))
    end
    table.insert(out, 1)
  end
end
return out
"""

# KEYS: per device, its state and fix, and its profile too when ARGV[1] is 3 (the keys
# per device). Answers per device: the version, state and ledger fields of the state hash,
# the fix and, if asked, the profile (false where missing).
LOAD_STATES = """
local width = tonumber(ARGV[1])
local out = {}
for k = 1, #KEYS, width do
  local fields = redis.call('HMGET', KEYS[k], 'v', 's', 'l')
  table.insert(out, fields[1])
  table.insert(out, fields[2])
  table.insert(out, fields[3])
  table.insert(out, redis.call('GET', KEYS[k + 1]))
  if width == 3 then table.insert(out, redis.call('GET', KEYS[k + 2])) end
end
return out
"""

# KEYS: state, fix. Drops the visits and the position, keeps the ledger, and moves the
# version on (never back to 0), so a compare-and-set computed before cannot land.
ERASE_LOCATION = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HDEL', KEYS[1], 's')
  redis.call('HINCRBY', KEYS[1], 'v', 1)
end
redis.call('DEL', KEYS[2])
"""

# KEYS: pending, outbox due, outbox items, dead-letter index, then ARGV[1] more keys to
# delete (the device's own, on erasure), then the dead letters of the ids in ARGV[2..].
# Removes the device's notifications from the outbox and its dead letters, and the pending
# set; answers the pending ids whose dead letters were not named (added since they were
# read), for the caller to delete.
ERASE_NOTIFICATIONS = """
local named, missed = {}, {}
for i = 2, #ARGV do named[ARGV[i]] = true end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  if not named[id] then table.insert(missed, id) end
end
local gone = {KEYS[1]}
for k = 5, #KEYS do table.insert(gone, KEYS[k]) end
redis.call('DEL', unpack(gone))
return missed
"""

# KEYS: outbox due, outbox items, pending, the dead letter, dead-letter index. ARGV: id,
# dead letter, at, ttl. Only an item still in the outbox (not one erased meanwhile). The
# letter expires on its own; the index forgets what is older than the ttl and expires with
# its newest letter; the pending set lives at least as long, so erasure still finds it.
DEAD_LETTER = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
local ttl = tonumber(ARGV[4])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'EX', ttl)
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[3]) - ttl)
redis.call('EXPIRE', KEYS[5], ttl)
if redis.call('TTL', KEYS[3]) < ttl then redis.call('EXPIRE', KEYS[3], ttl) end
return 1
"""

# KEYS: the dead letter, dead-letter index, outbox due, outbox items. ARGV: id, the dead
# letter as read, the outbox item, due at, outbox ttl. Moves it back only if nobody changed
# it since it was read and it is still listed (not retired by a newer one's time).
REQUEUE = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[5])
return 1
"""

# KEYS: the notification's receipts. ARGV: event, at. -1: never sent; 0: seen before;
# else the target the receipt counts against.
RECORD_RECEIPT = """
local target = redis.call('HGET', KEYS[1], 'target')
if not target then return -1 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
return target
"""

# KEYS: outbox due and outbox items of each shard, in the order to claim them. ARGV: now,
# lease, limit. Items due by now are hidden for the lease; a claimer that dies lets them
# come back when it runs out. Answers the number of shards looked at, then the items.
CLAIM = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local claimed, looked = {}, 0
for k = 1, #KEYS, 2 do
  if #claimed >= limit then break end
  looked = looked + 1
  local ids = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1], 'LIMIT', 0, limit - #claimed)
  for _, id in ipairs(ids) do
    local item = redis.call('HGET', KEYS[k + 1], id)
    if item then
      redis.call('ZADD', KEYS[k], now + lease, id)
      table.insert(claimed, item)
    else
      redis.call('ZREM', KEYS[k], id)
    end
  end
end
table.insert(claimed, 1, looked)
return claimed
"""

# KEYS: outbox due, outbox items. ARGV: id, item, due at, outbox ttl. Not if erased
# meanwhile.
RETRY_LATER = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

# KEYS: spent counter. ARGV: budget. Spends one unit, never beyond the budget.
RESERVE_BUDGET = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1
"""

# KEYS: spent counter. Never below zero.
RELEASE_BUDGET = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
"""

# The catalogue's changes: each counts what it added, changed (by the fences' digests) and
# removed, moves the version and puts a record at the head of the history, kept to
# ARGV[2] records. KEYS: fences, digests, version, history. ARGV: at, kept, then the
# change's own.
_RECORD_CHANGE = """
local function record(added, changed, removed)
  local version = redis.call('INCR', KEYS[3])
  local stores = redis.call('HLEN', KEYS[1])
  local change = cjson.encode({version, tonumber(ARGV[1]), stores, added, changed, removed})
  redis.call('LPUSH', KEYS[4], change)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
  return version
end
"""

# ARGV[3..]: (id, fence, digest) of every fence of the new catalogue.
REPLACE_CATALOGUE = (
    _RECORD_CHANGE
    + """
local before, digests = {}, {}
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do before[id] = true end
local raw = redis.call('HGETALL', KEYS[2])
for i = 1, #raw, 2 do digests[raw[i]] = raw[i + 1] end
local added, changed, removed, seen = 0, 0, 0, {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if not before[id] then added = added + 1
  elseif digests[id] ~= ARGV[i + 2] then changed = changed + 1 end
  seen[id] = true
end
for id in pairs(before) do if not seen[id] then removed = removed + 1 end end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
return record(added, changed, removed)
"""
)

# ARGV[3..5]: id, fence, digest.
UPSERT_FENCE = (
    _RECORD_CHANGE
    + """
local existed = redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1
local same = redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[5]
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
if not existed then return record(1, 0, 0) end
return record(0, same and 0 or 1, 0)
"""
)

# ARGV[3]: id. 0 when there was no such fence (nothing changes).
DELETE_FENCE = (
    _RECORD_CHANGE
    + """
if redis.call('HDEL', KEYS[1], ARGV[3]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[3])
return record(0, 0, 1)
"""
)

# KEYS: per device its profile and eligible entries. ARGV: the entries kept per device,
# then per device: the number of entries, the TTL, and (entry at, entry) for each. Not
# for a device erased meanwhile; the TTL only ever grows (the longest window).
REMEMBER_ELIGIBLE = """
local kept, a = tonumber(ARGV[1]), 2
for k = 1, #KEYS, 2 do
  local n, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local first = a + 2
  a = first + 2 * n
  if redis.call('EXISTS', KEYS[k]) == 1 then
    for i = first, a - 1, 2 do redis.call('ZADD', KEYS[k + 1], ARGV[i], ARGV[i + 1]) end
    redis.call('ZREMRANGEBYRANK', KEYS[k + 1], 0, -kept - 1)
    if redis.call('TTL', KEYS[k + 1]) < ttl then redis.call('EXPIRE', KEYS[k + 1], ttl) end
  end
end
"""

# KEYS: a time bucket's counters. ARGV: ttl, then (name, amount) pairs to add.
ADD_COUNTS = """
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""

# KEYS: profile, state, pending. ARGV: profile, ttl. Refreshes the state's TTL with the
# profile's, and the pending ids' to at least as long (erasure reads them). Only an existing
# device: an erasure that won the race is not undone.
PUT_DEVICE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[3], ARGV[2]) end
return 1
"""


class RedisStore:
    def __init__(  # noqa: PLR0913 - the client, then its TTLs and lanes, each by name
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        prefix: str = "geofence",
        shards: int | None = None,
        device_ttl_s: int = 30 * 86_400,
        position_ttl_s: int = 86_400,
        dead_letter_ttl_s: int = DEAD_LETTER_TTL_S,
        stats_ttl_s: int = COUNTS_TTL_S,
        lanes: int = LANES,
        lane: Callable[[aioredis.Redis], ScriptLane] = Lane,
        timeout_s: float | None = None,
        wait_replicas: int = 0,
        max_in_flight: int = 64,
    ) -> None:
        """``lanes``: the script calls of every flush and batch go on one of as many
        connections kept aside, when one is free (``redis_lane``); with none, all go
        through the client. ``lane``: what makes each (``Lane``; the benchmarks pass
        another way to compare). ``timeout_s``: the bound on each call, all of it (None:
        the connection's own timeouts only). ``max_in_flight``: on a cluster, the store
        calls in flight at once; more wait, within their bound. ``shards``: how many the
        devices are spread over (None: 16 on a single Redis, 256 on a cluster; see
        ``shard_tags``). On a cluster there are no lanes: every script call goes to the
        primary of its slot. ``wait_replicas``: a write that puts notifications in the
        outbox is followed by ``WAIT`` for as many replicas (0: none), see
        ``save_then_load``."""
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self._closed = False
        # on a cluster, the calls in flight wait for a place here (its pools do not wait)
        self._gate = asyncio.Semaphore(max_in_flight) if self.cluster else None
        self.timeout_s = timeout_s
        self.wait_replicas = wait_replicas
        shards = shards or (CLUSTER_SHARDS if self.cluster else SHARDS)
        self.keys = Keys(prefix, shards)
        self.device_ttl_s = device_ttl_s
        self.position_ttl_s = position_ttl_s
        self.dead_letter_ttl_s = dead_letter_ttl_s
        self.stats_ttl_s = stats_ttl_s
        self._replace_catalogue = client.register_script(REPLACE_CATALOGUE)
        self._upsert_fence = client.register_script(UPSERT_FENCE)
        self._delete_fence = client.register_script(DELETE_FENCE)
        self._remember_eligible = client.register_script(REMEMBER_ELIGIBLE)
        self._save_states = client.register_script(SAVE_STATES)
        self._load_states = client.register_script(LOAD_STATES)
        self._put_device = client.register_script(PUT_DEVICE)
        self._erase_location = client.register_script(ERASE_LOCATION)
        self._erase_notifications = client.register_script(ERASE_NOTIFICATIONS)
        self._claim = client.register_script(CLAIM)
        self._retry_later = client.register_script(RETRY_LATER)
        self._reserve_budget = client.register_script(RESERVE_BUDGET)
        self._dead_letter = client.register_script(DEAD_LETTER)
        self._requeue = client.register_script(REQUEUE)
        self._record_receipt = client.register_script(RECORD_RECEIPT)
        self._release_budget = client.register_script(RELEASE_BUDGET)
        self._add_counts = client.register_script(ADD_COUNTS)
        self._next_shard = 0
        self._lanes = (
            [] if isinstance(client, RedisCluster) else [lane(client) for _ in range(lanes)]
        )
        # whether every lane bounds its calls as this store bounds its own (``Lane``)
        self._lanes_bound = timeout_s is not None and all(
            isinstance(one, Lane) and one.timeout_s == timeout_s for one in self._lanes
        )

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 2.0, max_connections: int = 64, **kwargs: Any
    ) -> RedisStore:
        """A store on its own pool of at most ``max_connections``. Past that, a command
        waits for a free connection, within the call's ``timeout_s`` (then
        BackendUnavailable, a 503) rather than failing at once: a burst queues briefly
        instead of erroring. No command is retried (``Retry`` with 0 retries): a pooled
        connection that died meanwhile (Redis restarted) is found closed when it is taken
        from the pool, before anything is sent on it, and replaced there."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            retry=Retry(NoBackoff(), retries=0),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            connection_class=HiredisPackedConnection,
        )
        return cls(aioredis.Redis.from_pool(pool), timeout_s=timeout_s, **kwargs)

    @classmethod
    def on_cluster(
        cls, url: str, *, timeout_s: float = 2.0, max_connections: int = 64, **kwargs: Any
    ) -> RedisStore:
        """A store on a Redis Cluster (``cluster_client``). redis-py's cluster pools fail
        at once when full rather than wait, so the wait is the store's: at most
        ``max_connections`` store calls in flight, more wait within their ``timeout_s``
        (then BackendUnavailable, a 503). A call split by shard takes a connection per
        shard it touches, so a node's pool is left unbounded; it keeps what a peak opened."""
        client = cluster_client(url, timeout_s=timeout_s, max_connections=2**31 - 1)
        return cls(client, timeout_s=timeout_s, max_in_flight=max_connections, **kwargs)

    async def claim_layout(self) -> int:
        """The number of shards the stored data is laid out in: this store's, recorded now
        if none was (the first start), else the one recorded, which the caller compares
        with its own (another count would read and write other keys)."""
        async with self._bounded():
            await self.client.set(self.keys.layout, self.keys.shards, nx=True)
            return int(await self.client.get(self.keys.layout) or 0)

    def _bounded(self) -> _guard:
        """The bound of one store call (``_guard``)."""
        return self._guarded(self.timeout_s)

    def _guarded(self, timeout_s: float | None, *, gated: bool = True) -> _guard:
        """``_guard`` for a call of this store, refused once the store is closed: redis-py's
        clients open new connections for a call after ``aclose``, which nothing would
        close again (a task still polling at shutdown, e.g. the catalogue's watch)."""
        if self._closed:
            raise BackendUnavailable("state store closed")
        return _guard(timeout_s, self._gate if gated else None)

    def _bounded_unless_on_lane(self) -> _guard:
        """``_bounded``, but for a call a lane will take (``_scripts``): it is bounded
        there, by the same ``timeout_s`` over all of it, connecting included, so only the
        guard's turning errors into BackendUnavailable is kept here (a second bound
        costs a timer each flush). The lane is known free now, and nothing is awaited
        before ``_scripts`` takes it."""
        on_lane = self._lanes_bound and any(not lane.busy for lane in self._lanes)
        return self._guarded(None if on_lane else self.timeout_s)

    async def check(self) -> None:
        async with self._bounded():
            await self.client.ping()

    async def persistence(self) -> Persistence:
        """From ``CONFIG GET appendonly`` and ``save``; "unknown" where CONFIG is refused
        (managed Redis often renames or forbids it). On a cluster, the weakest of its
        primaries' (a failover makes a replica a primary: theirs count once they are)."""
        async with self._bounded():
            if isinstance(self.client, RedisCluster):
                primaries = self.client.get_primaries()
                found = await _all(self._persistence_of(node) for node in primaries)
                return min(found, key=_PERSISTENCE_RANK.index)
            return await self._persistence_of(None)

    async def _persistence_of(self, node: ClusterNode | None) -> Persistence:
        """One server's persistence (``node`` of the cluster, or the single Redis)."""
        try:
            if node is None:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.config_get("appendonly")
                    pipe.config_get("save")
                    appendonly, save = await pipe.execute()
            else:
                appendonly = await self.client.config_get("appendonly", target_nodes=node)
                save = await self.client.config_get("save", target_nodes=node)
        except rexc.ResponseError:
            return "unknown"
        return persistence_of(appendonly.get("appendonly"), save.get("save"))

    async def close(self) -> None:
        """Close every connection; a call after this answers BackendUnavailable."""
        self._closed = True
        for lane in self._lanes:
            await lane.close()
        await self.client.aclose()

    # the catalogue
    async def catalogue_version(self) -> int:
        async with self._bounded():
            return int(await self.client.get(self.keys.catalogue_version) or 0)

    async def load_catalogue(self) -> Catalogue:
        """One version of the catalogue, read a page at a time (``HSCAN``), each page a
        call of its own within the store's bound: a catalogue of a million fences is over
        a gigabyte, which one ``HGETALL`` could not bring within a Redis timeout (the
        service could not start). Every change moves the version in the script that makes
        it, so a read with the same version before and after it saw that one version;
        after a change meanwhile the catalogue is read again."""
        for _ in range(CATALOGUE_READS):
            version = await self.catalogue_version()
            fences = await self._fences()
            if await self.catalogue_version() == version:
                return Catalogue(version=version, fences=tuple(fences[k] for k in sorted(fences)))
        raise BackendUnavailable("state store unavailable: the catalogue kept changing")

    async def load_fence(self, fence_id: str) -> Fence | None:
        async with self._bounded():
            raw = await self.client.hget(self.keys.fences, fence_id)
        return None if raw is None else _decode(raw, Fence)

    async def _fences(self) -> dict[str, Fence]:
        """Every stored fence by id, as ``HSCAN`` pages them (a field it gives twice, once)."""
        found: dict[str, Fence] = {}
        cursor = 0
        while True:
            async with self._bounded():
                cursor, page = await self.client.hscan(
                    self.keys.fences, cursor, count=CATALOGUE_PAGE
                )
            for raw in cast("dict[Any, bytes]", page).values():  # a list only with no_values
                fence = _decode(raw, Fence)
                found[fence.id] = fence
            if not cursor:
                return found

    async def replace_catalogue(self, fences: Sequence[Fence]) -> int:
        args: list[Arg] = []
        for fence in fences:
            args += _with_digest(fence)
        return await self._change(self._replace_catalogue, args)

    async def upsert_fence(self, fence: Fence) -> int:
        return await self._change(self._upsert_fence, _with_digest(fence))

    async def delete_fence(self, fence_id: str) -> int | None:
        return await self._change(self._delete_fence, [fence_id]) or None

    async def _change(self, script: AsyncScript, args: Sequence[Arg]) -> int:
        """A catalogue change, recorded in the history; the new version (0: none)."""
        k = self.keys
        keys = [k.fences, k.digests, k.catalogue_version, k.history]
        async with self._bounded():
            version = await script(keys=keys, args=[time.time(), HISTORY_KEPT, *args])
        return int(version)

    async def catalogue_history(self, limit: int) -> list[CatalogueChange]:
        async with self._bounded():
            raw = await self.client.lrange(self.keys.history, 0, limit - 1)
        return [_change_of(msgspec.json.decode(r)) for r in raw]

    # devices
    async def create_device(self, profile: DeviceProfile) -> bool:
        key = self.keys.profile(profile.ref)
        async with self._bounded():
            created = await self.client.set(key, _encode(profile), nx=True, ex=self.device_ttl_s)
        return bool(created)

    async def get_device(self, ref: str) -> DeviceProfile | None:
        async with self._bounded():
            raw = await self.client.get(self.keys.profile(ref))
        return None if raw is None else _decode(raw, DeviceProfile)

    async def get_devices(self, refs: Sequence[str]) -> list[DeviceProfile | None]:
        if not refs:
            return []
        async with self._bounded():
            if self.cluster:
                raws = await self._profiles_by_shard(refs)
            else:
                raws = await self.client.mget([self.keys.profile(ref) for ref in refs])
        return [None if raw is None else _decode(raw, DeviceProfile) for raw in raws]

    async def _profiles_by_shard(self, refs: Sequence[str]) -> list[Any]:
        """On a cluster: an MGET per shard (of one slot: redis-py's cluster pipeline
        refuses its ``mget``, not the command), all in one cluster pipeline."""
        groups = list(self._groups(refs).values())
        async with self.client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.execute_command("MGET", *(self.keys.profile(refs[i]) for i in group))
            return _scattered(groups, await pipe.execute(), len(refs))

    async def put_device(self, profile: DeviceProfile) -> bool:
        ref = profile.ref
        keys = [self.keys.profile(ref), self.keys.state(ref), self.keys.pending(ref)]
        async with self._bounded():
            written = await self._put_device(keys=keys, args=[_encode(profile), self.device_ttl_s])
        return bool(written)

    async def erase_device(self, ref: str) -> None:
        k = self.keys
        own = [k.profile(ref), k.state(ref), k.fix(ref), k.eligible(ref)]
        await self._erase(ref, own)

    async def erase_notifications(self, ref: str) -> None:
        await self._erase(ref, [self.keys.eligible(ref)])

    async def _erase(self, ref: str, own: Sequence[str]) -> None:
        """The device's notifications (outbox and dead letters) and ``own`` keys, in one
        script naming every key it deletes; a dead letter made after the pending ids were
        read (rare) is deleted after it."""
        shard = self.keys.shard_of(ref)
        async with self._bounded():
            ids = [_text(i) for i in await self.client.smembers(self.keys.pending(ref))]
            letters = [self.keys.letter(shard, i) for i in ids]
            keys = [*self.keys.notifications_of(ref), *own, *letters]
            missed = await self._erase_notifications(keys=keys, args=[len(own), *ids])
            if missed:
                await self.client.delete(*(self.keys.letter(shard, _text(i)) for i in missed))

    async def erase_location(self, ref: str) -> None:
        async with self._bounded():
            await self._erase_location(keys=self.keys.state_and_fix(ref))

    async def device_keys(self, ref: str) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        # a SCAN of the keyspace: each command under its own timeout
        async with self._guarded(None, gated=False):
            async for key in self.client.scan_iter(match=_escape(self.keys.device(ref)) + ":*"):
                ttl = await self.client.ttl(key)
                name = key.decode() if isinstance(key, bytes) else str(key)
                found[name] = float(ttl) if ttl >= 0 else None
        return found

    # visit state
    async def load_state(self, ref: str) -> StoredState:
        [stored] = await self.load_states([ref])
        return stored

    async def load_states(self, refs: Sequence[str]) -> list[StoredState]:
        if not refs:
            return []
        async with self._bounded():
            if self.cluster:
                return await self._by_shard(refs, self._load_states_call, _states)
            return _states(await self._script(*self._load_states_call(refs)))

    def _load_states_call(self, refs: Sequence[str]) -> Call:
        keys = [key for ref in refs for key in self.keys.state_and_fix(ref)]
        return self._load_states, keys, [2]

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        _, loaded = await self.save_then_load([], refs)
        return loaded

    def _load_devices_call(self, refs: Sequence[str]) -> Call:
        keys = [k for ref in refs for k in [*self.keys.state_and_fix(ref), self.keys.profile(ref)]]
        return self._load_states, keys, [3]

    async def save_state(
        self,
        ref: str,
        state: DeviceState,
        version: int,
        *,
        ledger: Ledger | None = None,
        outbox: Sequence[Notification] = (),
    ) -> bool:
        write = StateWrite(ref=ref, state=state, version=version, ledger=ledger, outbox=outbox)
        [saved] = await self.save_states([write])
        if saved == "gone":
            raise NotFound("the device was erased")
        return saved == "written"

    async def save_states(self, writes: Sequence[StateWrite]) -> list[Saved]:
        saved, _ = await self.save_then_load(writes, [])
        return saved

    def _save_states_call(self, writes: Sequence[StateWrite]) -> Call:
        keys: list[str] = []
        args: list[Arg] = [self.device_ttl_s, self.position_ttl_s, self.dead_letter_ttl_s]
        for w in writes:
            keys += self.keys.compare_and_set(w.ref)
            fix = b"" if w.state.last_fix is None else _encode(w.state.last_fix)
            body = _encode(msgspec.structs.replace(w.state, last_fix=None))
            ledger = b"" if w.ledger is None else _encode(w.ledger)
            args += [w.version, body, fix, ledger, len(w.outbox)]
            for n in w.outbox:
                args += [n.notification_id, _encode(OutboxItem(notification=n)), n.created_at]
        return self._save_states, keys, args

    async def save_then_load(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        """With ``wait_replicas``, writes that put notifications in the outbox are
        followed by ``WAIT`` on the connection they went on (WAIT counts that
        connection's writes; on a cluster, each shard's on its primary's): fewer
        replicas than asked acknowledging them within half the timeout is
        BackendUnavailable (a 503; the client resends the same ping, which is ``stale``
        if the write survives and applied again if a failover lost it), so that an
        acknowledged notification is on a replica as well."""
        if self.cluster:
            async with self._bounded():
                return await self._save_then_load_by_shard(writes, refs)
        async with self._bounded_unless_on_lane():
            return await self._save_then_load(writes, refs)

    async def _save_then_load(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        calls = [self._save_states_call(writes)] if writes else []
        calls += [self._load_devices_call(refs)] if refs else []
        wait = self._wait_for(writes)
        replies = await self._scripts(calls, wait)
        if wait is not None:
            _check_replicas(replies.pop(), wait)
        return _saved(replies[0]) if writes else [], _devices(replies[-1]) if refs else []

    def _wait_for(self, writes: Sequence[StateWrite]) -> Wait | None:
        if self.wait_replicas <= 0 or not any(w.outbox for w in writes):
            return None
        timeout_s = 1.0 if self.timeout_s is None else self.timeout_s
        return self.wait_replicas, max(1, int(timeout_s * 500))

    async def _save_then_load_by_shard(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        """On a cluster: a write call per shard, then a read call per shard, all in one
        cluster pipeline (``_on_nodes``: one round trip to each primary, concurrently),
        so each read comes after its shard's write on the same connection and sees it. A
        shard that fails fails the call, as a timeout does: the writes of others may have
        landed (so their budgets stay spent: at worst underspent, never overspent)."""
        saves = list(self._groups([w.ref for w in writes]).values())
        loads = list(self._groups(refs).values())
        shard_writes = [[writes[i] for i in group] for group in saves]
        calls = [self._save_states_call(own) for own in shard_writes]
        calls += [self._load_devices_call([refs[i] for i in group]) for group in loads]
        wait = self._wait_for(writes)
        waited = [n for n, own in enumerate(shard_writes) if any(w.outbox for w in own)]
        replies = await self._on_nodes(calls, writes=len(saves), wait=wait, waited=waited)
        saved = [_saved(reply) for reply in replies[: len(saves)]]
        loaded = [_devices(reply) for reply in replies[len(saves) :]]
        return _scattered(saves, saved, len(writes)), _scattered(loads, loaded, len(refs))

    async def _on_nodes(
        self,
        calls: Sequence[Call],
        *,
        writes: int = 0,
        wait: Wait | None = None,
        waited: Sequence[int] = (),
    ) -> list[Any]:
        """On a cluster: script calls of many slots in one cluster pipeline, which sends
        each primary its calls in order on one connection, the primaries concurrently (one
        round trip and one await per primary, not per call). The first ``writes`` calls
        write, the others read. With ``wait``, a ``WAIT`` goes after the calls on the
        primary of each call in ``waited`` (it counts all the connection's writes before
        it): fewer replicas than asked is BackendUnavailable.

        A cluster pipeline does not load scripts: a call the server answered NOSCRIPT ran
        nothing, so its script is loaded (on every primary) and it is sent again; after a
        write sent again, the reads of its slot go again too (a read must see the write
        before it), and WAIT on its primary. Nothing else is sent twice."""
        waits: dict[str, ClusterNode] = {}
        if wait is not None:
            await self._topology()
            for n in waited:
                node = self._node_of(calls[n][1][0])
                waits[node.name] = node
        replies, acks = await self._pipelined(calls, wait, list(waits.values()))
        missed = [n for n, reply in enumerate(replies) if isinstance(reply, rexc.NoScriptError)]
        if missed:
            acks |= await self._again(calls, replies, missed, writes, wait, waits)
        for reply in replies:
            if isinstance(reply, rexc.NoScriptError):  # not even after loading it
                raise BackendUnavailable("state store unavailable: a script was not loaded")
            if isinstance(reply, Exception):
                raise reply
        if wait is not None:
            for acknowledged in acks.values():
                _check_replicas(acknowledged, wait)
        return replies

    async def _again(
        self,
        calls: Sequence[Call],
        replies: list[Any],
        missed: Sequence[int],
        writes: int,
        wait: Wait | None,
        waits: dict[str, ClusterNode],
    ) -> dict[str, int]:
        """``_on_nodes``' calls answered NOSCRIPT (``missed``) sent again once their
        scripts are loaded, with the reads of the slot of a write among them and WAIT on
        its primary; their answers put in ``replies``; the new WAITs' counts."""
        for script in {calls[n][0].sha: calls[n][0] for n in missed}.values():
            await self.client.script_load(script.script)
        slots = [key_slot(keys[0].encode()) for _, keys, _ in calls]
        stale = {slots[n] for n in missed if n < writes}  # a write that never ran
        again = [n for n in range(len(calls)) if n in missed or (n >= writes and slots[n] in stale)]
        rewaits = {self._node_of(calls[n][1][0]).name for n in missed if n < writes and waits}
        answers, acks = await self._pipelined(
            [calls[n] for n in again],
            wait,
            [node for name, node in waits.items() if name in rewaits],
        )
        for n, answer in zip(again, answers, strict=True):
            replies[n] = answer
        return acks

    async def _topology(self) -> None:
        """The cluster's slots known (the client learns them at its first command)."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()

    async def _pipelined(
        self, calls: Sequence[Call], wait: Wait | None, waits: Sequence[ClusterNode]
    ) -> tuple[list[Any], dict[str, int]]:
        """One cluster pipeline of ``calls``, then WAIT on each of the nodes ``waits``:
        the calls' replies (errors as they came), and each node's count of replicas (0
        for a WAIT refused: no replica to count on)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if wait is not None:
                for node in waits:
                    pipe.execute_command("WAIT", *wait, target_nodes=node)
            replies = list(await pipe.execute(raise_on_error=False))
        acks = {
            node.name: 0 if isinstance(ack, Exception) else int(ack)
            for node, ack in zip(waits if wait else [], replies[len(calls) :], strict=True)
        }
        return replies[: len(calls)], acks

    def _node_of(self, key: str) -> ClusterNode:
        """The primary of ``key``'s slot, as the client knows it now."""
        node = self.client.get_node_from_key(key) if isinstance(self.client, RedisCluster) else None
        if node is None:
            raise rexc.SlotNotCoveredError(f"no primary known for the slot of {key!r}")
        return node

    def _groups(self, refs: Sequence[str]) -> dict[int, list[int]]:
        """The positions of ``refs`` by shard."""
        groups: dict[int, list[int]] = {}
        for i, ref in enumerate(refs):
            groups.setdefault(self.keys.shard_of(ref), []).append(i)
        return groups

    async def _by_shard(
        self,
        refs: Sequence[str],
        call_of: Callable[[Sequence[str]], Call],
        answers: Callable[[Any], list[T]],
    ) -> list[T]:
        """On a cluster: the script call ``call_of`` makes for the refs of each shard,
        reads all, in one pipeline (``_on_nodes``); each reply's ``answers`` in the
        order of ``refs``."""
        groups = list(self._groups(refs).values())
        calls = [call_of([refs[i] for i in group]) for group in groups]
        replies = await self._on_nodes(calls)
        return _scattered(groups, [answers(reply) for reply in replies], len(refs))

    async def _script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        [reply] = await self._scripts([(script, keys, args)])
        return reply

    async def _scripts(self, calls: Sequence[Call], wait: Wait | None = None) -> list[Any]:
        """The calls made on every flush and batch, in order: together on a lane that is
        free, else one after the other through the client (see ``redis_lane``); then,
        with ``wait``, WAIT on the connection of the first call (the write), its reply
        last (an error answered to it: 0 replicas)."""
        if not calls:
            return []
        lane = next((lane for lane in self._lanes if not lane.busy), None)
        if lane is not None:
            return await lane.run_all(calls, wait=wait)
        if wait is None:
            return [await script(keys=keys, args=args) for script, keys, args in calls]
        return await self._scripts_then_wait(calls, wait)

    async def _scripts_then_wait(self, calls: Sequence[Call], wait: Wait) -> list[Any]:
        """On a single Redis, when every lane is busy: the calls and WAIT in one pipeline,
        one connection (on a cluster, ``_on_nodes`` sends WAIT to each primary written).
        A script the server did not know ran nothing: the write's is loaded and the whole
        sent again; a later call's (a read) is sent again alone, through the client."""
        replies = await self._pipeline_then_wait(calls, wait)
        if isinstance(replies[0], rexc.NoScriptError):
            for script, _, _ in calls:
                await self.client.script_load(script.script)
            replies = await self._pipeline_then_wait(calls, wait)
        for n, (script, keys, args) in enumerate(calls):
            if isinstance(replies[n], rexc.NoScriptError) and n:
                replies[n] = await script(keys=keys, args=args)
            elif isinstance(replies[n], Exception):
                raise replies[n]
        if isinstance(replies[-1], Exception):  # WAIT refused: no replica to count on
            replies[-1] = 0
        return replies

    async def _pipeline_then_wait(self, calls: Sequence[Call], wait: Wait) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", *wait)
            return list(await pipe.execute(raise_on_error=False))

    # offers
    async def put_offer(self, offer: Offer) -> bool:
        async with self._bounded():
            return bool(await self.client.hset(self.keys.offers, offer.id, _encode(offer)))

    async def get_offer(self, offer_id: str) -> Offer | None:
        async with self._bounded():
            raw = await self.client.hget(self.keys.offers, offer_id)
        return None if raw is None else _decode(raw, Offer)

    async def list_offers(self) -> list[Offer]:
        async with self._bounded():
            raw = await self.client.hgetall(self.keys.offers)
        return sorted((_decode(v, Offer) for v in raw.values()), key=lambda o: o.id)

    async def delete_offer(self, offer_id: str) -> bool:
        async with self._bounded():
            await self.client.delete(self.keys.spent(offer_id))
            return bool(await self.client.hdel(self.keys.offers, offer_id))

    async def budget_spent(self, offer_ids: Sequence[str]) -> dict[str, int]:
        if not offer_ids:
            return {}
        async with (
            self._bounded(),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for offer_id in offer_ids:
                pipe.get(self.keys.spent(offer_id))
            spent = await pipe.execute()
        return {k: int(v or 0) for k, v in zip(offer_ids, spent, strict=True)}

    async def reserve_budget(self, offer_id: str, budget: int) -> bool:
        async with self._bounded():
            return bool(await self._reserve_budget(keys=[self.keys.spent(offer_id)], args=[budget]))

    async def release_budget(self, offer_id: str) -> None:
        async with self._bounded():
            await self._release_budget(keys=[self.keys.spent(offer_id)])

    # the outbox
    async def claim_outbox(self, now: float, lease_s: float, limit: int) -> list[OutboxItem]:
        """Claim from the shards in turn, starting after the last one served: on a single
        Redis in one call over every shard, on a cluster ``_claim_by_shard``."""
        shards = self.keys.shards
        order = [(self._next_shard + step) % shards for step in range(shards)]
        async with self._bounded():
            if self.cluster:
                raw = await self._claim_by_shard(order, now, lease_s, limit)
            else:
                keys = [key for shard in order for key in self.keys.outbox(shard)]
                looked, *raw = await self._claim(keys=keys, args=[now, lease_s, limit])
                if looked:
                    self._next_shard = (order[looked - 1] + 1) % shards
        return [_decode(r, OutboxItem) for r in raw]

    async def _claim_by_shard(
        self, order: Sequence[int], now: float, lease_s: float, limit: int
    ) -> list[Any]:
        """On a cluster a claim script touches one shard (one slot). Which shards have an
        item due is asked first, of all of them, in one cluster pipeline of a
        ``ZRANGEBYSCORE ... LIMIT 0 1`` each (one round trip per primary, concurrently),
        so an idle poll costs no script call at all whatever the shards (256: 256 cheap
        reads in one round trip to each primary). Then the first ``limit`` shards with
        items due, in turn from the last one served, are claimed from, one script each
        in one cluster pipeline (``_on_nodes``), the limit split between them (never more
        than ``limit`` items claimed in all). Several workers share the shards without a
        lock: a shard's claim is atomic, and each worker starts where its own last claim
        ended."""
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in order:
                pipe.zrangebyscore(self.keys.outbox(shard)[0], "-inf", now, start=0, num=1)
            due = [shard for shard, ids in zip(order, await pipe.execute(), strict=True) if ids]
        taken = due[:limit]
        if not taken:
            return []
        share, extra = divmod(limit, len(taken))
        calls: list[Call] = [
            (self._claim, self.keys.outbox(shard), [now, lease_s, share + (1 if k < extra else 0)])
            for k, shard in enumerate(taken)
        ]
        replies = await self._on_nodes(calls, writes=len(calls))
        self._next_shard = (taken[-1] + 1) % self.keys.shards
        return [raw for reply in replies for raw in reply[1:]]

    async def retry_later(self, item: OutboxItem, at: float) -> None:
        keys = self.keys.outbox(self.keys.shard_of(item.device_ref))
        args: list[Arg] = [item.id, _encode(item.as_kept()), at, self.dead_letter_ttl_s]
        async with self._bounded():
            await self._retry_later(keys=keys, args=args)

    async def settle(self, item: OutboxItem) -> None:
        pending, due, items = self.keys.device_outbox(item.device_ref)
        async with (
            self._bounded(),
            self.client.pipeline(transaction=True) as pipe,
        ):
            pipe.zrem(due, item.id)
            pipe.hdel(items, item.id)
            pipe.srem(pending, item.id)
            await pipe.execute()

    async def outbox_depth(self) -> int:
        async with (
            self._bounded(),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for shard in range(self.keys.shards):
                pipe.zcard(self.keys.outbox(shard)[0])
            return sum(await pipe.execute())

    async def dead_letter(self, item: OutboxItem, reason: str, at: float) -> None:
        shard = self.keys.shard_of(item.device_ref)
        pending, due, items = self.keys.device_outbox(item.device_ref)
        keys = [due, items, pending, self.keys.letter(shard, item.id), self.keys.dead(shard)]
        letter = _encode(DeadLetter(item=item.as_kept(), reason=reason, at=at))
        args: list[Arg] = [item.id, letter, at, self.dead_letter_ttl_s]
        async with self._bounded():
            await self._dead_letter(keys=keys, args=args)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async with self._bounded():
            for shard in range(self.keys.shards):
                ids: list[Any] = await self.client.zrevrange(self.keys.dead(shard), 0, limit - 1)
                names = [self.keys.letter(shard, _text(i)) for i in ids]
                raw = await self.client.mget(names) if names else []
                found += [_decode(r, DeadLetter) for r in raw if r is not None]
        found.sort(key=lambda d: (-d.at, d.item.id))
        return found[:limit]

    async def requeue(self, notification_id: str, at: float) -> DeadLetter | None:
        async with self._bounded():
            async with self.client.pipeline(transaction=False) as pipe:
                for shard in range(self.keys.shards):
                    pipe.get(self.keys.letter(shard, notification_id))
                found = [(n, r) for n, r in enumerate(await pipe.execute()) if r is not None]
            if not found:
                return None
            shard, raw = found[0]
            letter = _decode(raw, DeadLetter)
            if letter.item.notification.expires_at <= at:
                return letter
            keys = [self.keys.letter(shard, notification_id), self.keys.dead(shard)]
            keys += self.keys.outbox(shard)
            args = [notification_id, raw, _encode(letter.item), at, self.dead_letter_ttl_s]
            moved = await self._requeue(keys=keys, args=args)
        return letter if moved else None

    # receipts
    async def expect_receipts(self, *receipts: Receipt) -> None:
        # each receipt its own slot: one transaction on a single Redis only
        transaction = not self.cluster
        async with self._bounded(), self.client.pipeline(transaction) as pipe:
            for receipt in receipts:
                key = self.keys.receipts(receipt.notification_id)
                pipe.hsetnx(key, "target", _encode(receipt))
                pipe.expire(key, RECEIPTS_TTL_S)
            await pipe.execute()

    async def record_receipt(self, notification_id: str, event: str, at: float) -> Receipt | None:
        keys = [self.keys.receipts(notification_id)]
        async with self._bounded():
            result = await self._record_receipt(keys=keys, args=[event, at])
        if result == -1:
            raise NotFound(f"No notification {notification_id!r} was sent.")
        return None if result == 0 else _decode(result, Receipt)

    # aggregate counters
    async def add_counts(self, bucket: int, counts: dict[str, int]) -> None:
        """One script call (on a lane when one is free): every batch with entries adds."""
        args: list[Arg] = [self.stats_ttl_s]
        for name, n in counts.items():
            args += [name, n]
        async with self._bounded():
            await self._script(self._add_counts, [self.keys.counts(bucket)], args)

    async def read_counts(self, buckets: Sequence[int]) -> dict[str, int]:
        return summed((await self.read_buckets(buckets)).values())

    async def read_buckets(self, buckets: Sequence[int]) -> dict[int, dict[str, int]]:
        async with (
            self._bounded(),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for bucket in buckets:
                pipe.hgetall(self.keys.counts(bucket))
            tables = await pipe.execute()
        return {
            bucket: {_text(name): int(n) for name, n in table.items()}
            for bucket, table in zip(buckets, tables, strict=True)
            if table
        }

    # attribution
    async def remember_eligible(self, eligible: Sequence[tuple[str, Eligible]]) -> None:
        by_device: dict[str, list[Eligible]] = {}
        for ref, entry in eligible:
            by_device.setdefault(ref, []).append(entry)
        if not by_device:
            return
        async with self._bounded():
            if self.cluster:
                refs = list(by_device)
                groups = self._groups(refs).values()
                parts = ({refs[i]: by_device[refs[i]] for i in group} for group in groups)
                calls = [self._remember_call(part) for part in parts]
                await self._on_nodes(calls, writes=len(calls))
            else:
                await self._script(*self._remember_call(by_device))

    def _remember_call(self, by_device: dict[str, list[Eligible]]) -> Call:
        keys: list[str] = []
        args: list[Arg] = [MAX_KEPT]
        for ref, entries in by_device.items():
            keys += [self.keys.profile(ref), self.keys.eligible(ref)]
            args += [len(entries), max(_whole_s(e.window_s) for e in entries)]
            for e in entries:
                args += [e.at, _encode(e)]
        return self._remember_eligible, keys, args

    async def take_eligible(self, ref: str, at: float, store_id: str | None) -> Eligible | None:
        key = self.keys.eligible(ref)
        async with self._bounded():
            raw = await self.client.zrangebyscore(key, "-inf", at)
            kept = {_decode(r, Eligible): r for r in raw if isinstance(r, bytes)}
            taken = attributed(kept, at, store_id)
            if taken is None:
                return None
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zrem(key, kept[taken])
                pipe.zremrangebyscore(key, "-inf", taken.at)
                removed, _ = await pipe.execute()
        return taken if removed else None  # 0: another conversion took it first


def cluster_client(url: str, *, timeout_s: float, max_connections: int) -> RedisCluster:
    """A ``RedisCluster`` from ``redis+cluster://[user:password@]host:port[,host:port...]``
    (``rediss+cluster://`` for TLS; the query takes redis-py's URL options, as
    ``ssl_cert_reqs``): every node listed is a startup node; the client learns the others.

    No command is retried once it may have reached a server (``Retry`` with 0 retries): a
    script that adds or claims would apply twice. A MOVED or ASK redirection is not a
    retry (the server said the slot is elsewhere, nothing ran): it is followed. A
    connection error marks the topology for a refresh, which the next command runs: after
    a failover the client finds the new primary by itself. Slots without a primary answer
    as unavailable rather than failing the whole client (no full coverage required).
    ``max_connections`` is per node.
    """
    scheme, rest = url.split("://", 1)
    auth, _, hosts = rest.rpartition("@")
    where, _, query = hosts.partition("?")
    nodes = [_node(n) for n in where.split("/", 1)[0].split(",") if n]
    if not nodes:
        raise ValueError("no host:port in the URL")
    base = "rediss" if scheme.lower().startswith("rediss") else "redis"
    first = f"{base}://{auth + '@' if auth else ''}{nodes[0].host}:{nodes[0].port}"
    single = first + (f"/?{query}" if query else "")
    options = parse_url(single)  # type: ignore[no-untyped-call]
    for name in ("host", "port", "db", "connection_class"):
        options.pop(name, None)
    return RedisCluster(
        startup_nodes=nodes,
        ssl=base == "rediss",
        retry=Retry(NoBackoff(), retries=0),
        require_full_coverage=False,
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        **options,
    )


def _node(text: str) -> ClusterNode:
    parsed = urllib.parse.urlsplit(f"//{text}")
    return ClusterNode(parsed.hostname or "localhost", parsed.port or 6379)


class _guard:  # noqa: N801 - called like a function, as contextlib.suppress is
    """Turn every way of Redis being unreachable into the domain's BackendUnavailable, and
    bound the whole call (a connection from the pool, connecting, sending, the reply) by
    ``timeout_s``. A class, not ``asynccontextmanager``: every store call passes here, and
    a generator per call was about 1% of a worker's CPU. ``gate`` (on a cluster): a place
    among the calls in flight, waited for within the bound."""

    __slots__ = ("_bound", "_gate", "_held")

    def __init__(self, timeout_s: float | None, gate: asyncio.Semaphore | None = None) -> None:
        self._bound = None if timeout_s is None else asyncio.timeout(timeout_s)
        self._gate = gate
        self._held = False

    async def __aenter__(self) -> None:
        if self._bound is not None:
            await self._bound.__aenter__()
        if self._gate is not None:
            try:
                await self._gate.acquire()
            except BaseException as e:  # the bound ran out while waiting
                await self.__aexit__(type(e), e, e.__traceback__)
                raise
            self._held = True

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._held:
            self._held = False
            self._gate.release()  # type: ignore[union-attr]
        if self._bound is not None:
            try:
                await self._bound.__aexit__(kind, error, tb)
            except TimeoutError as e:  # the bound ran out: the call was cancelled
                raise BackendUnavailable("state store unavailable: no answer in time") from e
        if isinstance(error, _REDIS_DOWN):
            detail = f"state store unavailable: {type(error).__name__}"
            raise BackendUnavailable(detail) from error


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Every call's answer, run concurrently; the first failure raised once all are done
    (none is left running unseen, to write after the store call has answered)."""
    replies = await asyncio.gather(*calls, return_exceptions=True)
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies  # type: ignore[return-value]


def _scattered(groups: Sequence[Sequence[int]], replies: Sequence[Any], n: int) -> list[Any]:
    """The answers of each group's reply (one per position in the group) put back at
    their positions among ``n``."""
    out: list[Any] = [None] * n
    for group, reply in zip(groups, replies, strict=True):
        for i, answer in zip(group, reply, strict=True):
            out[i] = answer
    return out


def _states(reply: Sequence[Any]) -> list[StoredState]:
    """``LOAD_STATES``' answer without the profiles: each device's state."""
    return [
        _stored(version or None, state or None, ledger or None, fix or None)
        for version, state, ledger, fix in zip(*[iter(reply)] * 4, strict=True)
    ]


_PERSISTENCE_RANK: tuple[Persistence, ...] = ("unknown", "off", "rdb", "aof", "memory")


def _check_replicas(acknowledged: int, wait: Wait) -> None:
    replicas, timeout_ms = wait
    if acknowledged < replicas:
        raise BackendUnavailable(
            f"state store unavailable: {acknowledged} of {replicas} replicas"
            f" acknowledged the write within {timeout_ms} ms"
        )


_encoder = msgspec.msgpack.Encoder()
_SAVED: dict[int, Saved] = {1: "written", 0: "conflict", -1: "gone"}


def _saved(reply: Sequence[Any]) -> list[Saved]:
    """``SAVE_STATES``' answer: each write's verdict."""
    return [_SAVED[int(answer)] for answer in reply]


def _devices(reply: Sequence[Any]) -> list[tuple[DeviceProfile | None, StoredState]]:
    """``LOAD_STATES``' answer with the profiles: each device's profile and state."""
    return [
        (
            None if profile is None else _decode(profile, DeviceProfile),
            _stored(version or None, state or None, ledger or None, fix or None),
        )
        for version, state, ledger, fix, profile in zip(*[iter(reply)] * 5, strict=True)
    ]


def _stored(
    version: bytes | None, raw_state: bytes | None, raw_ledger: bytes | None, raw_fix: bytes | None
) -> StoredState:
    """A device's state from its state hash's fields (version, state, ledger) and its fix."""
    state = DeviceState() if raw_state is None else _decode(raw_state, DeviceState)
    ledger = Ledger() if raw_ledger is None else _decode(raw_ledger, Ledger)
    fix = None if raw_fix is None else _decode(raw_fix, Fix)
    state = msgspec.structs.replace(state, last_fix=fix)
    return StoredState(state=state, version=int(version or 0), ledger=ledger)


def _encode(value: Any) -> bytes:
    return _encoder.encode(value)


def _decode(raw: bytes | str, kind: type[T]) -> T:
    data = raw.encode() if isinstance(raw, str) else raw
    return msgspec.msgpack.decode(data, type=kind)


def persistence_of(appendonly: Any, save: Any) -> Persistence:
    """The persistence a Redis runs with, from its ``appendonly`` and ``save`` settings."""
    if _text(appendonly or "") == "yes":
        return "aof"
    return "rdb" if _text(save or "").strip() else "off"


def _with_digest(fence: Fence) -> list[Arg]:
    """A fence as the catalogue scripts take it: its id, itself and its digest."""
    blob = _encode(fence)
    return [fence.id, blob, hashlib.blake2b(blob, digest_size=12).digest()]


def _change_of(record: list[Any]) -> CatalogueChange:
    version, at, stores, added, changed, removed = record
    return CatalogueChange(
        version=version, at=at, stores=stores, added=added, changed=changed, removed=removed
    )


def _whole_s(seconds: float) -> int:
    return max(1, int(seconds + 0.999))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _escape(pattern: str) -> str:
    """Escape glob characters (the hash tag's braces are literal here, but [ ] * ? are not)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)

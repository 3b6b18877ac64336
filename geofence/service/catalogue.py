"""The store catalogue: validated uploads, the loaded fence index, and its refresh.

The catalogue's truth lives in the state store with a version number. Each worker keeps
the index of one version and swaps in a new one whole when the version moves, so a ping
never sees a half-loaded catalogue. Uploads are checked in a worker process
(service/uploads.py), one at a time, and held back by the guards of domain/uploads.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from geofence.domain import geojson, uploads
from geofence.domain.errors import NotFound, Unavailable
from geofence.domain.model import Fence
from geofence.domain.times import format_time
from geofence.engine.fences import FenceTable
from geofence.engine.index import FenceIndex
from geofence.ports import HISTORY_KEPT, CatalogueMetrics, CatalogueStore
from geofence.service.uploads import (
    Checks,
    ReadUpload,
    UploadFormat,
    UploadWorker,
    check_collection,
    check_feature,
    decode_chunks,
    encode_fences,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CatalogueSettings:
    """What the catalogue needs of the settings (the bootstrap cuts it out of them)."""

    limits: Mapping[str, Any]  # what every upload is checked against
    h3_resolution: int
    exit_margin_m: float
    poll_s: float  # how often the stored version is polled
    stores: str = ""  # a GeoJSON file that seeds an empty catalogue ("" none)


class LoadedIndex(msgspec.Struct, frozen=True):
    version: int
    index: FenceIndex


class CatalogueService:
    def __init__(
        self,
        settings: CatalogueSettings,
        store: CatalogueStore,
        metrics: CatalogueMetrics,
        *,
        read_file: ReadUpload | None = None,
    ) -> None:
        """``read_file``: how an uploaded GeoPackage or zipped Shapefile is read (the
        bootstrap's adapter); without it only GeoJSON is taken."""
        self.settings = settings
        self.read_file = read_file
        self.store = store
        self.metrics = metrics
        self.loaded: LoadedIndex | None = None
        self._lock = asyncio.Lock()
        self.uploads = UploadWorker()
        self.on_installed: Callable[[], None] = lambda: None  # a new index is in use

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    @property
    def index(self) -> FenceIndex:
        if self.loaded is None:
            raise RuntimeError("the catalogue is not loaded yet")
        return self.loaded.index

    async def start(self) -> None:
        """Load the catalogue; seed it from GEOFENCE_STORES when the store has none."""
        if await self.store.catalogue_version() == 0 and self.settings.stores:
            await self._seed(Path(self.settings.stores))
        await self.refresh()

    async def _seed(self, path: Path) -> None:
        doc = msgspec.json.decode(await asyncio.to_thread(path.read_bytes))
        report = self.parse(doc, repair=False)
        version = await self.store.replace_catalogue(report.fences)
        logger.info(
            "catalogue seeded",
            extra={"file": path.name, "stores": len(report.fences), "version": version},
        )

    async def refresh(self) -> bool:
        """Swap in the stored catalogue if its version moved; True when it did."""
        async with self._lock:
            version = await self.store.catalogue_version()
            if self.loaded is not None and self.loaded.version == version:
                return False
            with collector_paused():
                version, table = await self._stored_table()
                index = await self._build_table(table)
            self._install(version, index)
            return True

    async def _stored_table(self) -> tuple[int, FenceTable]:
        """The stored catalogue's version and its fences packed in a table. The fences as
        read (GeoJSON lists, about twice what the index takes) are let go here, before the
        index is built from the table (at a million fences, a load's peak 4.8 GB instead of
        6.8: ``python -m benchmarks.catalogue_load``)."""
        catalogue = await self.store.load_catalogue()
        return catalogue.version, await asyncio.to_thread(FenceTable.of, catalogue.fences)

    async def watch(self, stop: asyncio.Event) -> None:
        """Poll for a new catalogue version until ``stop`` is set; errors are logged, not fatal.

        A stop event rather than cancellation: a cancel that lands inside a Redis command
        can come back as a connection error, which this loop would log and outlive.
        """
        while not await _stopped(stop, self.settings.poll_s):
            try:
                await (self.refresh() if self.ready else self.start())
            except Unavailable:
                logger.warning("catalogue refresh: state store unavailable")
            except Exception:
                logger.exception("catalogue refresh failed")

    # marketers' operations (contract §3)
    def parse(self, doc: Any, *, repair: bool) -> geojson.StoreReport:
        return geojson.parse_feature_collection(doc, repair=repair, **self.settings.limits)

    async def replace(
        self,
        body: bytes,
        *,
        dry_run: bool,
        repair: bool,
        allow_shrink: bool = False,
        confirm_move: bool = False,
        media: UploadFormat = "geojson",
    ) -> dict[str, Any]:
        """Check the upload ``body`` (GeoJSON, or a GeoPackage or zipped Shapefile to
        convert) in the worker; apply it unless a dry run or a guard holds it back."""
        async with self.uploads.slot():
            current = await self.store.load_catalogue()
            before = encode_fences(current.fences)
            checked = await self.uploads.run(
                partial(check_collection, dry_run=dry_run, media=media),
                body,
                before,
                self._checks(repair=repair),
            )
            report = {"version": current.version, **checked.report, "dry_run": dry_run}
            if dry_run:
                return report
            uploads.check_guards(report, allow_shrink=allow_shrink, confirm_move=confirm_move)
            with collector_paused():
                fences = await decode_chunks(checked.chunks)
                index = await self._build(fences)
            version = await self.store.replace_catalogue(fences)
            async with self._lock:
                self._install(version, index)
        return report | {"version": version, "cells": index.cells}

    async def upsert(
        self, store_id: str, body: bytes, *, repair: bool, confirm_move: bool = False
    ) -> dict[str, Any]:
        async with self.uploads.slot():
            current = await self.store.load_catalogue()
            checked = await self.uploads.run(
                check_feature,
                body,
                encode_fences(current.fences),
                store_id,
                self._checks(repair=repair),
            )
            uploads.check_guards(checked.report, allow_shrink=True, confirm_move=confirm_move)
            (fence,) = await decode_chunks(checked.chunks)
            version = await self.store.upsert_fence(fence)
        await self.refresh()
        created = not checked.report["existed"]
        warnings = checked.report["warnings"]
        return {"version": version, "id": store_id, "created": created, "warnings": warnings}

    def _checks(self, *, repair: bool) -> Checks:
        s = self.settings
        return Checks(dict(s.limits), repair, s.h3_resolution, s.exit_margin_m, self.read_file)

    async def delete(self, store_id: str) -> int:
        version = await self.store.delete_fence(store_id)
        if version is None:
            raise NotFound(f"no store {store_id!r}")
        await self.refresh()
        return version

    async def features(self) -> dict[str, Any]:
        catalogue = await self.store.load_catalogue()
        return {
            "type": "FeatureCollection",
            "version": catalogue.version,
            "features": [f.to_feature() for f in catalogue.fences],
        }

    async def feature(self, store_id: str) -> dict[str, Any]:
        return (await self.fence(store_id)).to_feature()

    async def fence(self, store_id: str) -> Fence:
        fence = await self.store.load_fence(store_id)
        if fence is None:
            raise NotFound(f"no store {store_id!r}")
        return fence

    async def versions(self) -> list[dict[str, Any]]:
        """The catalogue's last changes, newest first: version, time and counts."""
        changes = await self.store.catalogue_history(HISTORY_KEPT)
        return [{**msgspec.structs.asdict(c), "at": format_time(c.at)} for c in changes]

    async def _build(self, fences: Sequence[Fence]) -> FenceIndex:
        return await self._build_table(await asyncio.to_thread(FenceTable.of, fences))

    async def _build_table(self, table: FenceTable) -> FenceIndex:
        s = self.settings
        return await asyncio.to_thread(
            FenceIndex.build_table, table, resolution=s.h3_resolution, exit_margin_m=s.exit_margin_m
        )

    def adopt(self, loaded: LoadedIndex) -> None:
        """Use an index built before this process was forked (``geofence serve
        --workers``): its memory stays shared, copy-on-write, with the other workers', and
        ``start`` finds this version in and builds nothing. A later version each worker
        builds for itself."""
        self.loaded = loaded
        self._count(loaded)
        logger.info("catalogue shared", extra=_described(loaded))

    def _install(self, version: int, index: FenceIndex) -> None:
        if self.loaded is not None and self.loaded.version > version:
            return  # a newer version was installed while this one was being built
        self.loaded = LoadedIndex(version, index)
        self._count(self.loaded)
        logger.info("catalogue loaded", extra=_described(self.loaded))
        self.on_installed()

    def _count(self, loaded: LoadedIndex) -> None:
        self.metrics.fences.set(len(loaded.index))
        self.metrics.index_cells.set(loaded.index.cells)
        self.metrics.catalogue_version.set(loaded.version)


def _described(loaded: LoadedIndex) -> dict[str, int]:
    index = loaded.index
    return {"version": loaded.version, "stores": len(index), "cells": index.cells}


async def _stopped(stop: asyncio.Event, wait_s: float) -> bool:
    """Wait up to ``wait_s``; True as soon as ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), wait_s)
    except TimeoutError:
        return False
    return True


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection while a new catalogue's objects are made.

    They come by the hundred thousand, and each full collection that their number sets
    off walks the whole heap with the GIL held: measured at 50-165 ms each, several per
    20,000-store upload, every request in flight waiting. Reference counting still frees
    what is dropped; cycles wait for the next collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

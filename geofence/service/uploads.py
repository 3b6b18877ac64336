"""Catalogue uploads checked in a worker process, one at a time, off the event loop.

Validation, repair, the diff and the index build are pure Python for much of their time
and hold the GIL: in a thread they would still stall every request of the process. So
the loop sends the upload's raw bytes and the current catalogue (msgpack) to a worker
process and gets back the report, and for a real upload the fences, msgpack-encoded in
chunks that the loop decodes one at a time between requests. The worker is started on
the first upload (forkserver, with this module preloaded, so it starts in milliseconds
after the first time) and stopped with the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import msgspec

from geofence.domain import geojson, uploads
from geofence.domain.errors import MalformedInput, Unavailable, UploadInProgress
from geofence.domain.model import Fence
from geofence.engine.index import FenceIndex

T = TypeVar("T")
UploadFormat = Literal["geojson", "gpkg", "zip"]
# an uploaded file of another format as a GeoJSON document and the notes of its conversion
# (a module-level function: it is sent to the worker process with each upload)
ReadUpload = Callable[[bytes, str], tuple[Any, list[str]]]
# the upload's Content-Type; anything else is read as GeoJSON
UPLOAD_FORMATS: Final[dict[str, UploadFormat]] = {
    "application/geopackage+sqlite3": "gpkg",
    "application/zip": "zip",
}

CHUNK: Final = 256  # fences per chunk: decoding one takes the loop a few milliseconds
_FENCES: Final = msgspec.msgpack.Decoder(list[Fence])
_ENCODER: Final = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class Checks:
    """What an upload is checked against, as the worker needs it."""

    limits: dict[str, Any]
    repair: bool
    resolution: int
    exit_margin_m: float
    read_file: ReadUpload | None = None  # a GeoPackage or zipped Shapefile; None: GeoJSON only


@dataclass(frozen=True, slots=True)
class Checked:
    """The worker's answer: the report, and the fences in msgpack chunks when asked for."""

    report: dict[str, Any]
    chunks: list[bytes] = field(default_factory=list)


class UploadWorker:
    """One worker process per app, and one upload at a time: another answers 409."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the process's one upload slot; refused at once (409) when it is taken:
        an upload can take seconds, and a queue of them would hold their bodies."""
        if self._busy:
            raise UploadInProgress("Another catalogue upload is being checked; retry later.")
        self._busy = True
        try:
            yield
        finally:
            self._busy = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), fn, *args)
        except BrokenProcessPool as e:  # the worker died (killed, out of memory)
            self._pool = None
            raise Unavailable("The upload worker stopped; retry the upload.") from e

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def encode_fences(fences: Sequence[Fence]) -> bytes:
    return _ENCODER.encode(fences)


async def decode_chunks(chunks: Sequence[bytes]) -> list[Fence]:
    """The fences of a worker's answer, letting other requests run between chunks."""
    fences: list[Fence] = []
    for chunk in chunks:
        fences += _FENCES.decode(chunk)
        await asyncio.sleep(0)
    return fences


# --- run in the worker process ----------------------------------------------------------


def check_collection(
    body: bytes,
    current: bytes,
    checks: Checks,
    *,
    dry_run: bool,
    media: UploadFormat = "geojson",
) -> Checked:
    """A whole catalogue: validated, compared with ``current``, its guards' warnings; on a
    dry run the index is built for its cell count, else the fences go back."""
    doc, notes = _document(body, media, checks.read_file)
    parsed = geojson.parse_feature_collection(doc, repair=checks.repair, **checks.limits)
    report = uploads.replace_report(_FENCES.decode(current), parsed.fences)
    report["warnings"] = parsed.warnings + report["warnings"]
    if notes:
        report["notes"] = notes
    if not dry_run:
        return Checked(report, _chunks(parsed.fences))
    index = FenceIndex.build(
        parsed.fences, resolution=checks.resolution, exit_margin_m=checks.exit_margin_m
    )
    return Checked(report | {"cells": index.cells})


def check_feature(body: bytes, current: bytes, store_id: str, checks: Checks) -> Checked:
    """One store for an upsert at ``store_id``, judged among the others."""
    fence, warnings = geojson.parse_feature(
        _decoded(body), store_id=store_id, repair=checks.repair, **checks.limits
    )
    before = _FENCES.decode(current)
    others = [f for f in before if f.id != store_id]
    warnings += uploads.store_warnings(others, fence)
    report = {"existed": len(others) < len(before), "warnings": warnings}
    return Checked(report, [encode_fences([fence])])


def _chunks(fences: Sequence[Fence]) -> list[bytes]:
    return [encode_fences(fences[i : i + CHUNK]) for i in range(0, len(fences), CHUNK)]


def _document(
    body: bytes, media: UploadFormat, read_file: ReadUpload | None
) -> tuple[Any, list[str]]:
    """The upload as a GeoJSON document; a GeoPackage or zipped Shapefile is converted
    by ``read_file`` (the CLI's import code, reprojected to WGS 84), with its notes."""
    if media == "geojson":
        return _decoded(body), []
    if read_file is None:
        raise MalformedInput(f"This service reads no {media} uploads; send GeoJSON.")
    return read_file(body, media)


def _decoded(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise MalformedInput(f"The body is not valid JSON: {e}") from None
    except RecursionError:  # msgspec's depth guard
        raise MalformedInput("The body nests too deeply.") from None

"""The command line: serve | stores validate/import. The only place the environment is read."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_type_hints

import msgspec

from geofence.config import Settings, SettingsError, parse_value, validate
from geofence.logs import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as e:
        print(f"geofence: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geofence", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP service")
    _add_setting_flags(serve)
    serve.set_defaults(run=run_serve)
    stores = commands.add_parser("stores", help="validate or import a store file")
    stores_cmds = stores.add_subparsers(required=True, metavar="ACTION")
    for name, run in (("validate", run_stores_validate), ("import", run_stores_import)):
        cmd = stores_cmds.add_parser(name, help=f"{name} any file GDAL reads (reprojected)")
        cmd.add_argument("file", type=Path)
        cmd.add_argument("--repair", action="store_true", help="repair invalid polygons")
        _add_setting_flags(cmd)
        cmd.set_defaults(run=run)
    replay = commands.add_parser("replay", help="replay a trace (CSV or GPX) offline")
    replay.add_argument("trace", type=Path, help="CSV (device_id,ts,lat,lon,accuracy_m) or GPX")
    replay.add_argument(
        "--stores",
        dest="stores_file",
        type=Path,
        required=True,
        help="the stores, in any format GDAL reads",
    )
    replay.add_argument("--device-id", default="trace", help="the device of a GPX track")
    replay.add_argument(
        "--default-accuracy-m",
        type=float,
        default=10.0,
        help="accuracy given to GPX fixes, which carry none",
    )
    _add_setting_flags(replay, skip=("stores",))
    replay.set_defaults(run=run_replay)
    return parser


def _add_setting_flags(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    """One flag per Settings field, named like its GEOFENCE_* variable."""
    for f in dataclasses.fields(Settings):
        if f.name in skip:
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"setting_{f.name}",
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (GEOFENCE_{f.name.upper()}, default {f.default!r})",
        )


def settings_from(args: argparse.Namespace) -> Settings:
    hints = get_type_hints(Settings)
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = getattr(args, f"setting_{f.name}", None)
        if raw is not None:
            overrides[f.name] = parse_value(f.name, raw, hints[f.name])
    settings = Settings.from_env(os.environ, **overrides)
    validate(settings)
    return settings


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    setup_logging(settings.log_level)
    if settings.workers == 1:
        serve(settings)
        return 0
    return supervise(settings)


def serve(settings: Settings, *, shared_port: bool = False) -> None:
    """One process serving until SIGTERM or SIGINT. ``shared_port``: the listening
    socket is bound with SO_REUSEPORT, so that the kernel spreads the connections over
    every worker bound to the port."""
    from geofence.http.app import create_app
    from geofence.http.keys import CATALOGUE
    from geofence.http.server import run

    _use_uvloop()
    app = create_app(settings)
    app[CATALOGUE].on_installed = settle_heap
    run(app, settings, reuse_port=shared_port or None, announce=_stderr)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def supervise(settings: Settings) -> int:
    """``settings.workers`` processes serving one port; SIGTERM or SIGINT stops them all.

    They are forked before any of them opens a connection or starts an event loop, and
    share nothing but Redis. When one stops, for whatever reason, the others are stopped
    too, and the first failing exit code among them is ours: the supervisor above
    (systemd, the container runtime) restarts the whole, rather than this process
    running short of workers unseen.
    """
    fork = multiprocessing.get_context("fork")
    workers = [
        fork.Process(target=serve, args=(settings,), kwargs={"shared_port": True}, name=f"w{i}")
        for i in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    stopped = False

    def stop(_signum: int = signal.SIGTERM, _frame: object = None) -> None:
        nonlocal stopped
        if stopped:  # a worker asked twice may cut its own clean shutdown short
            return
        stopped = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    multiprocessing.connection.wait([w.sentinel for w in workers])
    stop()
    for worker in workers:
        worker.join()
    return next((_status(w.exitcode) for w in workers if w.exitcode), 0)


def _status(exitcode: int | None) -> int:
    """A worker's exit code as a shell reports it: 128 + N when killed by signal N."""
    if exitcode is None:
        return 1
    return 128 - exitcode if exitcode < 0 else exitcode


def settle_heap() -> None:
    """Take what is alive now (the fence index just built, the app) out of the garbage
    collector's sight.

    A full collection walks every tracked object: with a 10k-fence catalogue that is
    over 100 ms, a pause that every request in flight waits through, and under load it
    comes every few seconds. Frozen objects are still freed by reference counting; the
    unfreeze and collect first let a replaced index's cycles, if any, go. Run once per
    catalogue installed.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on every platform; asyncio's own loop works too
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _stores_report(args: argparse.Namespace) -> tuple[Settings, Any]:
    from geofence.adapters.geofile import read_feature_collection
    from geofence.domain import geojson

    settings = settings_from(args)
    doc = read_feature_collection(args.file)
    report = geojson.parse_feature_collection(
        doc,
        repair=args.repair,
        **settings.catalogue_limits,
    )
    return settings, report


def run_stores_validate(args: argparse.Namespace) -> int:
    from geofence.adapters.geofile import GeoFileError
    from geofence.domain.errors import InvalidInput

    try:
        _, report = _stores_report(args)
    except (InvalidInput, GeoFileError) as e:
        _print_json({"valid": False, "errors": _errors(e)})
        return 1
    _print_json({"valid": True, "stores": len(report.fences), "warnings": report.warnings})
    return 0


def run_stores_import(args: argparse.Namespace) -> int:
    from geofence.adapters.geofile import GeoFileError
    from geofence.domain.errors import InvalidInput

    try:
        settings, report = _stores_report(args)
    except (InvalidInput, GeoFileError) as e:
        _print_json({"imported": False, "errors": _errors(e)})
        return 1
    version = asyncio.run(_import(settings, report.fences))
    _print_json(
        {
            "imported": True,
            "stores": len(report.fences),
            "version": version,
            "warnings": report.warnings,
        }
    )
    return 0


async def _import(settings: Settings, fences: Sequence[Any]) -> int:
    from geofence.http.app import make_store

    if not settings.redis_url:
        raise SettingsError("stores import writes to Redis: set GEOFENCE_REDIS_URL")
    store = make_store(settings)
    try:
        return await store.replace_catalogue(fences)
    finally:
        await store.close()


def run_replay(args: argparse.Namespace) -> int:
    from geofence.adapters.geofile import GeoFileError
    from geofence.adapters.traces import TraceError
    from geofence.domain.errors import InvalidInput

    settings = settings_from(args)
    try:
        asyncio.run(_replay(settings, args))
    except (TraceError, GeoFileError, InvalidInput) as e:
        print(f"geofence replay: {e}: {_errors(e)}", file=sys.stderr)
        return 1
    return 0


async def _replay(settings: Settings, args: argparse.Namespace) -> None:
    from geofence.adapters.geofile import read_feature_collection
    from geofence.adapters.traces import read_trace
    from geofence.domain import geojson
    from geofence.service.replay import replay

    doc = read_feature_collection(args.stores_file)
    report = geojson.parse_feature_collection(doc, **settings.catalogue_limits)
    trace = read_trace(
        args.trace, device_id=args.device_id, default_accuracy_m=args.default_accuracy_m
    )
    async for event in replay(settings, report.fences, trace):
        sys.stdout.write(msgspec.json.encode(event).decode() + "\n")


def _errors(error: Exception) -> list[dict[str, Any]]:
    from geofence.domain.errors import InvalidInput

    if isinstance(error, InvalidInput):
        return [p.as_dict() for p in error.problems]
    return [{"code": "unreadable-file", "detail": str(error)}]


def _print_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(data)).decode() + "\n")

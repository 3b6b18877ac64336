"""The command line: serve | stores validate/import | replay. The only place the environment
and the config file are read."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib.metadata
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_type_hints

import msgspec

from geofence.config import ENV_PREFIX, SECRETS, Settings, SettingsError, parse_value, validate
from geofence.logs import setup_logging

DESCRIPTION = """\
Geofencing and proximity offers for retail loyalty programmes: run the HTTP service,
check or import a store catalogue, replay a location trace offline."""
SETTINGS_NOTE = """\
Every setting is read, last one winning, from a config file (--config FILE or
GEOFENCE_CONFIG: GEOFENCE_NAME=value lines), GEOFENCE_NAME variables and the --name
flags below. Secrets are never flags: set them in the environment, the config file or
with --<name>-file PATH."""

# the settings flags each command offers, by group (a setting in no group is a serve flag
# under "other settings"; SECRETS are never flags)
SERVE_GROUPS: dict[str, tuple[str, ...]] = {
    "listening": ("host", "port", "workers", "max_body_bytes", "max_upload_bytes", "log_level"),
    "state": (
        "redis_url",
        "redis_prefix",
        "redis_timeout_s",
        "redis_max_connections",
        "redis_wait_replicas",
        "device_ttl_s",
        "position_ttl_s",
    ),
    "catalogue": (
        "stores",
        "default_timezone",
        "max_fence_area_m2",
        "max_vertices",
        "region",
        "h3_resolution",
        "catalogue_poll_s",
    ),
    "push gateway": ("push_url", "push_timeout_s", "push_concurrency"),
    "admission": (
        "device_rate_per_s",
        "device_burst",
        "ingest_rate_per_s",
        "ingest_burst",
        "max_inflight",
    ),
    "visit rules": (
        "max_accuracy_m",
        "dwell_s",
        "max_gap_s",
        "exit_margin_m",
        "exit_s",
        "visit_timeout_s",
        "entry_cooldown_s",
    ),
    "offers": ("quiet_hours", "device_cap", "notify_max_lag_s"),
}
CATALOGUE_LIMITS = ("default_timezone", "max_fence_area_m2", "max_vertices", "region")
STORES_GROUPS = {"catalogue limits": CATALOGUE_LIMITS}
IMPORT_GROUPS = {
    **STORES_GROUPS,
    "redis": ("redis_url", "redis_prefix", "redis_timeout_s"),
}
REPLAY_GROUPS = {
    "catalogue limits": (*CATALOGUE_LIMITS, "h3_resolution"),
    "visit rules": SERVE_GROUPS["visit rules"],
    "offers": SERVE_GROUPS["offers"],
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as e:
        print(f"geofence: {e}".replace("\n", " "), file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geofence", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", title="commands")
    serve = _command(commands, "serve", "run the HTTP service", SERVE_GROUPS)
    serve.usage = "%(prog)s [--config FILE] [--SETTING VALUE ...] [--SECRET-file PATH ...]"
    _add_setting_flags(serve, "other settings", _ungrouped())
    _add_secret_files(serve)
    serve.set_defaults(run=run_serve)
    stores = commands.add_parser(
        "stores", help="validate or import a store file", allow_abbrev=False
    )
    stores_cmds = stores.add_subparsers(required=True, metavar="ACTION", title="actions")
    for name, run, groups in (
        ("validate", run_stores_validate, STORES_GROUPS),
        ("import", run_stores_import, IMPORT_GROUPS),
    ):
        what = f"{name} any file GDAL reads (reprojected to WGS 84); the report is JSON on stdout"
        cmd = _command(stores_cmds, name, what, groups)
        cmd.add_argument("file", type=Path, help="the stores: GeoJSON, GeoPackage, Shapefile...")
        cmd.add_argument("--repair", action="store_true", help="repair invalid polygons")
        cmd.set_defaults(run=run)
    _add_replay(commands)
    return parser


def _add_replay(commands: Any) -> None:
    what = "replay a trace (CSV or GPX 1.0/1.1) offline; events as JSON lines on stdout"
    replay = _command(commands, "replay", what, REPLAY_GROUPS)
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
    replay.set_defaults(run=run_replay)


def _command(
    commands: Any, name: str, what: str, groups: Mapping[str, Sequence[str]]
) -> argparse.ArgumentParser:
    """A subcommand with --config and the settings flags of ``groups``."""
    cmd: argparse.ArgumentParser = commands.add_parser(
        name,
        help=what,
        description=f"{what}.\n\n{SETTINGS_NOTE}",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="GEOFENCE_NAME=value lines (GEOFENCE_CONFIG); relative paths in it are the file's",
    )
    for title, names in groups.items():
        _add_setting_flags(cmd, title, names)
    return cmd


def _version() -> str:
    try:
        return importlib.metadata.version("geofence")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree not installed
        return "unknown"


def _ungrouped() -> list[str]:
    grouped = {name for names in SERVE_GROUPS.values() for name in names}
    return [
        f.name
        for f in dataclasses.fields(Settings)
        if f.name not in grouped and f.name not in SECRETS
    ]


def _add_setting_flags(parser: argparse.ArgumentParser, title: str, names: Sequence[str]) -> None:
    """One flag per setting, named like its GEOFENCE_* variable; never a secret's."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    hints = get_type_hints(Settings)
    group = parser.add_argument_group(title)
    for name in names:
        if name in SECRETS or name not in fields:
            continue
        f = fields[name]
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"setting_{name}",
            metavar=_metavar(hints[name]),
            help=f"{f.metadata.get('help', '')} [{_shown(f.default)}]",
        )


def _metavar(hint: Any) -> str:
    text = str(hint)
    if "tuple" in text:
        return "LIST"
    if "int" in text or "float" in text:
        return "N"
    return "TEXT"


def _shown(default: Any) -> str:
    if isinstance(default, tuple):
        return ",".join(map(str, default)) or "none"
    return "unset" if default is None else str(default)


def _add_secret_files(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "secrets", "from the environment, the config file, or a file named here (stripped)"
    )
    for name in SECRETS:
        group.add_argument(
            f"--{name.replace('_', '-')}-file",
            dest=f"secret_file_{name}",
            type=Path,
            metavar="PATH",
            help=f"GEOFENCE_{name.upper()} from this file",
        )


def read_config(path: Path) -> dict[str, str]:
    """The GEOFENCE_* settings of an env-style file: NAME=value lines, # comments."""
    from dotenv import dotenv_values

    if not path.is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG={path}: no such file")
    known = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    values: dict[str, str] = {}
    for name, value in dotenv_values(path, interpolate=False).items():
        if name not in known:
            raise SettingsError(f"{ENV_PREFIX}CONFIG={path}: {name} is not a setting")
        if value is None:
            raise SettingsError(f"{ENV_PREFIX}CONFIG={path}: {name} has no value (NAME=value)")
        values[name] = value
    return values


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the config file, the environment and the flags, later ones winning."""
    hints = get_type_hints(Settings)
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = getattr(args, f"setting_{f.name}", None)
        if raw is not None:
            overrides[f.name] = parse_value(f.name, raw, hints[f.name])
        secret_file = getattr(args, f"secret_file_{f.name}", None)
        if secret_file is not None:
            overrides[f.name] = parse_value(f.name, _secret(secret_file, f.name), hints[f.name])
    config = getattr(args, "config", None) or os.environ.get(ENV_PREFIX + "CONFIG") or None
    from_file = read_config(Path(config)) if config else {}
    settings = Settings.from_env({**from_file, **os.environ}, **overrides)
    if config and "stores" not in overrides and not os.environ.get(ENV_PREFIX + "STORES"):
        settings = settings.replace(stores=_beside(Path(config), settings.stores))
    validate(settings)
    return settings


def _secret(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(
            f"--{name.replace('_', '-')}-file {path}: cannot be read: {e}"
        ) from None


def _beside(config: Path, path: str) -> str:
    """A path given in the config file (or the default) is relative to the file's folder."""
    if not path or Path(path).is_absolute():
        return path
    return str(config.parent / path)


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    check_stores_file(settings)
    setup_logging(settings.log_level)
    check_shards(settings)
    if settings.workers == 1:
        serve(settings)
        return 0
    return supervise(settings)


def check_shards(settings: Settings) -> None:
    """The number of shards the Redis data is laid out in is the one configured: with
    another, every device would be looked for under other keys (its state and caps seem
    gone). The first start records it; a Redis that does not answer now is left to
    ``/readyz``, and checked again at the next start."""
    if not settings.redis_url:
        return
    from geofence.bootstrap import redis_store
    from geofence.domain.errors import BackendUnavailable

    store = redis_store(settings, settings.redis_url)

    async def claim() -> int:
        try:
            return await store.claim_layout()
        finally:
            await store.close()

    try:
        recorded = asyncio.run(claim())
    except BackendUnavailable:
        logging.getLogger("geofence.serve").warning(
            "the shards of the Redis data not checked at start: state store unavailable"
        )
        return
    if recorded != store.keys.shards:
        raise SettingsError(
            f"{ENV_PREFIX}REDIS_SHARDS={store.keys.shards}: the data under the prefix "
            f"{settings.redis_prefix!r} is laid out in {recorded} shards; start with "
            f"{ENV_PREFIX}REDIS_SHARDS={recorded}"
        )


def check_stores_file(settings: Settings) -> None:
    """The file that seeds an empty catalogue: readable, valid and not empty, or the service
    does not start (rather than answer 503 on /readyz while it retries for ever)."""
    from geofence.domain import geojson
    from geofence.domain.errors import InvalidInput

    if not settings.stores:
        return
    where = f"{ENV_PREFIX}STORES={settings.stores}"
    try:
        data = Path(settings.stores).read_bytes()
    except OSError as e:
        raise SettingsError(f"{where}: cannot be read ({e.strerror})") from None
    if not data.strip():
        raise SettingsError(f"{where}: the file is empty")
    try:
        report = geojson.parse_feature_collection(
            msgspec.json.decode(data), **settings.catalogue_limits
        )
    except msgspec.DecodeError as e:
        raise SettingsError(f"{where}: not GeoJSON ({e})") from None
    except InvalidInput as e:
        first = e.problems[0]
        raise SettingsError(
            f"{where}: {len(e.problems)} problem(s), the first {first.code}: {first.detail} "
            f"(geofence stores validate lists them all)"
        ) from None
    if not report.fences:
        raise SettingsError(f"{where}: no stores in it (--stores '' starts without a file)")


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
    run(app, settings, reuse_port=shared_port or None, announce=_announce)


def _announce(text: str) -> None:
    """aiohttp's "Running on <url>" as a JSON log line like every other."""
    logging.getLogger("geofence.serve").info(text.splitlines()[0].strip("= "))


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


def _stores_report(settings: Settings, args: argparse.Namespace) -> Any:
    from geofence.adapters.geofile import read_feature_collection
    from geofence.domain import geojson

    doc = read_feature_collection(args.file)
    return geojson.parse_feature_collection(
        _with_progress(doc),
        repair=args.repair,
        **settings.catalogue_limits,
    )


class _Ticking(list[Any]):
    """The features, moving a progress bar on stderr as the validator goes through them."""

    def __iter__(self) -> Iterator[Any]:
        from tqdm import tqdm

        # disable=None: shown only when stderr is a terminal
        with tqdm(
            total=len(self), desc="validating", unit=" stores", file=sys.stderr, disable=None
        ) as bar:
            for feature in super().__iter__():
                yield feature
                bar.update()


def _with_progress(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("features"), list):
        return {**doc, "features": _Ticking(doc["features"])}
    return doc


def run_stores_validate(args: argparse.Namespace) -> int:
    from geofence.adapters.geofile import GeoFileError
    from geofence.domain.errors import InvalidInput

    settings = settings_from(args)
    try:
        report = _stores_report(settings, args)
    except (InvalidInput, GeoFileError) as e:
        _print_json({"valid": False, "errors": _errors(e)})
        return 1
    _print_json({"valid": True, "stores": len(report.fences), "warnings": report.warnings})
    return 0


def run_stores_import(args: argparse.Namespace) -> int:
    """Redis is asked first: a long validation is not wasted on a store it cannot write to."""
    from geofence.adapters.geofile import GeoFileError
    from geofence.domain.errors import InvalidInput, Unavailable

    settings = settings_from(args)
    if not settings.redis_url:
        raise SettingsError("stores import writes to Redis: set GEOFENCE_REDIS_URL")
    try:
        asyncio.run(_import(settings, None))
    except Unavailable as e:
        _print_json(
            {"imported": False, "errors": [{"code": "redis-unavailable", "detail": str(e)}]}
        )
        return 1
    try:
        report = _stores_report(settings, args)
    except (InvalidInput, GeoFileError) as e:
        _print_json({"imported": False, "errors": _errors(e)})
        return 1
    version, guards = asyncio.run(_import(settings, report.fences))
    _print_json(
        {
            "imported": True,
            "stores": len(report.fences),
            "version": version,
            "warnings": report.warnings + guards,
        }
    )
    return 0


async def _import(settings: Settings, fences: Sequence[Any] | None) -> tuple[int, list[Any]]:
    """Write ``fences`` as the catalogue: its version, and the warnings of the API's upload
    guards (shrink, likely swap). None: only see that Redis answers."""
    from geofence.bootstrap import make_store
    from geofence.domain import uploads

    store = make_store(settings)
    try:
        if fences is None:
            await store.check()
            return 0, []
        current = await store.load_catalogue()
        warnings = uploads.replace_report(current.fences, fences)["warnings"]
        return await store.replace_catalogue(fences), warnings
    finally:
        await store.close()


def run_replay(args: argparse.Namespace) -> int:
    from geofence.adapters.geofile import GeoFileError
    from geofence.adapters.traces import TraceError
    from geofence.domain.errors import InvalidInput

    settings = settings_from(args)
    try:
        asyncio.run(_replay(settings, args))
        sys.stdout.flush()
    except (TraceError, GeoFileError, InvalidInput) as e:
        print(f"geofence replay: {e}: {_errors(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _reader_gone()
    return 0


def _reader_gone() -> int:
    """Whoever read stdout (``| head``) has stopped: end quietly, as a shell tool does.

    What is still buffered can never be written; stdout goes to /dev/null so that the
    interpreter's own flush at exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


async def _replay(settings: Settings, args: argparse.Namespace) -> None:
    from geofence.adapters.geofile import read_feature_collection
    from geofence.adapters.traces import read_trace
    from geofence.bootstrap import replay_service
    from geofence.domain import geojson
    from geofence.service.replay import replay

    doc = read_feature_collection(args.stores_file)
    report = geojson.parse_feature_collection(doc, **settings.catalogue_limits)
    trace = read_trace(
        args.trace, device_id=args.device_id, default_accuracy_m=args.default_accuracy_m
    )
    service, devices = await replay_service(settings, report.fences)
    async for event in replay(service, devices, ((p.device_id, p.ping) for p in trace)):
        sys.stdout.write(msgspec.json.encode(event).decode() + "\n")


def _errors(error: Exception) -> list[dict[str, Any]]:
    from geofence.domain.errors import InvalidInput

    if isinstance(error, InvalidInput):
        return [p.as_dict() for p in error.problems]
    return [{"code": "unreadable-file", "detail": str(error)}]


def _print_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(data)).decode() + "\n")

"""Settings come from GEOFENCE_* variables and same-named flags, typed and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from geofence.adapters.redis import cluster_client
from geofence.cli import build_parser, settings_from
from geofence.config import Settings, SettingsError, validate
from geofence.http.app import create_app
from geofence.http.keys import DISPATCHER


def test_defaults_follow_the_contract() -> None:
    s = Settings()
    assert (s.port, s.dwell_s, s.max_gap_s, s.exit_margin_m, s.exit_s) == (8080, 120, 900, 30, 60)
    assert (s.visit_timeout_s, s.entry_cooldown_s, s.max_accuracy_m) == (14_400, 21_600, 100)
    assert (s.device_cap, s.notify_max_lag_s, s.quiet_hours) == (2, 900, "21:00-08:00")
    assert s.redis_url is None
    assert s.dev_mode
    assert s.dead_letter_ttl_s == 14 * 86_400  # issue 23: dead letters expire in 14 days


def test_environment_is_typed() -> None:
    env = {
        "GEOFENCE_PORT": "9000",
        "GEOFENCE_DWELL_S": "90.5",
        "GEOFENCE_ADMIN_KEYS": "admin-key-0000001,admin-key-0000002",
        "GEOFENCE_REGION": "24.0, 60.0,,25.5,60.5",
        "GEOFENCE_REDIS_URL": "redis://localhost/1",
        "GEOFENCE_PUSH_URL": "",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env)
    assert s.port == 9000
    assert s.dwell_s == 90.5
    assert s.admin_keys == ("admin-key-0000001", "admin-key-0000002")
    assert not s.dev_mode
    assert s.region_bbox == (24.0, 60.0, 25.5, 60.5)
    assert s.redis_url == "redis://localhost/1"
    assert s.push_url is None


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(SettingsError, match="GEOFENCE_PORT"):
        Settings.from_env({"GEOFENCE_PORT": "eighty"})
    with pytest.raises(SettingsError, match="GEOFENCE_REGION"):
        validate(Settings.from_env({"GEOFENCE_REGION": "1,2,3"}))
    with pytest.raises(SettingsError, match="GEOFENCE_DEAD_LETTER_TTL_S"):
        validate(Settings.from_env({"GEOFENCE_DEAD_LETTER_TTL_S": "0"}))


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFENCE_DWELL_S", "30")
    monkeypatch.setenv("GEOFENCE_EXIT_S", "45")
    args = build_parser().parse_args(["serve", "--dwell-s", "10", "--port", "8081"])
    s = settings_from(args)
    assert (s.dwell_s, s.exit_s, s.port) == (10.0, 45.0, 8081)
    assert s.visit_rules.dwell_s == 10.0
    assert s.visit_rules.exit_s == 45.0


SHARED = {"redis_url": "redis://localhost/1", "id_secret": "s", "admin_keys": ("a" * 16,)}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"workers": 0}, "at least 1"),
        ({"workers": 2, "redis_url": None}, "GEOFENCE_REDIS_URL"),
        ({"workers": 2, "id_secret": None}, "GEOFENCE_ID_SECRET"),
        ({"workers": 2, "admin_keys": ()}, "GEOFENCE_\\*_KEYS"),
    ],
)
def test_workers_share_only_what_redis_and_the_settings_give(
    changes: dict[str, object], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        validate(Settings(**{**SHARED, **changes}))  # type: ignore[arg-type]


def test_several_workers_on_redis_with_their_secrets_set() -> None:
    validate(Settings(workers=4, **SHARED))  # type: ignore[arg-type]
    validate(Settings(workers=1))  # one process may make its own


ADMIN, SDK = "admin-key-0000001", "sdk-key-00000001"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GEOFENCE_ADMIN_KEYS": f"{ADMIN},,{ADMIN}x"}, "ADMIN_KEYS: key 2 of 3 is empty"),
        ({"GEOFENCE_SDK_KEYS": f"{SDK}, {SDK}x"}, "SDK_KEYS: key 2 contains whitespace"),
        ({"GEOFENCE_SDK_KEYS": f"{SDK},"}, "SDK_KEYS: key 2 of 2 is empty"),
        ({"GEOFENCE_ADMIN_KEYS": "too-short"}, "ADMIN_KEYS: key 1 .* 16 characters"),
        ({"GEOFENCE_ADMIN_KEYS": ADMIN, "GEOFENCE_SDK_KEYS": ADMIN}, "SDK_KEYS: .* in .*ADMIN"),
        ({"GEOFENCE_INGEST_KEYS": f"{SDK},{SDK}"}, "INGEST_KEYS: key 2 is also in .*INGEST"),
        ({"GEOFENCE_REDIS_URL": "http://localhost:6379"}, "REDIS_URL: the scheme"),
        ({"GEOFENCE_REDIS_URL": "localhost:6379"}, "REDIS_URL: the scheme"),
        ({"GEOFENCE_REDIS_URL": "redis://localhost:port/0"}, "REDIS_URL: Port"),
        ({"GEOFENCE_REDIS_URL": "redis:///0"}, "REDIS_URL: no host"),
        ({"GEOFENCE_REDIS_URL": "redis://localhost/zero"}, "REDIS_URL: the database"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster://a:1,b"}, "REDIS_URL: each cluster node"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster://a:x"}, "REDIS_URL: each cluster node"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster://a:1/2"}, "REDIS_URL: a Redis Cluster"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster:///0"}, "REDIS_URL: no host:port"),
        ({"GEOFENCE_REDIS_SHARDS": "0"}, "REDIS_SHARDS must be 1 to 16384"),
    ],
)
def test_a_bad_key_list_or_redis_url_is_refused(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as refused:
        validate(Settings.from_env(env))
    assert "key-0000" not in str(refused.value)  # a key is never repeated in the message


def test_good_key_lists_and_redis_urls_pass() -> None:
    for url in (
        "redis://localhost:6379/15",
        "rediss://:pw@h",
        "unix:///tmp/redis.sock",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        "rediss+cluster://user:p%40ss@[::1]:7000/0?ssl_cert_reqs=none",
    ):
        env = {"GEOFENCE_ADMIN_KEYS": ADMIN, "GEOFENCE_SDK_KEYS": SDK, "GEOFENCE_REDIS_URL": url}
        validate(Settings.from_env(env))


def test_a_cluster_url_makes_a_cluster_client() -> None:
    """Every node listed is a startup node; credentials and TLS as redis-py's URLs."""
    client = cluster_client(
        "rediss+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001/0?ssl_cert_reqs=none",
        timeout_s=1.5,
        max_connections=8,
    )
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
    ]
    options = next(iter(client.nodes_manager.startup_nodes.values())).connection_kwargs
    assert (options["username"], options["password"]) == ("user", "p@ss")
    assert options["ssl_cert_reqs"] == "none"
    assert options["socket_timeout"] == 1.5
    assert client.retry.get_retries() == 0


@pytest.mark.parametrize("secret", ["admin-keys", "sdk-keys", "id-secret", "push-secret"])
def test_a_secret_is_never_a_flag(secret: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", f"--{secret}", "x" * 20])
    with pytest.raises(SystemExit):  # nor an abbreviation of its --...-file flag
        build_parser().parse_args(["serve", f"--{secret}-f", "x" * 20])


def test_a_secret_from_a_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOFENCE_ADMIN_KEYS", ADMIN)
    (tmp_path / "sdk").write_text(f"{SDK}\n")
    (tmp_path / "admin").write_text(f"  {ADMIN}x,{ADMIN}y\n")
    args = ["serve", "--sdk-keys-file", str(tmp_path / "sdk")]
    args += ["--admin-keys-file", str(tmp_path / "admin")]
    s = settings_from(build_parser().parse_args(args))
    assert s.sdk_keys == (SDK,)
    assert s.admin_keys == (f"{ADMIN}x", f"{ADMIN}y")
    with pytest.raises(SettingsError, match="--id-secret-file"):
        settings_from(build_parser().parse_args(["serve", "--id-secret-file", str(tmp_path)]))


def config_file(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "geofence.env"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_config_file_under_the_environment_and_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        f"# settings\nGEOFENCE_DWELL_S=30\nGEOFENCE_EXIT_S=40\nexport GEOFENCE_SDK_KEYS='{SDK}'\n"
    )
    config = config_file(tmp_path, text + "GEOFENCE_PORT=9001\n")
    monkeypatch.setenv("GEOFENCE_EXIT_S", "45")
    monkeypatch.setenv("GEOFENCE_CONFIG", str(config))
    s = settings_from(build_parser().parse_args(["serve", "--port", "9002"]))
    assert (s.dwell_s, s.exit_s, s.port, s.sdk_keys) == (30.0, 45.0, 9002, (SDK,))


def test_a_relative_stores_path_is_the_config_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    by_default = config_file(tmp_path / "etc", "GEOFENCE_DWELL_S=30\n")
    named = config_file(tmp_path / "conf", "GEOFENCE_STORES=data/shops.geojson\n")

    def stores(*argv: str) -> str:
        return settings_from(build_parser().parse_args(["serve", *argv])).stores

    assert stores() == "stores.geojson"  # no config file: the current folder's
    assert stores("--config", str(by_default)) == str(tmp_path / "etc" / "stores.geojson")
    assert stores("--config", str(named)) == str(tmp_path / "conf" / "data" / "shops.geojson")
    assert stores("--config", str(named), "--stores", "mine.geojson") == "mine.geojson"
    monkeypatch.setenv("GEOFENCE_STORES", "env.geojson")
    assert stores("--config", str(named)) == "env.geojson"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("GEOFENCE_DWEL_S=30\n", "GEOFENCE_DWEL_S is not a setting"),
        ("GEOFENCE_DWELL_S\n", "GEOFENCE_DWELL_S has no value"),
        ("GEOFENCE_DWELL_S=soon\n", "GEOFENCE_DWELL_S='soon'"),
    ],
)
def test_a_bad_config_file_is_refused(tmp_path: Path, text: str, named: str) -> None:
    args = build_parser().parse_args(["serve", "--config", str(config_file(tmp_path, text))])
    with pytest.raises(SettingsError, match=named):
        settings_from(args)


@pytest.mark.parametrize("wait_s", [0.0, -1.0])
def test_the_backend_retry_cap_must_be_positive(wait_s: float) -> None:
    with pytest.raises(SettingsError, match="GEOFENCE_BACKEND_RETRY_MAX_S"):
        validate(Settings(backend_retry_max_s=wait_s))


def test_the_backend_retry_cap_reaches_the_dispatcher() -> None:
    settings = Settings.from_env({"GEOFENCE_BACKEND_RETRY_MAX_S": "2.5", "GEOFENCE_STORES": ""})
    app = create_app(settings)
    assert app[DISPATCHER].policy.backend_cap_s == 2.5

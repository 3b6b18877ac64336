"""Settings come from GEOFENCE_* variables and same-named flags, typed and checked."""

from __future__ import annotations

import pytest

from geofence.cli import build_parser, settings_from
from geofence.config import Settings, SettingsError, validate
from geofence.http.app import create_app
from geofence.http.keys import DISPATCHER


def test_defaults_follow_the_contract() -> None:
    s = Settings()
    assert (s.port, s.dwell_s, s.max_gap_s, s.exit_margin_m, s.exit_s) == (8080, 120, 900, 30, 60)
    assert (s.visit_timeout_s, s.entry_cooldown_s, s.max_accuracy_m) == (14_400, 21_600, 100)
    assert (s.device_cap, s.notify_max_lag_s, s.quiet_hours) == (2, 900, "21:00-08:00")
    assert s.redis_url is None and s.dev_mode


def test_environment_is_typed() -> None:
    env = {
        "GEOFENCE_PORT": "9000",
        "GEOFENCE_DWELL_S": "90.5",
        "GEOFENCE_ADMIN_KEYS": "a, b,,c",
        "GEOFENCE_REGION": "24.0,60.0,25.5,60.5",
        "GEOFENCE_REDIS_URL": "redis://localhost/1",
        "GEOFENCE_PUSH_URL": "",
        "UNRELATED": "x",
    }
    s = Settings.from_env(env)
    assert s.port == 9000 and s.dwell_s == 90.5
    assert s.admin_keys == ("a", "b", "c") and not s.dev_mode
    assert s.region_bbox == (24.0, 60.0, 25.5, 60.5)
    assert s.redis_url == "redis://localhost/1" and s.push_url is None


def test_a_bad_value_names_its_variable() -> None:
    with pytest.raises(SettingsError, match="GEOFENCE_PORT"):
        Settings.from_env({"GEOFENCE_PORT": "eighty"})
    with pytest.raises(SettingsError, match="GEOFENCE_REGION"):
        validate(Settings.from_env({"GEOFENCE_REGION": "1,2,3"}))


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFENCE_DWELL_S", "30")
    monkeypatch.setenv("GEOFENCE_EXIT_S", "45")
    args = build_parser().parse_args(["serve", "--dwell-s", "10", "--port", "8081"])
    s = settings_from(args)
    assert (s.dwell_s, s.exit_s, s.port) == (10.0, 45.0, 8081)
    assert s.visit_rules.dwell_s == 10.0 and s.visit_rules.exit_s == 45.0


SHARED = {"redis_url": "redis://localhost/1", "id_secret": "s", "admin_keys": ("a",)}


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


@pytest.mark.parametrize("wait_s", [0.0, -1.0])
def test_the_backend_retry_cap_must_be_positive(wait_s: float) -> None:
    with pytest.raises(SettingsError, match="GEOFENCE_BACKEND_RETRY_MAX_S"):
        validate(Settings(backend_retry_max_s=wait_s))


def test_the_backend_retry_cap_reaches_the_dispatcher() -> None:
    settings = Settings.from_env({"GEOFENCE_BACKEND_RETRY_MAX_S": "2.5", "GEOFENCE_STORES": ""})
    app = create_app(settings)
    assert app[DISPATCHER].policy.backend_cap_s == 2.5

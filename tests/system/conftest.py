"""System-test fixtures: the module's deployment, its town, and whether the long versions
run (``--soak``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system.cluster import Cluster, running_cluster
from tests.system.walkers import Town


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One deployment for the module's tests; a module may set ``CLUSTER``, a dict of
    ``Cluster``'s keyword arguments (``services``, rules)."""
    name = request.module.__name__.rpartition(".")[2]
    options = getattr(request.module, "CLUSTER", {})
    with running_cluster(tmp_path_factory.mktemp(name), **options) as c:
        yield c


@pytest.fixture(scope="module")
def town(cluster: Cluster) -> Town:
    return Town(cluster.settings)


@pytest.fixture(scope="module")
def device_ids() -> set[str]:
    """Every device id the module's tests sent: none may show in a log."""
    return set()

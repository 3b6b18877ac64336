"""The HTTP fixtures (a client of create_app on the memory and the Redis store) here too."""

from tests.http.conftest import client, make_client  # noqa: F401

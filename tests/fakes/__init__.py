"""Test doubles that are real servers: the fake push gateway."""

from tests.fakes.gateway import Call, FakeGateway, behaviour

__all__ = ["Call", "FakeGateway", "behaviour"]

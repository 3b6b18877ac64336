"""Helpers the tests and the benchmarks share: real processes on loopback (the service,
redis-server), their ports, logs and sockets. Imports nothing from ``tests`` or
``benchmarks``; both import from here."""

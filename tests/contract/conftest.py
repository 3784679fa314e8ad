"""The transport contract suite runs every test against each transport implementation.

``transport_factory`` builds transports of the parametrized kind (all sharing one
namespace, and for the embedded transport one SQLite file, so a second instance sees
the first one's queues like a second process would). Every transport built is closed
at teardown.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.transport import RouteQueues, Transport, route_queues

TransportFactory = Callable[[], Transport]


def _rabbitmq_class() -> type:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # same test as tests/conftest.py IN_CI
        # in CI the RabbitMQ transport must exist: a failed import fails the test
        from router.transport.rabbitmq import RabbitMQTransport
        return RabbitMQTransport
    module = pytest.importorskip("router.transport.rabbitmq",
                                 reason="router.transport.rabbitmq is not written yet")
    return module.RabbitMQTransport  # type: ignore[no-any-return]


@pytest.fixture(params=["embedded", "rabbitmq"])
def transport_factory(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[TransportFactory]:
    created: list[Transport] = []
    if request.param == "embedded":
        from router.transport.embedded import EmbeddedTransport

        path = str(tmp_path / "queues" / "queue.db")

        def make() -> Transport:
            t = EmbeddedTransport(path, namespace=namespace)
            created.append(t)
            return t
    else:
        url = str(request.getfixturevalue("rabbitmq_url"))
        cls = _rabbitmq_class()

        def make() -> Transport:
            t = cls(url, namespace=namespace)
            created.append(t)
            return t

    yield make
    for t in reversed(created):
        t.close()


@pytest.fixture
def route(namespace: str) -> RouteQueues:
    return route_queues(namespace, "r1", delays=(0.2, 0.5), jitter=0.0)


@pytest.fixture
def other_route(namespace: str) -> RouteQueues:
    return route_queues(namespace, "r2", delays=(0.2, 0.5), jitter=0.0)


@pytest.fixture
def transport(transport_factory: TransportFactory, route: RouteQueues, other_route: RouteQueues) -> Transport:
    """A transport with the queues of r1 and r2 declared."""
    t = transport_factory()
    t.setup([route, other_route])
    return t

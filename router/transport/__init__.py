"""Transports: durable queues between intake and workers (see base.py for the contract)."""
from __future__ import annotations

from .base import Consumer, Delivery, RouteQueues, Transport, route_queues

__all__ = ["Consumer", "Delivery", "RouteQueues", "Transport", "open_transport", "route_queues"]


def open_transport(broker_url: str | None, *, namespace: str = "router", data_dir: str = "var") -> Transport:
    """RabbitMQ when a broker URL is given, else the embedded SQLite transport under data_dir."""
    if broker_url:
        from .rabbitmq import RabbitMQTransport

        return RabbitMQTransport(broker_url, namespace=namespace)
    from .embedded import EmbeddedTransport

    return EmbeddedTransport(f"{data_dir}/queue.db", namespace=namespace)

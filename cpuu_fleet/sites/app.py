"""The Celery app shared by the controller (which only sends) and the relays (which consume).

Why these settings: a visit may run CPUU for an hour, and a relay may die in the middle of it.
So a message is acknowledged only after the visit ended (``task_acks_late``), a worker lost with
the message unacknowledged gets it re-delivered to a sibling (``task_reject_on_worker_lost``),
and each worker thread holds one message at a time (``worker_prefetch_multiplier=1``), so a slow
visit never sits on visits another relay could take. Queues are durable and messages persistent:
a broker restart keeps the wave's queued visits. RabbitMQ's ``consumer_timeout`` (server side,
rabbitmq.conf) must be above the longest visit, or the broker closes the relay's channel and
re-delivers a visit that is still running (docs/sites.md).

No result backend: a visit's outcome is written to the journal (the truth), never to the broker.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: The one task name the controller sends and the relays consume.
VISIT_TASK = "cpuu_fleet.sites.visit"
#: What a visit message carries: ids and content hashes, never a secret or the payload itself.
VISIT_FIELDS = ("visit", "run", "play", "host", "attempt", "site", "bundle", "payload")
#: The inventory variable (host or group) naming a host's site.
SITE_VARIABLE = "cpuu_site"
#: Environment variables for the broker, read by the controller and the relays alike.
BROKER_ENV = "CPUU_FLEET_BROKER"
TLS_ENV = {
    "ca_certs": "CPUU_FLEET_BROKER_CA",
    "certfile": "CPUU_FLEET_BROKER_CERT",
    "keyfile": "CPUU_FLEET_BROKER_KEY",
}
#: How the controller sends a visit while the broker is away (restarted, failed over): again
#: every 1, 2, ... 5 s, some 5 minutes in all, instead of kombu's default 3 tries in 0.6 s, after
#: which the host would fail (``internal``) on a broker restart. A publish whose confirm was lost
#: may go twice: a second delivery of a visit is one the relays already handle (its new fencing
#: token supersedes the first; the first outcome stands; docs/sites.md).
PUBLISH_RETRY = {"max_retries": 60, "interval_start": 0, "interval_step": 1, "interval_max": 5}
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def queue_name(site: str) -> str:
    """The durable queue of one site's visits."""
    return f"cpuu-fleet.site.{check_site(site)}"


def check_site(site: str) -> str:
    """A site name is part of a queue name: letters, digits, ``_.-``, at most 63 characters."""
    from cpuu_fleet.errors import InputError

    if not isinstance(site, str) or not _SITE_NAME.match(site):
        raise InputError(
            f"site name {site!r} must be 1-63 letters, digits, '_', '.' or '-' (it names a queue)"
        )
    return site


def shown_url(url: str) -> str:
    """The broker URL as it may be shown: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to reach it (TLS passed through to the AMQP client)."""

    url: str
    tls: dict[str, Any] = field(default_factory=dict)
    """``ssl`` options for the AMQP client (``ca_certs``, ``certfile``, ``keyfile``); with an
    ``amqps://`` URL and none given, the system's CAs verify the broker."""

    def __repr__(self) -> str:  # never the password, even in a traceback
        return f"BrokerSettings(url={shown_url(self.url)!r}, tls={sorted(self.tls)})"

    @classmethod
    def from_environment(cls, url: str | None) -> BrokerSettings | None:
        """``--broker`` (or ``CPUU_FLEET_BROKER``) and the TLS files from the environment."""
        url = url or os.environ.get(BROKER_ENV)
        if not url:
            return None
        tls = {key: os.environ[env] for key, env in TLS_ENV.items() if os.environ.get(env)}
        if tls or url.startswith("amqps://"):
            import ssl

            tls.setdefault("cert_reqs", ssl.CERT_REQUIRED)
        return cls(url, tls)


def make_app(broker: BrokerSettings, sites: tuple[str, ...] = ()) -> Any:
    """A Celery app for ``broker``, with a durable queue declared for each of ``sites``."""
    from celery import Celery
    from kombu import Exchange, Queue

    from cpuu_fleet.redact import REDACTOR

    parts = urlsplit(broker.url)
    if parts.password:
        REDACTOR.add(parts.password)  # a connection error's text never shows it
    app = Celery("cpuu_fleet_sites", broker=broker.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_delivery_mode="persistent",
        broker_connection_retry_on_startup=True,
        broker_transport_options={"confirm_publish": True},
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_queues=[
            Queue(
                queue_name(site),
                Exchange(queue_name(site), type="direct", durable=True),
                routing_key=queue_name(site),
                durable=True,
            )
            for site in sites
        ],
    )
    if broker.tls:
        app.conf.broker_use_ssl = dict(broker.tls)
    return app

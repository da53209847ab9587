"""Sites: host visits on Celery relays (``cpuu-fleet relay --site NAME``), dispatched by the
controller over RabbitMQ with ids only; bundle, payload, outcomes and collected files travel
through the journal's content-addressed rows (see docs/sites.md).

Needs the optional ``sites`` extra (``pip install 'cpuu-fleet[sites]'``): Celery and its AMQP
client. Nothing else in the package imports this one but the command line.
"""

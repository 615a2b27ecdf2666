"""The daemon (``reconciler run``): the loop and what runs beside it.

- ``loop.py``: a pass every interval (jittered; backing off while git or the
  engine is unreachable), the jobs between passes (the backup schedule, the
  restore drill), the heartbeat the healthcheck reads;
- ``endpoints.py``: ``/healthz``, ``/metrics`` and the push webhook over HTTP;
- ``metrics.py``: the Prometheus metrics, read from the state at scrape time;
- ``control.py``: the socket a ``reconciler sync`` beside the daemon asks.

What the daemon runs is put together in ``reconciler/wiring.py``; the
notifications (``reconciler/notifying.py``) are attached there as listeners.
"""

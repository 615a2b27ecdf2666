"""Deploys: one pass, fetch -> verify -> validate -> observe -> plan -> apply -> prune -> status.

- ``passes.py``: the pass as a list of small steps, under the pass lock,
  with status written once at the end (``Reconciler.sync``, ``plan_only``);
- ``verifying.py``: a commit's signature, before anything of it is read;
- ``applying.py``: a plan's typed actions against the engine, health-gated,
  with the old container put back when a new one does not become healthy;
- ``self_update.py``: the reconciler's own container, replaced last by a helper;
- ``collecting.py``: images no container needs any more, after a good deploy;
- ``progress.py``: the deploy in progress, for ``status`` (Reconciling).

The deciding parts are in ``decide/`` (planning, hashing, image GC) and the
desired state in ``model/``; this package only sequences them around the
adapters.
"""

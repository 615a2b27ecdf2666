"""Restores: request -> verify -> safety copy -> stop -> replace -> load -> start.

- ``restore_hook.py``: the pass's step that finds a commit's due
  ``restore.yaml`` requests (``restore_ledger.py`` runs each once), light
  enough for every pass;
- ``restore_pass.py``: runs them through the engine, and undoes what a
  killed restore left behind;
- ``restore_manual.py``: ``reconciler restore`` by hand, the same engine;
- ``restoring.py``: the engine: every byte read and judged before anything
  is stopped, the safety copy, the replace and load, the put-back on failure;
- ``restore_artifacts.py``: what is read back, bounded and verified, in the spool;
- ``restore_drill.py``: the daily drill, a restore into scratch volumes and
  a scratch database that never touches the stack.
"""

"""Restores: request -> verify -> safety copy -> stop -> replace -> load -> start.

- ``restore_pass.py``: the pass's step that runs a commit's due
  ``restore.yaml`` requests, once each (``restore_ledger.py``);
- ``restore_manual.py``: ``reconciler restore`` by hand, the same engine;
- ``restoring.py``: the engine: every byte read and judged before anything
  is stopped, the safety copy, the replace and load, the put-back on failure;
- ``restore_artifacts.py``: what is read back, bounded and verified, in the spool;
- ``restore_drill.py``: the daily drill, a restore into scratch volumes and
  a scratch database that never touches the stack.
"""

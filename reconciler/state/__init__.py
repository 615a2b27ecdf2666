"""The reconciler's durable state on the VM, under ``RECONCILER_STATE_DIR``.

- ``names.py``: every file, lock and socket of the folder, named once;
- ``files.py``: how every state file is written (whole, atomically, private)
  and read (a corrupt one set aside), and the locks (flock);
- ``status.py``: the status of the last passes (the Ready condition, the
  applied and attempted commits, a short history).

No adapter and no flow is imported here: every layer may read and write its
state through these (``reconciler/applied.py`` loads the applied commit's
checkout on top of them).
"""

"""Backups: schedule -> job -> engine -> repository.

- ``commit_policy.py``: a commit's ``backup.yaml``, checked by every pass;
- ``scheduling.py``: when the next backup is due (``backup.yaml``'s schedule);
- ``backup_jobs.py``: the daemon's job and ``reconciler backup run``: the
  commit's policy, the lock, notifications, the status file;
- ``backing_up.py``: one backup run (the lock, the policy's volumes and
  dumps, services held stopped, the status file, then retention), written by
- ``backup_writing.py``: the parts (volumes read by restic in a helper, dumps
  fed to ``restic backup --stdin``), the manifest last; a restore's safety
  copy too;
- ``manifests.py``: a backup as data: its id, its manifest and artifacts,
  checked as read from a store;
- ``stored_backups.py``: the target's backups read back: listing, the checked
  manifest, verify, prune;
- ``restic_backups.py``: the format in the repository (tags, parts, reading
  a part back), on ``backup_target.py`` (one URL: the restic repository and
  the old-format objects) opened with ``backup_key.py``;
- ``stop_journal.py``: services a backup stopped, so a killed one is undone;
- ``backup_status.py``: the last result, for ``status`` and the metrics.
"""

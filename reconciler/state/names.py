"""Every file, folder, lock and socket of the state folder, named once.

Each is written by one part and may be read by others (``status``, the
metrics, the healthcheck, a restore by hand), so the names live here and
nowhere else: a test checks that no other module spells one of them.
"""

from __future__ import annotations

# The deploy pass (deploy/, state/status.py).
STATUS = "status.json"  # the Ready condition, the commits, the history
PASS_LOCK = "pass.lock"  # held by a pass, and by whatever must not run beside one
PASS_LOCK_WAIT_S = 600.0  # how long a pass or a restore by hand waits for it
DEPLOY_PROGRESS = "deploy-progress.json"  # the deploy that runs now (Reconciling)
IMAGES = "images.json"  # the images each service ran, and those the reconciler pulled
GIT_CACHE = "git"  # the remote's clone and the commits' checkouts

# The daemon (daemon/).
HEARTBEAT = "heartbeat"  # touched every tick; the healthcheck reads its age
CONTROL_SOCKET = "control.sock"  # where `reconciler sync` asks the daemon

# Notifications (notifying.py).
NOTIFICATIONS = "notifications.json"  # what was last sent, per kind
NOTIFICATIONS_LOCK = "notifications.lock"

# Backups (backup/).
BACKUPS = "backups"  # file:// backups when backup.yaml names no target
BACKUP_LOCK = "backup.lock"
BACKUP_STATUS = "backup-status.json"  # the last result
BACKUP_SCHEDULE = "backup-schedule.json"  # when the next one is due
BACKUP_STOPS = "backup-stops.json"  # services a running backup stopped

# Restores (restore/).
RESTORE_LEDGER = "restores.json"  # each request, run once
RESTORE_SPOOL = "restore-tmp"  # a restore's verified dumps, before they are written
DRILL = "drill.json"  # the last restore drill
DRILL_LOCK = "drill.lock"

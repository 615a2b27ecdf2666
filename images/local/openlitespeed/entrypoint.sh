#!/bin/sh
# The official image's entrypoint behaviour: start the server, run the
# arguments (if any), then stay while the server runs, so the container stops
# when it does. SIGTERM stops the server gracefully, as `docker stop` expects.
set -u
trap '/usr/local/lsws/bin/lswsctrl stop; exit 0' TERM INT
/usr/local/lsws/bin/lswsctrl start
if [ $# -gt 0 ]; then "$@"; fi
while /usr/local/lsws/bin/lswsctrl status >/dev/null; do
  sleep 5 &
  wait $!
done

#!/bin/sh
# Fills images/reconciler/wheels/ with wheels of the reconciler's dependencies
# (and the build backend), using the host's pip and its configuration, for
# machines where pip inside a container cannot reach an index (a proxy whose
# CA only the host trusts, an air gap). The Dockerfile then installs from these
# wheels alone. Idempotent: pip skips wheels already in the folder.
#
# Usage: images/reconciler/wheelhouse.sh [PYTHON]   (default: python3)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${1:-python3}
# The requirements are read from pyproject.toml rather than by building the
# project wheel: the image builds the package itself from the sources.
"$PYTHON" - "$ROOT/pyproject.toml" >"$HERE/wheels/requirements.txt" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
for req in [*data["build-system"]["requires"], *data["project"]["dependencies"], "wheel"]:
    print(req)
PY
"$PYTHON" -m pip wheel -q --disable-pip-version-check \
  -w "$HERE/wheels" -r "$HERE/wheels/requirements.txt"

#!/bin/sh
# Builds, without any image registry, the local stand-ins for the images the
# desired state and the tests name: a static busybox, a Debian base made with
# debootstrap, and images derived from it with `docker build` (apt works inside).
# Idempotent: an image that already exists is kept unless --force is given.
#
# Usage: images/local/build-base-images.sh [--force] [--only NAME]...
# NAME: busybox debian mariadb python openlitespeed restic phpmyadmin
set -eu

PREFIX=${LOCAL_IMAGE_PREFIX:-reconciler-local}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")" && pwd)
FORCE=0
ONLY=""
# Every image this script can build; --only takes these names alone.
KNOWN="busybox debian mariadb python openlitespeed restic phpmyadmin"

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --only)
      # A name nothing builds must not end in "done" with nothing built.
      [ -n "${2:-}" ] || { echo "--only needs a name; known: $KNOWN" >&2; exit 2; }
      case " $KNOWN " in
        *" $2 "*) ONLY="$ONLY $2" ;;
        *) echo "--only $2: unknown image name; known: $KNOWN" >&2; exit 2 ;;
      esac
      shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[build-base-images] %s\n' "$*" >&2; }

wanted() {
  [ -z "$ONLY" ] && return 0
  case " $ONLY " in *" $1 "*) return 0 ;; esac
  return 1
}

have_image() {
  [ "$FORCE" = 0 ] && docker image inspect "$1" >/dev/null 2>&1
}

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
}

build_busybox() {
  tag="$PREFIX/busybox:latest"
  if have_image "$tag"; then log "$tag present"; return; fi
  need busybox busybox-static
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/var/www" "$root/root"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin' -c 'CMD ["sh"]' - "$tag" >/dev/null
  rm -rf "$root"
  log "$tag built"
}

build_debian() {
  tag="$PREFIX/debian:$SUITE"
  if have_image "$tag"; then log "$tag present"; return; fi
  need debootstrap debootstrap
  root=$(mktemp -d)
  log "debootstrap $SUITE (about a minute)"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >/dev/null
  rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' - "$tag" >/dev/null
  rm -rf "$root"
  log "$tag built"
}

build_derived() {
  name=$1
  tag="$PREFIX/$name"
  if have_image "$tag"; then log "$tag present"; return; fi
  log "docker build $tag"
  docker build -q --build-arg "BASE=$PREFIX/debian:$SUITE" \
    -t "$tag" "$HERE/$2" >/dev/null
  log "$tag built"
}

wanted busybox && build_busybox
if wanted debian || wanted mariadb || wanted python || wanted openlitespeed || wanted restic \
  || wanted phpmyadmin; then
  build_debian
fi
# The derived images build side by side: each is mostly apt downloading.
pids=""
for pair in mariadb:mariadb python:python openlitespeed:openlitespeed restic:restic \
  phpmyadmin:phpmyadmin; do
  name=${pair%%:*}
  if wanted "$name"; then
    build_derived "$name:local" "${pair#*:}" &
    pids="$pids $!"
  fi
done
failed=0
for pid in $pids; do
  wait "$pid" || failed=1
done
[ "$failed" = 0 ] || { log "an image failed to build (see above)"; exit 1; }
log "done"

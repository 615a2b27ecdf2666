#!/bin/sh
# A secret of this container's own for phpMyAdmin's login cookie (the package
# makes one at build time, which every container of the image would share).
set -eu
secret=/var/lib/phpmyadmin/blowfish_secret.inc.php
if [ ! -f "$secret" ]; then
  value=$(head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
  printf "<?php\n\$cfg['blowfish_secret'] = '%s';\n" "$value" >"$secret"
  chown root:www-data "$secret"
  chmod 640 "$secret"
fi
if [ "${1:-}" = apache2-foreground ]; then
  set +u  # envvars reads variables that may be unset
  # shellcheck disable=SC1091
  . /etc/apache2/envvars
  set -u
  mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
  exec apache2 -DFOREGROUND
fi
exec "$@"

#!/bin/bash
# Initialises an empty data folder the way the official image does, from
# MARIADB_* (or MYSQL_*) variables, then runs the server as mysql.
set -euo pipefail

file_env() {
  local var=$1 fallback=${2:-}
  local file_var="${var}_FILE"
  if [ -n "${!file_var:-}" ]; then
    export "$var"="$(<"${!file_var}")"
  elif [ -z "${!var:-}" ] && [ -n "$fallback" ] && [ -n "${!fallback:-}" ]; then
    export "$var"="${!fallback}"
  fi
}

if [ "${1:-}" = mariadbd ] || [ "${1:-}" = mysqld ]; then
  file_env MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD
  file_env MARIADB_DATABASE MYSQL_DATABASE
  file_env MARIADB_USER MYSQL_USER
  file_env MARIADB_PASSWORD MYSQL_PASSWORD
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql
  if [ ! -d /var/lib/mysql/mysql ]; then
    if [ -z "${MARIADB_ROOT_PASSWORD:-}" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ]; then
      echo "error: database is uninitialized and MARIADB_ROOT_PASSWORD is not set" >&2
      exit 1
    fi
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
    mariadbd --user=mysql --skip-networking --socket=/run/mysqld/init.sock &
    pid=$!
    for _ in $(seq 60); do
      mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1 && break
      sleep 0.5
    done
    {
      echo "DELETE FROM mysql.user WHERE user='';"
      echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD:-}';"
      echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
      echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('${MARIADB_ROOT_PASSWORD:-}');"
      echo "CREATE USER IF NOT EXISTS 'healthcheck'@'localhost' IDENTIFIED VIA unix_socket;"
      if [ -n "${MARIADB_DATABASE:-}" ]; then
        echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;"
      fi
      if [ -n "${MARIADB_USER:-}" ]; then
        echo "CREATE USER IF NOT EXISTS '${MARIADB_USER}'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';"
        [ -n "${MARIADB_DATABASE:-}" ] && echo "GRANT ALL ON \`${MARIADB_DATABASE}\`.* TO '${MARIADB_USER}'@'%';"
      fi
      echo "FLUSH PRIVILEGES;"
    } | mariadb --socket=/run/mysqld/init.sock -uroot
    kill "$pid"; wait "$pid" || true
  fi
  exec mariadbd --user=mysql "${@:2}"
fi
exec "$@"

#!/bin/bash
# The subset of the official image's healthcheck.sh that compose files use:
# --connect and --innodb_initialized both mean "the server answers".
exec mariadb-admin --socket=/run/mysqld/mysqld.sock --user=root ping >/dev/null 2>&1

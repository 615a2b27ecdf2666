#!/bin/sh
# install.sh: bootstrap the reconciler on a VM (or on a developer's PC).
#
# Run once as root; run again to upgrade in place (the env file is kept).
#   sh install.sh --repo ssh://git@github.com/ME/site.git \
#       --backup-target s3://my-bucket/prod --timezone Europe/Bucharest
#   sh install.sh --local            # a developer's PC, this checkout, local backups
#   sh install.sh --uninstall        # remove the reconciler; volumes are never touched
#
# What it does, each step skipped when already done:
#  1. checks the OS (Debian, Ubuntu, Fedora);
#  2. installs the Docker engine from the distribution's packages when missing;
#  3. writes the env file (mode 600) from flags or prompts, keeping an existing one;
#  4. for an ssh:// repository, makes a deploy key and prints where to add it;
#     with --verify, puts the allowed signers or public keys in the config dir;
#  5. builds the reconciler image from images/reconciler (or uses --image), then
#     makes the VM's age key for encrypted secrets in git when there is none
#     and prints its recipient (docs/secrets.md); generates the backup key
#     (RECONCILER_BACKUP_KEY) when the env file has none and prints it once;
#  6. runs one sync in a short-lived container, which deploys desired-state/,
#     the reconciler's own service included (restart=unless-stopped, the Docker
#     socket, the state dir at the same path inside as outside);
#  7. waits for the reconciler to be healthy, then says where the site and
#     phpMyAdmin are and what each key it printed is for.
#
# The screen gets one line per step; the tools' own output (apt-get, pip,
# docker build, debootstrap, the sync's log) goes to the install log, named on
# the first line (default /var/log/reconciler-install.log, mode 600). No key or
# password is ever written to it.
set -eu

USAGE='Usage: sh install.sh [OPTIONS]

Settings (written to the env file when it is created; an existing file is kept):
  --repo URL              repository to follow (ssh://, https://, git://, file://, path)
  --branch NAME           branch to follow (default: main)
  --project NAME          Compose project name (default: site)
  --backup-target URL     s3://BUCKET/PREFIX or file:///PATH
  --aws-access-key-id ID  --aws-secret-access-key KEY  --aws-region REGION
  --s3-endpoint URL       for S3-compatible stores (AWS_ENDPOINT_URL_S3)
  --timezone TZ           time zone of the 05:04 backup (default: UTC)
  --set KEY=VALUE         any other variable of desired-state/example.env (repeatable)

Signed commits (docs/signing.md; applied to an existing env file too):
  --verify MODE           apply only commits signed by an allowed key: ssh or gpg
                          (off turns verification off)
  --allowed-signers FILE  with ssh: an ssh allowed-signers file, copied to the config dir
  --gpg-keys FILE         with gpg: armored public keys (gpg --armor --export ...),
                          imported into a keyring in the config dir

Modes:
  --local                 a developer'"'"'s PC: follow this checkout, back up to a local
                          folder, build local base images when no registry answers
  --uninstall             remove the reconciler container (never a volume) and stop
  --remove-image          with --uninstall: remove its image too

Images:
  --image IMAGE           use this reconciler image (pulled if absent) instead of building
  --image-name NAME       repository name of the image built here (default: reconciler)
  --base-image IMAGE      base of images/reconciler (env RECONCILER_BASE_IMAGE;
                          default: the Dockerfile'"'"'s python:3.11-slim-bookworm)
  --local-images          no registry: build images/local/ stand-ins and use them

Paths and behaviour:
  --config-dir DIR        env file, deploy key and age key (default: /etc/reconciler)
  --known-hosts FILE      with an ssh:// repository: the host keys of the server (ssh-keyscan
                          output checked against the fingerprints your git host publishes);
                          without it install.sh reads them with ssh-keyscan
  --no-age-key            do not create the age key for encrypted secrets (docs/secrets.md)
  --state-dir DIR         durable state (default: /var/lib/reconciler)
  --yes                   never prompt; a missing required value is an error
  --timeout SECONDS       how long to wait for the first sync (default: 600)
  --log FILE              the install log, appended to, mode 600
  --bin-dir DIR           where the host command reconciler goes (default: /usr/local/bin)
                          (default: /var/log/reconciler-install.log)
  -h, --help              this help'

# The install log, once open_log has made it (empty before: no file is written,
# and noisy passes the output through).
INSTALL_LOG=""

# log MESSAGE: one line on screen, "step: what", and the same line in the log.
log() {
  printf '[install] %s\n' "$*" >&2
  if [ -n "$INSTALL_LOG" ]; then printf '[install] %s\n' "$*" >>"$INSTALL_LOG"; fi
}
die() {
  printf '[install] error: %s\n' "$*" >&2
  if [ -n "$INSTALL_LOG" ]; then printf '[install] error: %s\n' "$*" >>"$INSTALL_LOG"; fi
  exit 1
}

# noisy CMD...: runs CMD with its stdout and stderr appended to the install log
# instead of the screen. On failure it prints the log's last lines and its path
# and returns CMD's status. Never for a command that prints a key or a
# password: the log is a file that outlives the run (and may be sent to
# someone for help).
noisy() {
  if [ -z "$INSTALL_LOG" ]; then
    "$@" >&2
    return
  fi
  printf '$ %s\n' "$*" >>"$INSTALL_LOG"
  noisy_rc=0
  "$@" >>"$INSTALL_LOG" 2>&1 </dev/null || noisy_rc=$?
  if [ "$noisy_rc" != 0 ]; then
    printf '[install] %s failed (exit %s); the last lines of %s:\n' "$1" "$noisy_rc" "$INSTALL_LOG" >&2
    tail -n 20 "$INSTALL_LOG" | sed 's/^/    /' >&2
  fi
  return "$noisy_rc"
}

HERE=$(cd "$(dirname "$0")" && pwd)
MODE=install
LOCAL=0
YES=0
REMOVE_IMAGE=0
AGE_KEY=1
LOCAL_IMAGES=${RECONCILER_LOCAL_IMAGES:-0}
IMAGE=""
IMAGE_NAME=reconciler
BASE_IMAGE=${RECONCILER_BASE_IMAGE:-}
CONFIG_DIR=${RECONCILER_CONFIG_DIR:-/etc/reconciler}
LOG_FILE=/var/log/reconciler-install.log
LOG_ROTATE_BYTES=10485760
BIN_DIR=/usr/local/bin
# The first comment line of the host command this script writes: only a file
# that has it is replaced or removed.
COMMAND_MARK="written by the reconciler's install.sh"
STATE_DIR=${RECONCILER_STATE_DIR:-/var/lib/reconciler}
TIMEOUT=600
REPO="" BRANCH="" PROJECT="" BACKUP_TARGET="" TIMEZONE=""
AWS_ID="" AWS_SECRET="" AWS_REGION="" S3_ENDPOINT=""
VERIFY="" ALLOWED_SIGNERS="" GPG_KEYS="" KNOWN_HOSTS=""
# The keys printed in this run, for the closing lines.
SHOWN_DEPLOY_KEY=0 SHOWN_RECIPIENT=0 SHOWN_BACKUP_KEY=0
# The image a rebuild took the tag from (see ensure_image), for prune_old_builds.
PREVIOUS_ID=""
# Extra KEY=VALUE lines for a new env file, one per line.
EXTRA=""
NL='
'

need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) printf '%s\n' "$USAGE"; exit 0 ;;
    --repo) need_value "$@"; REPO=$2; shift ;;
    --branch) need_value "$@"; BRANCH=$2; shift ;;
    --project) need_value "$@"; PROJECT=$2; shift ;;
    --backup-target) need_value "$@"; BACKUP_TARGET=$2; shift ;;
    --aws-access-key-id) need_value "$@"; AWS_ID=$2; shift ;;
    --aws-secret-access-key) need_value "$@"; AWS_SECRET=$2; shift ;;
    --aws-region) need_value "$@"; AWS_REGION=$2; shift ;;
    --s3-endpoint) need_value "$@"; S3_ENDPOINT=$2; shift ;;
    --timezone) need_value "$@"; TIMEZONE=$2; shift ;;
    --set)
      need_value "$@"
      case "$2" in [A-Za-z_]*=*) ;; *) die "--set wants KEY=VALUE, not '$2'" ;; esac
      EXTRA="$EXTRA$2$NL"; shift ;;
    --verify) need_value "$@"; VERIFY=$2; shift ;;
    --allowed-signers) need_value "$@"; ALLOWED_SIGNERS=$2; shift ;;
    --gpg-keys) need_value "$@"; GPG_KEYS=$2; shift ;;
    --known-hosts) need_value "$@"; KNOWN_HOSTS=$2; shift ;;
    --local) LOCAL=1 ;;
    --uninstall) MODE=uninstall ;;
    --remove-image) REMOVE_IMAGE=1 ;;
    --image) need_value "$@"; IMAGE=$2; shift ;;
    --image-name) need_value "$@"; IMAGE_NAME=$2; shift ;;
    --base-image) need_value "$@"; BASE_IMAGE=$2; shift ;;
    --local-images) LOCAL_IMAGES=1 ;;
    --config-dir) need_value "$@"; CONFIG_DIR=$2; shift ;;
    --state-dir) need_value "$@"; STATE_DIR=$2; shift ;;
    --no-age-key) AGE_KEY=0 ;;
    --yes|--non-interactive) YES=1 ;;
    --timeout) need_value "$@"; TIMEOUT=$2; shift ;;
    --log) need_value "$@"; LOG_FILE=$2; shift ;;
    --bin-dir) need_value "$@"; BIN_DIR=$2; shift ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

case "$CONFIG_DIR$STATE_DIR" in
  *' '*) die "--config-dir and --state-dir must not contain spaces" ;;
esac
case "$CONFIG_DIR" in /*) ;; *) die "--config-dir must be an absolute path" ;; esac
case "$STATE_DIR" in /*) ;; *) die "--state-dir must be an absolute path" ;; esac
ENV_FILE=$CONFIG_DIR/reconciler.env

# A key file alone says which mode is meant.
[ -z "$VERIFY" ] && [ -n "$ALLOWED_SIGNERS" ] && VERIFY=ssh
[ -z "$VERIFY" ] && [ -n "$GPG_KEYS" ] && VERIFY=gpg
case "$VERIFY" in
  ""|off) ;;
  ssh) [ -z "$GPG_KEYS" ] || die "--gpg-keys goes with --verify gpg, not ssh" ;;
  gpg) [ -z "$ALLOWED_SIGNERS" ] || die "--allowed-signers goes with --verify ssh, not gpg" ;;
  *) die "--verify takes ssh, gpg or off, not '$VERIFY'" ;;
esac
for file in "$ALLOWED_SIGNERS" "$GPG_KEYS" "$KNOWN_HOSTS"; do
  [ -z "$file" ] || [ -r "$file" ] || die "cannot read $file"
done

# --- 1. the OS ------------------------------------------------------------------

OS_ID=""
check_os() {
  [ -r /etc/os-release ] || die "cannot tell the OS (no /etc/os-release); supported: Debian, Ubuntu, Fedora"
  # shellcheck disable=SC1091
  OS_ID=$(. /etc/os-release && printf '%s' "${ID:-}")
  case "$OS_ID" in
    debian|ubuntu|fedora) ;;
    *) die "unsupported OS '$OS_ID': install.sh supports Debian, Ubuntu and Fedora (install Docker and run the reconciler image by hand elsewhere: docs/operations.md)" ;;
  esac
}

require_root() {
  [ "$(id -u)" = 0 ] || die "run as root (sudo sh install.sh ...): it installs packages and writes $CONFIG_DIR"
}

# open_log: makes the install log (mode 600: tool output may name paths and
# settings) and says where it is. Appended to, so a rerun keeps the earlier runs;
# past LOG_ROTATE_BYTES it becomes LOG_FILE.1 (one generation kept), as a
# logrotate rule would: a docker build's output per run must not fill /var/log.
open_log() {
  if [ -f "$LOG_FILE" ] && [ "$(wc -c <"$LOG_FILE")" -gt "$LOG_ROTATE_BYTES" ]; then
    mv -f "$LOG_FILE" "$LOG_FILE.1" 2>/dev/null \
      || die "cannot rotate the install log $LOG_FILE (--log FILE names another)"
  fi
  (umask 077 && mkdir -p "$(dirname "$LOG_FILE")" && : >>"$LOG_FILE") 2>/dev/null \
    || die "cannot write the install log $LOG_FILE (--log FILE names another)"
  chmod 600 "$LOG_FILE"
  INSTALL_LOG=$LOG_FILE
  # Not the command line: it may hold --aws-secret-access-key.
  printf '\n===== install.sh, %s =====\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" >>"$INSTALL_LOG"
  log "log: the tools' output goes to $INSTALL_LOG"
}

# --- 2. the Docker engine -------------------------------------------------------

install_packages() {
  case "$OS_ID" in
    debian|ubuntu)
      log "packages: installing $*"
      noisy env DEBIAN_FRONTEND=noninteractive apt-get update -q || return
      noisy env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ;;
    fedora)
      log "packages: installing $*"
      noisy dnf install -y -q "$@" ;;
  esac
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then
    log "docker: the engine answers"
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    case "$OS_ID" in
      debian|ubuntu) install_packages docker.io ;;
      # Fedora packages the engine as moby-engine (the docker CLI comes with it).
      fedora) install_packages moby-engine || install_packages docker ;;
    esac
  fi
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    noisy systemctl enable --now docker || noisy systemctl start docker
  else
    # No systemd (a container, WSL): start the engine in the background.
    log "docker: starting dockerd (no systemd here: it will not survive a reboot)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -le 60 ] || die "the Docker engine did not answer within 60 s (see journalctl -u docker)"
    sleep 1
  done
  log "docker: the engine runs"
}

# --- 3. the env file -------------------------------------------------------------

# private_dir DIR: mkdir -p with 0700 for every level it creates, and DIR itself
# 0700. The env file, keys, state and local backups hold secrets and dumps with
# password hashes: nobody else on the host may read them.
private_dir() {
  (umask 077 && mkdir -p "$1") || die "cannot create $1"
  chmod 700 "$1"
}

# get_env KEY: the value of KEY in the env file (empty when absent).
get_env() {
  [ -f "$ENV_FILE" ] || return 0
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

# set_env KEY VALUE: replace or append one line, keeping the rest of the file.
set_env() {
  if grep -q "^$1=" "$ENV_FILE"; then
    [ "$(get_env "$1")" = "$2" ] && return 0
    tmp=$(mktemp "$CONFIG_DIR/.env.XXXXXX")
    awk -v key="$1" -v line="$1=$2" 'index($0, key "=") == 1 { print line; next } { print }' \
      "$ENV_FILE" >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$ENV_FILE"
  else
    printf '%s=%s\n' "$1" "$2" >>"$ENV_FILE"
  fi
}

# ask VAR QUESTION DEFAULT: prompt on a terminal; with --yes (or no terminal) take
# the default, and die when a required value (no default) is missing.
ask() {
  eval "current=\${$1}"
  # shellcheck disable=SC2154  # set by the eval above
  [ -n "$current" ] && return 0
  if [ "$YES" = 0 ] && [ -t 0 ]; then
    printf '%s%s: ' "$2" "${3:+ [$3]}" >&2
    case "$1" in
      # A secret is not echoed to the terminal (nor left in its scrollback).
      AWS_SECRET) stty -echo; read -r answer || answer=""; stty echo; echo >&2 ;;
      *) read -r answer || answer="" ;;
    esac
    [ -n "$answer" ] || answer=$3
  else
    answer=$3
  fi
  [ -n "$answer" ] || die "$2: no value (give it as a flag, see --help)"
  eval "$1=\$answer"
}

random_secret() {
  # 32 characters from the kernel's CSPRNG, letters and digits only, so the
  # value needs no quoting in the env file or in SQL.
  head -c 96 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32
}

write_env_file() {
  private_dir "$CONFIG_DIR"
  if [ -f "$ENV_FILE" ]; then
    log "env file: keeping $ENV_FILE"
    if [ -n "$REPO$BRANCH$PROJECT$BACKUP_TARGET$TIMEZONE$AWS_ID$AWS_SECRET$AWS_REGION$S3_ENDPOINT$EXTRA" ]; then
      log "warning: the settings given as flags are not applied to an existing env file; edit it, then run install.sh again"
    fi
    chmod 600 "$ENV_FILE"
    return
  fi
  if [ "$LOCAL" = 1 ]; then
    # The checkout this script is in, followed at its own path.
    [ -n "$REPO" ] || REPO=$HERE
    case "$REPO" in
      *' '*) die "the checkout's path '$REPO' has a space: the reconciler mounts it at the same path; move or link it to a path without one" ;;
    esac
    : "${BACKUP_TARGET:=file://$STATE_DIR/backups}"
    : "${BRANCH:=$(git -C "$REPO" rev-parse --abbrev-ref HEAD 2>/dev/null || echo main)}"
  fi
  ask REPO "Git repository to follow (ssh://git@github.com/ME/site.git)" ""
  ask BRANCH "Branch" main
  ask PROJECT "Compose project name" site
  ask TIMEZONE "Time zone of the 05:04 backup" UTC
  ask BACKUP_TARGET "Backup target (s3://BUCKET/PREFIX or file:///PATH)" ""
  case "$BACKUP_TARGET" in
    s3://*)
      ask AWS_ID "AWS_ACCESS_KEY_ID" ""
      ask AWS_SECRET "AWS_SECRET_ACCESS_KEY" ""
      ask AWS_REGION "AWS_DEFAULT_REGION" us-east-1 ;;
    file:///*) private_dir "${BACKUP_TARGET#file://}" ;;
    *) die "backup target '$BACKUP_TARGET': use s3://BUCKET/PREFIX or file:///PATH" ;;
  esac
  old_umask=$(umask)
  umask 077
  {
    echo "# The reconciler's settings and the stack's secrets (desired-state/example.env"
    echo "# documents every variable). Written by install.sh; kept when it runs again."
    echo "RECONCILER_REPO=$REPO"
    echo "RECONCILER_BRANCH=$BRANCH"
    echo "RECONCILER_PROJECT=$PROJECT"
    echo "RECONCILER_STATE_DIR=$STATE_DIR"
    echo "RECONCILER_CONFIG_DIR=$CONFIG_DIR"
    echo "RECONCILER_LOG_FORMAT=json"
    [ "$LOCAL" = 1 ] && echo "RECONCILER_LOCAL_REPO=$REPO"
    echo "BACKUP_TARGET=$BACKUP_TARGET"
    echo "BACKUP_TIMEZONE=$TIMEZONE"
    if [ -n "$AWS_ID" ]; then
      echo "AWS_ACCESS_KEY_ID=$AWS_ID"
      echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET"
      echo "AWS_DEFAULT_REGION=$AWS_REGION"
    fi
    [ -n "$S3_ENDPOINT" ] && echo "AWS_ENDPOINT_URL_S3=$S3_ENDPOINT"
    echo "MARIADB_ROOT_PASSWORD=$(random_secret)"
    echo "MARIADB_PASSWORD=$(random_secret)"
    if [ "$LOCAL_IMAGES" = 1 ]; then
      echo "# No registry here: the stand-ins built by images/local/build-base-images.sh."
      echo "WEBSERVER_BASE_IMAGE=reconciler-local/openlitespeed:local"
      echo "MARIADB_IMAGE=reconciler-local/mariadb:local"
      echo "PHPMYADMIN_IMAGE=reconciler-local/phpmyadmin:local"
    fi
    printf '%s' "$EXTRA"
    env_defaults
  } >"$ENV_FILE"
  umask "$old_umask"
  log "env file: wrote $ENV_FILE (mode 600; database passwords generated)"
}

# Every other setting, commented out at its default, so the file shows what can
# be changed (README.md, "Configuration", says what each one does). A test
# checks that every variable the reconciler reads is listed here.
env_defaults() {
  cat <<'EOF_DEFAULTS'

# --- every other setting, at its default: uncomment a line to change it -------
# The reconciler (README.md, "Configuration"):
# RECONCILER_INTERVAL=60                    seconds between polls of the branch
# RECONCILER_DIR=desired-state              the desired-state folder in the repository
# RECONCILER_SSH_KEY=                       deploy key for ssh:// remotes (install.sh sets it)
# RECONCILER_KNOWN_HOSTS=                   the ssh server's host keys (beside the key)
# RECONCILER_BACKUP_DIR=                    file:// backups when backup.yaml names no target
# RECONCILER_SPOOL_DIR=                     a restore's verified dumps, restic's cache (the state dir)
# RECONCILER_SAFETY_COPY_DIR=               a local folder for restores' safety copies (the target)
# RECONCILER_NOTIFY_WEBHOOK_URL=            POST a JSON object per failure, recovery, restore
# RECONCILER_NOTIFY_SLACK_URL=              a Slack-compatible incoming webhook
# RECONCILER_COMMIT_STATUS_TOKEN=           pending/success/failure on the deployed commit
# RECONCILER_COMMIT_STATUS_PROVIDER=        github, gitea or bitbucket (guessed from the repo)
# RECONCILER_COMMIT_STATUS_API=             the forge's API base (guessed from the repo)
# RECONCILER_BACKUP_PING_URL=               healthchecks.io-style URL pinged by each backup
# RECONCILER_METRICS_ADDR=127.0.0.1:9365    /healthz and /metrics inside the container, or off
# RECONCILER_METRICS_PORT=9365              the VM's 127.0.0.1 port they are published on
# RECONCILER_WEBHOOK_SECRET=                turns on deploy on push, POST /hooks/push (docs/webhooks.md)
# RECONCILER_VERIFY=off                     ssh or gpg: apply only signed commits
# RECONCILER_ALLOWED_SIGNERS=/etc/reconciler/allowed_signers
# RECONCILER_GPG_HOME=/etc/reconciler/gnupg
# RECONCILER_AGE_KEY_FILE=/etc/reconciler/age.key
# RECONCILER_ENGINE=auto                    engine or swarm; auto: swarm mode on a Swarm manager (docs/operations.md)
# The stack (desired-state/compose.yaml):
# HTTP_PORT=80
# HTTPS_PORT=443
# PHPMYADMIN_PORT=8081
# COMPOSE_PROFILES=                         admin: phpMyAdmin on 127.0.0.1:PHPMYADMIN_PORT
EOF_DEFAULTS
}

# The host's `reconciler` command: the real one runs in the reconciler's
# container, where its settings, state and the daemon are. A terminal gets
# one (-t) only when there is one: `docker exec -it` in cron or a script fails
# with "the input device is not a TTY". stdin stays open (-i) for the commands
# that read it (backup key add).
install_command() {
  target=$BIN_DIR/reconciler
  if [ -e "$target" ] && ! grep -q "$COMMAND_MARK" "$target" 2>/dev/null; then
    log "command: $target exists and is not ours; kept (use docker exec $DAEMON reconciler)"
    return 0
  fi
  mkdir -p "$BIN_DIR"
  tmp=$(mktemp "$BIN_DIR/.reconciler.XXXXXX")
  cat >"$tmp" <<EOF_COMMAND
#!/bin/sh
# $COMMAND_MARK: the reconciler's command line, run inside its container.
if [ -t 0 ] && [ -t 1 ]; then
  exec docker exec -it $DAEMON reconciler "\$@"
fi
exec docker exec -i $DAEMON reconciler "\$@"
EOF_COMMAND
  chmod 755 "$tmp"
  mv "$tmp" "$target"
  log "command: $target runs reconciler in $DAEMON (try: reconciler status)"
}

# --- 4. the deploy key -----------------------------------------------------------

ssh_host_of() {
  case "$1" in
    ssh://*) rest=${1#ssh://}; rest=${rest#*@}; rest=${rest%%/*}; printf '%s' "${rest%%:*}" ;;
    *@*:*) rest=${1#*@}; printf '%s' "${rest%%:*}" ;;
  esac
}

ssh_port_of() {
  case "$1" in
    ssh://*) rest=${1#ssh://}; rest=${rest#*@}; rest=${rest%%/*}
      case "$rest" in *:*) printf '%s' "${rest##*:}"; return ;; esac ;;
  esac
  printf '22'
}

# has_host_key FILE: FILE holds at least one host key line (not only comments).
has_host_key() {
  [ -f "$1" ] && grep -q '^[^#[:space:]]' "$1"
}

# ensure_known_hosts HOST PORT: the host keys the reconciler checks the git
# server against, in $CONFIG_DIR/known_hosts (0600). From --known-hosts, else
# read once with ssh-keyscan (trust on first use, recorded: a later change of
# the server's key makes fetches fail loudly). Never an empty file: the
# reconciler refuses one, and an empty file once meant "accept any key".
ensure_known_hosts() {
  known=$CONFIG_DIR/known_hosts
  if [ -n "$KNOWN_HOSTS" ]; then
    has_host_key "$KNOWN_HOSTS" \
      || die "--known-hosts $KNOWN_HOSTS holds no host key (ssh-keyscan -p $2 $1 prints the lines)"
  elif has_host_key "$known"; then
    set_env RECONCILER_KNOWN_HOSTS "$known"
    return 0
  fi
  tmp=$(umask 077 && mktemp "$CONFIG_DIR/.known_hosts.XXXXXX") || die "cannot write in $CONFIG_DIR"
  if [ -n "$KNOWN_HOSTS" ]; then
    cat "$KNOWN_HOSTS" >"$tmp"
  else
    command -v ssh-keyscan >/dev/null 2>&1 || install_packages openssh-client
    ssh-keyscan -p "$2" "$1" >"$tmp" 2>"$tmp.err" || true
    if ! has_host_key "$tmp"; then
      said=$(tr '\n' ' ' <"$tmp.err")
      rm -f "$tmp" "$tmp.err"
      die "could not read the host key of $1 (port $2) with ssh-keyscan${said:+ ($said)}: check the host and port in the repository URL and that this machine reaches it, or pass --known-hosts FILE with the server's lines (ssh-keyscan -p $2 $1, checked against the fingerprints your git host publishes)"
    fi
    rm -f "$tmp.err"
  fi
  chmod 600 "$tmp"
  mv "$tmp" "$known"
  log "known_hosts: $known holds the host keys of $1"
  set_env RECONCILER_KNOWN_HOSTS "$known"
}

ensure_deploy_key() {
  repo=$(get_env RECONCILER_REPO)
  host=$(ssh_host_of "$repo")
  [ -n "$host" ] || return 0
  key=$CONFIG_DIR/deploy_key
  if [ ! -f "$key" ]; then
    command -v ssh-keygen >/dev/null 2>&1 || install_packages openssh-client
    ssh-keygen -q -t ed25519 -N '' -C "reconciler@$(hostname)" -f "$key"
    log "deploy key: generated $key"
  fi
  chmod 600 "$key" "$key.pub"
  set_env RECONCILER_SSH_KEY "$key"
  ensure_known_hosts "$host" "$(ssh_port_of "$repo")"
  SHOWN_DEPLOY_KEY=1
  cat >&2 <<EOF
[install] The reconciler reads $repo with this deploy key (read-only access is enough):

$(cat "$key.pub")

  GitHub:    the repository's Settings > Deploy keys > Add deploy key
  Bitbucket: the repository's Repository settings > Access keys > Add key
  GitLab:    the project's Settings > Repository > Deploy keys
EOF
  if [ "$YES" = 0 ] && [ -t 0 ]; then
    printf '[install] Press Enter once the key is added... ' >&2
    read -r _ || true
  fi
}

# --- 4b. signed commits ------------------------------------------------------------

# The keys live in the config dir, which the reconciler's container mounts
# read-only at the same path. Each is replaced whole (written aside, renamed),
# so the daemon never reads half a file and notices the change on its next pass.
install_allowed_signers() {
  target=$CONFIG_DIR/allowed_signers
  if [ -n "$ALLOWED_SIGNERS" ]; then
    grep -q '^[^#[:space:]]' "$ALLOWED_SIGNERS" \
      || die "$ALLOWED_SIGNERS lists no key (one line per signer: EMAIL namespaces=\"git\" ssh-ed25519 AAAA...)"
    tmp=$(mktemp "$CONFIG_DIR/.allowed_signers.XXXXXX")
    cat "$ALLOWED_SIGNERS" >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$target"
    log "signed commits: allowed signers installed in $target"
  fi
  [ -s "$target" ] || die "--verify ssh needs --allowed-signers FILE (there is no $target yet)"
  set_env RECONCILER_ALLOWED_SIGNERS "$target"
}

install_gpg_keys() {
  home=$CONFIG_DIR/gnupg
  if [ -n "$GPG_KEYS" ]; then
    if ! command -v gpg >/dev/null 2>&1; then
      case "$OS_ID" in fedora) install_packages gnupg2 ;; *) install_packages gpg ;; esac
    fi
    # Imported in a short folder of /tmp, moved into place after: gpg-agent's
    # socket lives in the home, and a socket's path has at most 107 bytes,
    # which a long --config-dir passes. Only public keys ever stay in it.
    tmp=$(mktemp -d /tmp/reconciler-gnupg.XXXXXX)
    chmod 700 "$tmp"
    if ! gpg --batch --quiet --homedir "$tmp" --import "$GPG_KEYS" 2>"$tmp.err"; then
      cat "$tmp.err" >&2
      rm -rf "$tmp" "$tmp.err"
      die "gpg could not import $GPG_KEYS"
    fi
    rm -f "$tmp.err"
    secret=$(gpg --batch --homedir "$tmp" --with-colons --list-secret-keys 2>/dev/null || true)
    public=$(gpg --batch --homedir "$tmp" --with-colons --list-keys 2>/dev/null || true)
    gpgconf --homedir "$tmp" --kill all >/dev/null 2>&1 || true
    if [ -n "$secret" ]; then
      rm -rf "$tmp"
      die "$GPG_KEYS holds a private key: give the public keys only (gpg --armor --export EMAIL...)"
    fi
    if ! printf '%s\n' "$public" | grep -q '^pub:'; then
      rm -rf "$tmp"
      die "$GPG_KEYS holds no public key"
    fi
    rm -f "$tmp"/S.* "$tmp"/*~
    # The keyring is the trust list: no owner trust, and no trustdb to update
    # in a folder the reconciler only reads. Expiry and revocation still count.
    printf '%s\n' '# Written by install.sh: every key here is trusted (docs/signing.md).' \
      'trust-model always' >"$tmp/gpg.conf"
    rm -rf "$home.old"
    [ -d "$home" ] && mv "$home" "$home.old"
    mv "$tmp" "$home"
    rm -rf "$home.old"
    log "signed commits: $(printf '%s\n' "$public" | grep -c '^pub:') public key(s) in $home"
  fi
  [ -f "$home/pubring.kbx" ] || [ -f "$home/pubring.gpg" ] \
    || die "--verify gpg needs --gpg-keys FILE (there is no keyring in $home yet)"
  set_env RECONCILER_GPG_HOME "$home"
}

ensure_verification() {
  [ -n "$VERIFY" ] || return 0
  case "$VERIFY" in
    ssh) install_allowed_signers ;;
    gpg) install_gpg_keys ;;
  esac
  before=$(get_env RECONCILER_VERIFY)
  set_env RECONCILER_VERIFY "$VERIFY"
  log "signed commits: RECONCILER_VERIFY=$VERIFY"
  # Settings are read when the daemon starts: a running one learns a new mode
  # by a restart (new keys it notices by itself).
  project=$(get_env RECONCILER_PROJECT)
  daemon=${project:-site}-reconciler-1
  if [ "${before:-off}" != "$VERIFY" ] && docker container inspect "$daemon" >/dev/null 2>&1; then
    docker restart "$daemon" >/dev/null && log "restarted $daemon to verify with $VERIFY"
  fi
  return 0
}

# --- 5. the image ------------------------------------------------------------------

# Pulls fail at once where no registry is reachable; that decides --local-images.
can_have() {
  docker image inspect "$1" >/dev/null 2>&1 || docker pull -q "$1" >/dev/null 2>&1
}

# The files that go into the reconciler's image (.dockerignore, Dockerfile).
IMAGE_SOURCES="pyproject.toml README.md reconciler images/reconciler"
# The ID of the base image a build of the reconciler was made on.
BASE_LABEL=dev.reconciler.image.base

# build_tag: the tag of the image built here.
# The desired state names the image by this tag, so the tag is what makes the
# reconciler replace itself: an unchanged build must keep its tag, a changed
# one must get a new one. From a checkout whose image sources are committed:
# <version>-<commit>, the last commit that touched them (a readable name in
# `docker ps`, that `git show` explains). Otherwise (edited or untracked
# sources, no git): <version>-<12 hex digits of sources_digest>, so that what
# was changed gets a tag of its own. Never the image ID: the same sources
# built again may give another ID (the build cache holds a layer built
# elsewhere with the same inputs, or lost one), and a new tag for the same
# sources would replace a running reconciler for nothing.
build_tag() {
  version=$(awk -F'"' '/^\[/ { p = ($0 == "[project]") } p && /^version[[:space:]]*=/ { print $2; exit }' \
    "$HERE/pyproject.toml" 2>/dev/null | tr -c 'A-Za-z0-9_.\n-' '-')
  : "${version:=0}"
  commit=""
  if command -v git >/dev/null 2>&1; then
    # $IMAGE_SOURCES is a list of paths: split on purpose.
    # shellcheck disable=SC2086
    if changes=$(git -c safe.directory="$HERE" -C "$HERE" status --porcelain -- $IMAGE_SOURCES 2>/dev/null) \
      && [ -z "$changes" ]; then
      # A fixed length: git lengthens an automatic abbreviation as the
      # repository grows, which would rename an unchanged build.
      # shellcheck disable=SC2086
      commit=$(git -c safe.directory="$HERE" -C "$HERE" log -1 --abbrev=7 --format=%h -- $IMAGE_SOURCES \
        2>/dev/null || true)
    fi
  fi
  if [ -n "$commit" ]; then
    printf '%s-%s\n' "$version" "$commit"
  else
    printf '%s-%s\n' "$version" "$(sources_digest)"
  fi
}

# sources_digest: 12 hex digits of a SHA-256 over the name and the contents of
# every file of $IMAGE_SOURCES, as the build context has them (Python's caches
# are kept out of it by .dockerignore, so they are left out here too).
sources_digest() {
  (
    cd "$HERE" || exit 1
    # shellcheck disable=SC2086
    find $IMAGE_SOURCES -type f ! -name '*.pyc' ! -path '*/__pycache__/*' 2>/dev/null \
      | LC_ALL=C sort \
      | while IFS= read -r file; do
          printf '%s\n' "$file"
          sha256sum <"$file"
        done
  ) | sha256sum | cut -c1-12
}

ensure_image() {
  if [ -n "$IMAGE" ]; then
    can_have "$IMAGE" || die "image $IMAGE is neither present nor pullable"
    RECONCILER_IMAGE=$IMAGE
    set_env RECONCILER_IMAGE "$IMAGE"
    return
  fi
  [ -f "$HERE/images/reconciler/Dockerfile" ] \
    || die "no images/reconciler/Dockerfile next to install.sh: run it from a checkout of the repository, or give --image"
  if [ "$LOCAL_IMAGES" = 1 ]; then
    log "local images: the stand-ins of images/local/ (no registry needed; the first build takes minutes)"
    # debootstrap makes the Debian base they all start from, when it is missing.
    if ! docker image inspect "${LOCAL_IMAGE_PREFIX:-reconciler-local}/debian:bookworm" >/dev/null 2>&1 \
      && ! command -v debootstrap >/dev/null 2>&1; then
      install_packages debootstrap
    fi
    # Only what the default stack (phpMyAdmin of the admin profile included,
    # so that turning it on works offline) and the reconciler need.
    noisy sh "$HERE/images/local/build-base-images.sh" --only python --only mariadb --only openlitespeed \
      --only phpmyadmin || die "the local images could not be built (see $INSTALL_LOG)"
    : "${BASE_IMAGE:=reconciler-local/python:local}"
    # pip inside a container may not reach an index the host reaches (a proxy
    # with its own CA, an air gap): fill the wheelhouse with the host's pip.
    # pip skips the wheels it has, so this is quick once done.
    if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
      install_packages python3-pip || log "warning: no pip on the host; the image build's pip will try the index"
    fi
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
      log "wheelhouse: the reconciler's wheels, with the host's pip"
      noisy sh "$HERE/images/reconciler/wheelhouse.sh" python3 \
        || log "warning: the wheelhouse is incomplete; pip in the build will try the index"
    fi
  fi
  RECONCILER_IMAGE=$IMAGE_NAME:$(build_tag)
  # The tag says which sources, the label which base: with both the same there
  # is nothing to build. Building anyway could give another image ID (another
  # cached layer of the same inputs), and the reconciler recreates a service
  # whose tag moved to another image.
  base=${BASE_IMAGE:-$(sed -n 's/^ARG BASE=//p' "$HERE/images/reconciler/Dockerfile" | head -n 1)}
  base_id=$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null || true)
  built_on=$(docker image inspect -f "{{index .Config.Labels \"$BASE_LABEL\"}}" "$RECONCILER_IMAGE" 2>/dev/null || true)
  if [ -n "$base_id" ] && [ "$built_on" = "$base_id" ]; then
    docker tag "$RECONCILER_IMAGE" "$IMAGE_NAME:latest"
    set_env RECONCILER_IMAGE "$RECONCILER_IMAGE"
    log "image: $RECONCILER_IMAGE, built already from these sources on $base"
    return
  fi
  set --
  [ -n "$BASE_IMAGE" ] && set -- --build-arg "BASE=$BASE_IMAGE"
  # A base the build has to pull is not known yet: that build goes unlabelled
  # and the next run builds again, labelled.
  [ -n "$base_id" ] && set -- "$@" --label "$BASE_LABEL=$base_id"
  log "image: building $IMAGE_NAME from images/reconciler${BASE_IMAGE:+ on $BASE_IMAGE}"
  noisy docker build "$@" -f "$HERE/images/reconciler/Dockerfile" -t "$IMAGE_NAME:latest" "$HERE" \
    || die "the reconciler image could not be built (see $INSTALL_LOG)"
  id=$(docker image inspect -f '{{.Id}}' "$IMAGE_NAME:latest")
  # A clean tree built again on another base (or after the build cache went)
  # gives another id under the same tag: the tag moves to the new build, and
  # prune_old_builds removes the one it leaves without a name.
  PREVIOUS_ID=$(docker image inspect -f '{{.Id}}' "$RECONCILER_IMAGE" 2>/dev/null || true)
  [ "$PREVIOUS_ID" != "$id" ] || PREVIOUS_ID=""
  docker tag "$IMAGE_NAME:latest" "$RECONCILER_IMAGE"
  set_env RECONCILER_IMAGE "$RECONCILER_IMAGE"
  log "image: $RECONCILER_IMAGE"
}

# --- 5b. the age key for encrypted secrets in git ------------------------------------

# Made by the image itself (no age package needed on the host), in the config
# folder, mode 600. It never leaves the VM: not in an image, not in a log.
ensure_age_key() {
  key=$CONFIG_DIR/age.key
  if [ ! -f "$key" ]; then
    [ "$AGE_KEY" = 1 ] || return 0
    docker run --rm --label "dev.reconciler.project=$(get_env RECONCILER_PROJECT)" \
      --label dev.reconciler.helper=install -e RECONCILER_ENV_FILE=/dev/null \
      -v "$CONFIG_DIR:$CONFIG_DIR" "$RECONCILER_IMAGE" secrets keygen --key-file "$key" >/dev/null
    log "age key: generated $key"
  fi
  chmod 600 "$key"
  set_env RECONCILER_AGE_KEY_FILE "$key"
  recipient=$(docker run --rm --label "dev.reconciler.project=$(get_env RECONCILER_PROJECT)" \
    --label dev.reconciler.helper=install -e RECONCILER_ENV_FILE=/dev/null \
    -v "$CONFIG_DIR:$CONFIG_DIR:ro" "$RECONCILER_IMAGE" secrets recipient --key-file "$key") \
    || die "$key holds no usable age identity (move it away and run install.sh again)"
  log "age key: encrypt secrets for this VM with its recipient (docs/secrets.md):"
  printf '%s\n' "$recipient" >&2
  SHOWN_RECIPIENT=1
}

# --- 5c. the backup key ---------------------------------------------------------------

# The restic password of every backup repository of the business (prod, dev,
# safety copies): lost, no backup can be read. Made here once and shown once,
# so its owner can put it in a password manager; a run that finds it in the
# env file keeps it and shows nothing (the output of a rerun may be logged).
ensure_backup_key() {
  [ -z "$(get_env RECONCILER_BACKUP_KEY)" ] || return 0
  # 32 bytes of the kernel's CSPRNG as 64 hex digits: od is POSIX, and the
  # value needs no quoting in the env file nor in a shell.
  backup_key=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  [ "${#backup_key}" = 64 ] || die "could not read 32 random bytes from /dev/urandom"
  set_env RECONCILER_BACKUP_KEY "$backup_key"
  chmod 600 "$ENV_FILE"
  log "backup key: generated RECONCILER_BACKUP_KEY in $ENV_FILE; it is shown this once:"
  printf '%s\n' "$backup_key" >&2
  SHOWN_BACKUP_KEY=1
  log "backup key: keep it in your password manager now: without it no backup can be read, and this VM holds the only other copy"
}

# --- 6. the first sync and the daemon ------------------------------------------------

# The mounts of the reconciler's own service in desired-state/compose.yaml.
mount_args() {
  local_repo=$(get_env RECONCILER_LOCAL_REPO)
  printf '%s\n' -v /var/run/docker.sock:/var/run/docker.sock \
    -v "$STATE_DIR:$STATE_DIR" -v "$CONFIG_DIR:$CONFIG_DIR:ro"
  [ -n "$local_repo" ] && printf '%s\n' -v "$local_repo:$local_repo:ro"
  return 0
}

# reconciler ARGS...: the CLI in a short-lived container of the image, with the
# daemon's mounts; labelled a helper of the project, so no pass ever takes it
# for a service.
reconciler_once() {
  # Word splitting of mount_args is wanted: one argument per line, none with spaces.
  # shellcheck disable=SC2046
  docker run --rm --label "dev.reconciler.project=$PROJECT" --label dev.reconciler.helper=install \
    -e "RECONCILER_ENV_FILE=$ENV_FILE" -e RECONCILER_LOG_FORMAT=text \
    $(mount_args) "$RECONCILER_IMAGE" "$@"
}

# sync_summary: what of the sync's output a person reads. Its log lines
# ("HH:MM:SS level event key=value...") at debug or info level are left out.
sync_summary() {
  grep -v -E '^[0-9]{2}:[0-9]{2}:[0-9]{2} +(debug|info) ' || true
}

DAEMON=""
first_sync() {
  PROJECT=$(get_env RECONCILER_PROJECT)
  : "${PROJECT:=site}"
  DAEMON=$PROJECT-reconciler-1
  private_dir "$STATE_DIR"
  deadline=$(($(date +%s) + TIMEOUT))
  log "sync: deploying desired-state/ of $(get_env RECONCILER_REPO) ($(get_env RECONCILER_BRANCH)); its log goes to the install log"
  output=$(mktemp)
  while :; do
    # The sync's log goes to the install log as it comes (a first build takes
    # minutes); the screen gets its summary (the actions, "converged") and its
    # warnings and errors. The whole output is kept to tell a repository not
    # reachable yet from a failure that will stay.
    # --here: this run's image does the pass, even when an older daemon runs.
    { rc=0; reconciler_once sync --here || rc=$?; echo "$rc" >"$output.rc"; } 2>&1 \
      | tee -a "${INSTALL_LOG:-/dev/null}" | tee "$output" | sync_summary
    [ "$(cat "$output.rc")" = 0 ] && break
    if ! grep -q -e SourceUnavailable -e EngineUnavailable "$output"; then
      # Invalid desired state, an image that cannot be had...: only a commit
      # fixes it, and the daemon started below will apply that commit.
      log "sync: the first sync failed (the messages above say why; all of it in $INSTALL_LOG)"
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "sync: the repository was still not reachable after $TIMEOUT s (is the deploy key added?)"
      break
    fi
    log "sync: the repository or the engine is not reachable yet; trying again in 10 s"
    sleep 10
  done
  rm -f "$output" "$output.rc"
  if ! docker container inspect "$DAEMON" >/dev/null 2>&1; then
    # The pass stopped before it reached the reconciler's own service (an image
    # that cannot be had, a commit that does not validate...). Start it anyway,
    # so that fixing the repository is enough: it adopts itself on its first
    # good pass (a configuration change: it hands over to a helper).
    log "reconciler: starting $DAEMON (the pass did not create it)"
    metrics_port=$(get_env RECONCILER_METRICS_PORT)
    # shellcheck disable=SC2046
    # The health check timings and metrics port of the reconciler service in compose.yaml.
    docker run -d --name "$DAEMON" --restart unless-stopped \
      --health-interval 10s --health-timeout 10s --health-start-period 30s \
      --label "dev.reconciler.project=$PROJECT" --label dev.reconciler.service=reconciler \
      -p "127.0.0.1:${metrics_port:-9365}:9365" -e RECONCILER_METRICS_ADDR=0.0.0.0:9365 \
      -e "RECONCILER_ENV_FILE=$ENV_FILE" $(mount_args) "$RECONCILER_IMAGE" run >/dev/null
  fi
}

wait_healthy() {
  # Its own budget: --timeout bounds the waiting for the repository, and the
  # first health check of a new container comes only after its interval.
  limit=180
  [ "$TIMEOUT" -gt "$limit" ] && limit=$TIMEOUT
  deadline=$(($(date +%s) + limit))
  while :; do
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
      "$DAEMON" 2>/dev/null || echo missing)
    restarts=$(docker inspect -f '{{.RestartCount}}' "$DAEMON" 2>/dev/null || echo 0)
    # A daemon that keeps dying is restarted by Docker: never healthy, never "exited".
    [ "$restarts" -lt 3 ] || die "$DAEMON keeps restarting ($restarts times): see docker logs $DAEMON"
    case "$health" in
      healthy|running) break ;;
      missing|exited|dead|unhealthy) die "$DAEMON is $health: see docker logs $DAEMON" ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || die "$DAEMON is still $health after $limit s: see docker logs $DAEMON"
    sleep 2
  done
  # The whole status to the log; on screen its condition, e.g. "Ready (ReconciliationSucceeded)".
  status=$(docker exec "$DAEMON" reconciler status 2>&1 || true)
  printf '%s\n' "$status" >>"${INSTALL_LOG:-/dev/null}"
  condition=$(printf '%s\n' "$status" | sed -n 's/^condition: *//p' | head -n 1)
  log "reconciler: $DAEMON is $health${condition:+; $condition}"
}

# is_build_tag TAG: TAG is one build_tag makes, <version>-<commit or digest>
# (7 or more hex digits after the last "-", a version starting with a digit),
# or the 12 hex digits of the image ID that earlier versions of install.sh used.
is_build_tag() {
  case "$1" in
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) return 0 ;;
    [0-9]*-*) ;;
    *) return 1 ;;
  esac
  suffix=${1##*-}
  case "$suffix" in *[!0-9a-f]*) return 1 ;; esac
  [ "${#suffix}" -ge 7 ]
}

# Builds of earlier runs are no longer named anywhere once the new daemon is
# healthy. Never :latest, the build just made, nor what the daemon runs;
# `docker rmi` without --force keeps any image a container still uses.
prune_old_builds() {
  [ -z "$IMAGE" ] || return 0
  running=$(docker inspect -f '{{.Config.Image}}' "$DAEMON" 2>/dev/null || true)
  for tag in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$IMAGE_NAME"); do
    name=${tag#"$IMAGE_NAME":}
    case "$tag" in "$RECONCILER_IMAGE"|"$running"|"$IMAGE_NAME:latest") continue ;; esac
    is_build_tag "$name" || continue
    if docker rmi "$tag" >/dev/null 2>&1; then log "image: removed the earlier build $tag"; fi
  done
  # The build whose tag moved to this one, once nothing names it (a tag given
  # by hand keeps it); a container that still runs it keeps it too.
  if [ -n "$PREVIOUS_ID" ] \
    && [ "$(docker image inspect -f '{{len .RepoTags}}' "$PREVIOUS_ID" 2>/dev/null)" = 0 ] \
    && docker rmi "$PREVIOUS_ID" >/dev/null 2>&1; then
    log "image: removed the earlier build of ${RECONCILER_IMAGE#"$IMAGE_NAME":} ($(printf '%.19s' "$PREVIOUS_ID"))"
  fi
  return 0
}

# --- the closing lines -------------------------------------------------------------

# vm_address: how this machine is reached: localhost on a developer's PC, else
# the source address of its default route, else the first of hostname -I.
vm_address() {
  if [ "$LOCAL" = 1 ] || [ -n "$(get_env RECONCILER_LOCAL_REPO)" ]; then
    printf 'localhost\n'
    return
  fi
  addr=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n 1)
  [ -n "$addr" ] || addr=$(hostname -I 2>/dev/null | awk '{ print $1 }')
  case "$addr" in
    "") printf 'localhost\n' ;;
    *:*) printf '[%s]\n' "$addr" ;;
    *) printf '%s\n' "$addr" ;;
  esac
}

# url SCHEME HOST PORT DEFAULT_PORT
url() {
  if [ "$3" = "$4" ]; then printf '%s://%s/\n' "$1" "$2"; else printf '%s://%s:%s/\n' "$1" "$2" "$3"; fi
}

# closing_lines: where the site and phpMyAdmin are, what each key printed
# above is for, where the log is.
closing_lines() {
  host=$(vm_address)
  http_port=$(get_env HTTP_PORT)
  https_port=$(get_env HTTPS_PORT)
  log "site: $(url http "$host" "${http_port:-80}" 80) and $(url https "$host" "${https_port:-443}" 443)"
  pma=$(get_env PHPMYADMIN_PORT)
  : "${pma:=8081}"
  # Published on 127.0.0.1 only (desired-state/compose.yaml): from elsewhere, through ssh.
  if [ "$host" = localhost ]; then
    reach="http://127.0.0.1:$pma/"
  else
    reach="ssh -L $pma:127.0.0.1:$pma root@$host and http://127.0.0.1:$pma/"
  fi
  case ",$(get_env COMPOSE_PROFILES | tr -d ' ')," in
    *,admin,*|*,\*,*) log "phpMyAdmin: on; reach it with $reach" ;;
    *)
      log "phpMyAdmin: off; to turn it on, COMPOSE_PROFILES=admin in $ENV_FILE, then docker restart $DAEMON"
      log "phpMyAdmin: then reach it with $reach" ;;
  esac
  if [ "$SHOWN_DEPLOY_KEY" = 1 ]; then
    log "deploy key (above): lets the reconciler read the repository; add it, read-only, to its deploy keys"
  fi
  if [ "$SHOWN_RECIPIENT" = 1 ]; then
    log "age recipient (above, age1...): public; encrypt for it the secrets you commit to git (docs/secrets.md)"
  fi
  if [ "$SHOWN_BACKUP_KEY" = 1 ]; then
    log "backup key (above): without it no backup can be read; keep a copy off this VM (a password manager)"
  fi
  log "status: reconciler status (or docker exec $DAEMON reconciler status); log of this run: $INSTALL_LOG"
}

# --- uninstall ---------------------------------------------------------------------

uninstall() {
  PROJECT=${PROJECT:-$(get_env RECONCILER_PROJECT)}
  : "${PROJECT:=site}"
  image=$(docker inspect -f '{{.Config.Image}}' "$PROJECT-reconciler-1" 2>/dev/null || true)
  # Its helpers too (a first sync, a self-update), never those of backups or restores.
  for role in install self-update; do
    for id in $(docker ps -aq --filter "label=dev.reconciler.project=$PROJECT" \
      --filter "label=dev.reconciler.helper=$role"); do
      docker rm -f "$id" >/dev/null
    done
  done
  if docker container inspect "$PROJECT-reconciler-1" >/dev/null 2>&1; then
    # Without -v: no volume is ever removed, not even an anonymous one.
    docker rm -f "$PROJECT-reconciler-1" >/dev/null
    log "removed $PROJECT-reconciler-1"
  else
    log "no $PROJECT-reconciler-1 to remove"
  fi
  if [ "$REMOVE_IMAGE" = 1 ] && [ -n "$image" ]; then
    # Every tag of that repository (builds of earlier runs, :latest); without
    # --force, an image a container still uses stays.
    for tag in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "${image%:*}"); do
      if docker rmi "$tag" >/dev/null 2>&1; then
        log "removed image $tag"
      else
        log "image $tag kept (a container uses it)"
      fi
    done
  fi
  if grep -q "$COMMAND_MARK" "$BIN_DIR/reconciler" 2>/dev/null; then
    rm -f "$BIN_DIR/reconciler"
    log "removed $BIN_DIR/reconciler"
  fi
  log "the stack keeps running, unmanaged; volumes, $CONFIG_DIR and $STATE_DIR are kept"
  log "(to remove the stack too: docker rm -f \$(docker ps -aq --filter label=dev.reconciler.project=$PROJECT))"
}

# --- main -------------------------------------------------------------------------------

require_root
check_os
if [ "$MODE" = uninstall ]; then
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
  uninstall
  exit 0
fi
open_log
ensure_docker
if [ "$LOCAL" = 1 ] && [ "$LOCAL_IMAGES" = 0 ] && [ -z "$IMAGE" ] && [ -z "$BASE_IMAGE" ] \
  && ! can_have python:3.11-slim-bookworm; then
  log "no image registry answers: using local stand-in images (images/local/)"
  LOCAL_IMAGES=1
fi
write_env_file
ensure_deploy_key
ensure_verification
ensure_image
ensure_age_key
ensure_backup_key
first_sync
wait_healthy
install_command
prune_old_builds
if [ -n "$(get_env RECONCILER_LOCAL_REPO)" ]; then
  log "done: commit to $(get_env RECONCILER_BRANCH) in $(get_env RECONCILER_REPO) to deploy; docs/operations.md says what next"
else
  log "done: push to $(get_env RECONCILER_BRANCH) to deploy; docs/operations.md says what next"
fi
closing_lines

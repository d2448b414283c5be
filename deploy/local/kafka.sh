#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft, combined broker+controller)
# on 127.0.0.1, for development, tests and the demo. No Docker engine needed.
#
#   deploy/local/kafka.sh up       obtain the jars (cached), format once, start, wait until it answers
#   deploy/local/kafka.sh up --secure   the same, secured: TLS, SASL/SCRAM, mutual TLS, ACLs (below)
#   deploy/local/kafka.sh down     stop it cleanly (SIGTERM, then SIGKILL after a timeout)
#   deploy/local/kafka.sh status   exit 0 if it answers
#   deploy/local/kafka.sh pid      print the broker's pid (for fault-injection tests)
#   deploy/local/kafka.sh fetch    only obtain the jars
#
# Where the broker comes from, first that works:
#   1. Maven Central through `mvn` (deploy/local/pom.xml: org.apache.kafka:kafka_2.13 + Log4j 2)
#   2. the Apache release archive (kafka_2.13-$KAFKA_VERSION.tgz), if reachable
#   3. `docker compose` with the official apache/kafka image, if a Docker engine answers
# Set KAFKA_SOURCE=maven|archive|docker to force one.
#
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1),
# KAFKA_HOME_DIR (cache and data root, default ~/.cache/ecg-anomaly/kafka, outside the tree),
# KAFKA_DATA_DIR (default $KAFKA_HOME_DIR/data-$KAFKA_PORT), KAFKA_START_TIMEOUT (90 s),
# KAFKA_HEAP_OPTS (-Xms256m -Xmx1g), KAFKA_GC_OPTS (-XX:+UseParallelGC).
# `up` and `down` are safe to call twice.
#
# Secured (`up --secure`; a data directory stays in the mode it was formatted in): a CA, the broker's
# certificate and client certificates made on the fly with openssl in $KAFKA_DATA_DIR/secure (nothing
# checked in), SCRAM-SHA-512 users with random passwords created at storage format time, the
# StandardAuthorizer with allow.everyone.if.no.acl.found=false, and these listeners on 127.0.0.1:
#   KAFKA_PORT            PLAINTEXT for the admin only: its principal (User:ANONYMOUS) is a super user
#   KAFKA_SASL_SSL_PORT   SASL_SSL, SCRAM-SHA-512 (default KAFKA_PORT+2)
#   KAFKA_SSL_PORT        SSL with a client certificate required: principal User:<its CN> (KAFKA_PORT+3)
# KAFKA_SCRAM_USERS and KAFKA_TLS_CLIENTS (both default "admin ecg-worker ecg-tools")
# name the users; admin is a super user. $KAFKA_DATA_DIR/secure holds ca.crt and, per user,
# <user>.password, <user>.crt, <user>.key (PKCS#8, encrypted) and <user>.key-password.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SCALA_VERSION="2.13"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${KAFKA_PORT:-9092}"
# Kubernetes sets KAFKA_PORT=tcp://<ip>:<port> in pods of a namespace with a Service named kafka.
case "$PORT" in
  '' | *[!0-9]*) echo "[kafka.sh] error: KAFKA_PORT must be a port number, not '$PORT'" >&2; exit 2 ;;
esac
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
ROOT="${KAFKA_HOME_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ecg-anomaly/kafka}"
DATA="${KAFKA_DATA_DIR:-$ROOT/data-$PORT}"
LIBS="$ROOT/libs-$KAFKA_VERSION"
PIDFILE="$DATA/broker.pid"
LOG="$DATA/broker.log"
TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
COMPOSE_PROJECT="ecg-kafka-$PORT"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-$((PORT + 2))}"
SSL_PORT="${KAFKA_SSL_PORT:-$((PORT + 3))}"
SECURE_DIR="$DATA/secure"
SCRAM_USERS="${KAFKA_SCRAM_USERS:-admin ecg-worker ecg-tools}"
TLS_CLIENTS="${KAFKA_TLS_CLIENTS:-admin ecg-worker ecg-tools}"
SECURE=0

log() { echo "[kafka.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

fetch_maven() {
  command -v mvn >/dev/null 2>&1 || return 1
  log "resolving kafka_$SCALA_VERSION:$KAFKA_VERSION from Maven Central into $LIBS"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  if mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >&2; then
    mv "$tmp" "$LIBS"
  else
    rm -rf "$tmp"; return 1
  fi
}

fetch_archive() {
  command -v curl >/dev/null 2>&1 || return 1
  local name="kafka_$SCALA_VERSION-$KAFKA_VERSION"
  local url="https://archive.apache.org/dist/kafka/$KAFKA_VERSION/$name.tgz"
  local tmp="$ROOT/tmp.$$"
  log "downloading $url"
  mkdir -p "$tmp"
  if curl -fsSL --connect-timeout 10 --max-time 600 "$url" | tar -xz -C "$tmp"; then
    mv "$tmp/$name/libs" "$LIBS"; rm -rf "$tmp"
  else
    rm -rf "$tmp"; return 1
  fi
}

fetch() {
  [ -d "$LIBS" ] && return 0
  mkdir -p "$ROOT"
  case "${KAFKA_SOURCE:-auto}" in
    maven) fetch_maven ;;
    archive) fetch_archive ;;
    auto) fetch_maven || fetch_archive ;;
    *) return 1 ;;
  esac
}

write_config() {
  mkdir -p "$DATA/logs"
  cat > "$DATA/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
log.segment.bytes=67108864
EOF
  if [ "$SECURE" = 1 ]; then write_secure_config; fi
  cat > "$DATA/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $LOG
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

# --- secured broker (up --secure) -----------------------------------------------------------------

make_certificates() {
  # A CA, the broker's certificate (for 127.0.0.1 and localhost) and one client certificate per TLS
  # client, its key encrypted with a random password: what a cluster's operator hands out.
  command -v openssl >/dev/null 2>&1 || die "the secured broker needs openssl"
  local d="$SECURE_DIR" name
  mkdir -p "$d"; chmod 700 "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=ecg-local-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/broker.key" \
    -out "$d/broker.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$d/broker.ext"
  openssl x509 -req -in "$d/broker.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/broker.ext" -out "$d/broker.crt" 2>/dev/null
  # The broker reads PEM directly: its key (PKCS#8, unencrypted, readable by this user only) and chain.
  openssl pkcs8 -topk8 -nocrypt -in "$d/broker.key" -out "$d/broker.pem"
  cat "$d/broker.crt" "$d/ca.crt" >> "$d/broker.pem"
  for name in $TLS_CLIENTS; do
    openssl rand -hex 16 > "$d/$name.key-password"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$d/$name.plain.key" \
      -out "$d/$name.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > "$d/$name.ext"
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
      -extfile "$d/$name.ext" -out "$d/$name.crt" 2>/dev/null
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$d/$name.plain.key" -out "$d/$name.key" \
      -passout "file:$d/$name.key-password"
    rm -f "$d/$name.plain.key" "$d/$name.csr" "$d/$name.ext"
  done
  rm -f "$d/broker.key" "$d/broker.csr" "$d/broker.ext" "$d/ca.srl"
  chmod 600 "$d"/*
}

scram_arguments() {
  # One --add-scram per user, each with a new random password kept in <user>.password.
  local name password
  for name in $SCRAM_USERS; do
    password="$(openssl rand -hex 16)"
    (umask 077; printf '%s\n' "$password" > "$SECURE_DIR/$name.password")
    SCRAM_ARGS+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$password]")
  done
}

write_secure_config() {
  # The listeners above (the PLAINTEXT one also carries the broker's own traffic), and the authorizer.
  local d="$SECURE_DIR" props="$DATA/server.properties"
  sed -i -e '/^listeners=/d' -e '/^advertised.listeners=/d' -e '/^listener.security.protocol.map=/d' "$props"
  cat >> "$props" <<EOF
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT,SSL://127.0.0.1:$SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT,SSL://127.0.0.1:$SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$d/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$d/ca.crt
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
ssl.principal.mapping.rules=RULE:^CN=([^,]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS;User:admin
EOF
}

check_mode() {
  # A data directory keeps the mode it was formatted in: its users and certificates exist or not.
  [ -f "$DATA/logs/meta.properties" ] || return 0
  local was=0; [ -f "$SECURE_DIR/ca.crt" ] && was=1
  if [ "$was" != "$SECURE" ]; then
    local how=plain; [ "$was" = 1 ] && how=secured
    die "$DATA holds a $how broker: remove it, or use another KAFKA_PORT or KAFKA_DATA_DIR"
  fi
}

java_args() {
  # The parallel collector, not Kafka's usual G1: on two shared cores, at 2,000 beats/s, G1's young
  # pauses took 7-16 ms (median per run) and 4-77% of the slowest 1% of beats overlapped one; the
  # parallel collector's 4-15 ms, falling to 4-5 as the broker warmed (make bench's latency part,
  # alternating between brokers).
  # shellcheck disable=SC2206
  JAVA_ARGS=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} ${KAFKA_GC_OPTS:--XX:+UseParallelGC}
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$DATA/log4j2.properties" -cp "$LIBS/*")
}

java_run() { java_args; java "${JAVA_ARGS[@]}" "$@"; }

cluster_id() {
  # A KRaft cluster id is a random UUID in unpadded URL-safe base64 (what `kafka-storage random-uuid`
  # prints); made here to save a JVM start.
  # A leading '-' would be read by kafka-storage as an option (1 start in 64 failed that way).
  head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c 1-22 | sed 's/^-/A/'
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_ready() {
  # Ready = the broker has logged that it started (after it is unfenced) and its port accepts connections.
  local deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$LOG" >&2 2>/dev/null || true
      die "the broker exited during start-up (log: $LOG)"
    fi
    if grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open "$PORT"; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 30 "$LOG" >&2 2>/dev/null || true
  die "the broker did not answer on 127.0.0.1:$PORT within ${TIMEOUT}s (log: $LOG)"
}

up_java() {
  if running_pid >/dev/null; then
    wait_ready; log "already running on 127.0.0.1:$PORT (pid $(running_pid))"; return 0
  fi
  if port_open "$PORT"; then die "127.0.0.1:$PORT is taken by another process; set KAFKA_PORT"; fi
  check_mode
  write_config
  if [ ! -f "$DATA/logs/meta.properties" ]; then
    log "formatting storage in $DATA/logs"
    SCRAM_ARGS=()
    if [ "$SECURE" = 1 ]; then make_certificates; scram_arguments; fi
    java_run kafka.tools.StorageTool format --config "$DATA/server.properties" \
      --cluster-id "$(cluster_id)" "${SCRAM_ARGS[@]}" \
      --ignore-formatted >"$DATA/format.log" 2>&1 || { cat "$DATA/format.log" >&2; die "storage format failed"; }
  fi
  : > "$LOG"
  # setsid: the broker outlives the shell that started it, and Ctrl-C in a terminal does not reach it.
  java_args
  setsid nohup java "${JAVA_ARGS[@]}" kafka.Kafka "$DATA/server.properties" \
    >"$DATA/stdout.log" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  wait_ready
  log "broker up on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), data $DATA)"
  if [ "$SECURE" = 1 ]; then
    log "secured: SASL_SSL (SCRAM-SHA-512) on 127.0.0.1:$SASL_SSL_PORT, SSL (client certificates) on" \
      "127.0.0.1:$SSL_PORT; CA, passwords and client keys in $SECURE_DIR"
  fi
}

down_java() {
  local pid
  if ! pid="$(running_pid)"; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  kill -CONT "$pid" 2>/dev/null || true   # a paused broker (fault tests) cannot handle SIGTERM
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then log "broker did not stop in 30 s; killing"; kill -KILL "$pid" || true; fi
  rm -f "$PIDFILE"
  log "stopped"
}

compose() {
  KAFKA_VERSION="$KAFKA_VERSION" KAFKA_PORT="$PORT" KAFKA_CONTROLLER_PORT="$CONTROLLER_PORT" \
    docker compose -p "$COMPOSE_PROJECT" -f "$HERE/docker-compose.yml" "$@"
}

up_docker() {
  compose up -d --wait >&2 || die "docker compose could not start apache/kafka:$KAFKA_VERSION"
  local deadline=$((SECONDS + TIMEOUT))
  until port_open "$PORT"; do
    [ $SECONDS -lt $deadline ] || die "the containerised broker did not answer on 127.0.0.1:$PORT"
    sleep 0.2
  done
  mkdir -p "$DATA"; echo docker > "$DATA/mode"
  log "broker up on 127.0.0.1:$PORT (docker compose project $COMPOSE_PROJECT)"
}

cmd="${1:-}"
if [ "${2:-}" = --secure ] && [ "$cmd" = up ]; then SECURE=1; elif [ -n "${2:-}" ]; then
  echo "usage: $0 up [--secure]|down|status|pid|fetch" >&2; exit 2
fi
case "$cmd" in
  fetch) fetch || die "could not obtain Kafka $KAFKA_VERSION from Maven or the Apache archive" ;;
  up)
    if [ "$SECURE" = 1 ] && [ "${KAFKA_SOURCE:-auto}" = docker ]; then
      die "up --secure starts the broker from the jars only (KAFKA_SOURCE=docker is not secured)"
    elif [ "${KAFKA_SOURCE:-auto}" != docker ] && fetch; then
      up_java
    elif [ "$SECURE" = 0 ] && docker_ok; then
      up_docker
    else
      die "could not obtain Kafka $KAFKA_VERSION: install Maven (and Java 17), allow access to archive.apache.org, or run a Docker engine"
    fi ;;
  down)
    if [ -f "$DATA/mode" ] && [ "$(cat "$DATA/mode")" = docker ]; then
      compose down -v >&2 || true; rm -f "$DATA/mode"; log "stopped"
    else
      down_java
    fi ;;
  status) port_open "$PORT" && { log "answering on 127.0.0.1:$PORT"; exit 0; }; log "not answering on 127.0.0.1:$PORT"; exit 1 ;;
  pid) running_pid || exit 1 ;;
  *) echo "usage: $0 up [--secure]|down|status|pid|fetch" >&2; exit 2 ;;
esac

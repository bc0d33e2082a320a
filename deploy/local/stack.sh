#!/usr/bin/env bash
# The local stack without Docker: Apache Kafka (KRaft, one node) from its Maven Central jars on the
# machine's Java, and PostgreSQL from the OS packages.
#
#   deploy/local/stack.sh up       install what is missing, start both, create the topics (idempotent)
#   deploy/local/stack.sh down     stop what `up` started
#   deploy/local/stack.sh status   what runs, where, and where its logs are
#
# Everything downloaded or written lives outside the clone, under $CRM_SYNC_HOME
# (default ~/.cache/crm-sync), so a second run on the same machine reuses it.
set -euo pipefail

KAFKA_VERSION=${CRM_SYNC_KAFKA_VERSION:-4.1.1}
LOG4J_VERSION=2.24.3
SLF4J_VERSION=2.0.16
SAY_AS=stack
. "$(dirname "$0")/lib.sh"
KAFKA_PORT=${CRM_SYNC_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${CRM_SYNC_KAFKA_CONTROLLER_PORT:-9093}
# Listeners for the secure suites: SASL_SSL with SCRAM users, and SSL requiring a client certificate.
KAFKA_SASL_SSL_PORT=${CRM_SYNC_KAFKA_SASL_SSL_PORT:-9094}
KAFKA_MTLS_PORT=${CRM_SYNC_KAFKA_MTLS_PORT:-9095}
# And SASL_SSL with OAUTHBEARER: tokens are JWTs from a fake identity provider (the secure suite
# runs its token endpoint) checked against the JWKS this script writes.
KAFKA_OAUTH_PORT=${CRM_SYNC_KAFKA_OAUTH_PORT:-9096}
OIDC_ISSUER=crm-sync-local-idp
OIDC_AUDIENCE=crm-sync-kafka
OIDC_KEY_ID=crm-sync-local-1
SCRAM_USER=${CRM_SYNC_SCRAM_USER:-crm_sync}
PARTITIONS=${CRM_SYNC_PARTITIONS:-6}
PG_DB=${CRM_SYNC_PG_DB:-crm_sync}
PG_USER=${CRM_SYNC_PG_USER:-crm_sync}
PG_PASSWORD=${CRM_SYNC_PG_PASSWORD:-crm_sync}

# The collector settings Kafka's own start script runs its broker with (G1 aiming at 20 ms pauses):
# with G1's default 200 ms target, one young collection stalls every client of the broker, and
# every hop of the pipeline crosses it. CRM_SYNC_KAFKA_JVM_OPTS replaces them.
KAFKA_JVM_OPTS=${CRM_SYNC_KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}
JARS=$CRM_SYNC_HOME/kafka-$KAFKA_VERSION/libs
KAFKA_DATA=$CRM_SYNC_HOME/kafka-data
RUN=$CRM_SYNC_HOME/run
LOGS=$CRM_SYNC_HOME/logs
KAFKA_PID=$RUN/kafka.pid
KAFKA_LOG=$LOGS/kafka.log
# Present while the PostgreSQL this stack started runs: `down` stops only what `up` started.
PG_STARTED_HERE=$RUN/postgresql.started
TLS=$CRM_SYNC_HOME/tls

TOPICS=(crm.events.v1 crm.events.v1.dlq crm.matches.v1 crm.matches.v1.dlq salesscreen.activities.v1 salesscreen.users.v1
        crm.records.v1 crm.hydrations.v1)
# The evaluator's record state is a changelog: only each record's latest state matters.
topic_config() { [[ $1 == crm.records.v1 ]] && echo "--config cleanup.policy=compact"; true; }


# Kafka's command-line tools, quiet unless they fail (they print SLF4J binding noise otherwise).
kafka_java() {
  local out rc=0
  out=$(java -Xms128m -Xmx256m -Dlog4j2.configurationFile="$CRM_SYNC_HOME/log4j2.properties" -cp "$JARS/*" "$@" 2>&1) || rc=$?
  if ((rc != 0)); then printf '%s\n' "$out" >&2; return "$rc"; fi
  printf '%s\n' "$out" | grep -v '^SLF4J' || true
}

# --- Kafka -------------------------------------------------------------------------------------

fetch_kafka() {
  # Kafka's own jars bring slf4j-api 1.7, which cannot see log4j's slf4j2 binding: the broker then
  # logged nothing at all. A jar set fetched that way is completed with slf4j-api 2.
  if [[ -f $JARS/.complete ]]; then
    compgen -G "$JARS/slf4j-api-2.*.jar" >/dev/null && return 0
    rm -f "$JARS"/slf4j-api-1.*.jar "$JARS/.complete"
  fi
  command -v java >/dev/null || fail "java not found: Kafka $KAFKA_VERSION needs Java 17+"
  command -v mvn >/dev/null || fail "mvn not found: it fetches the Kafka jars"
  say "fetching Kafka $KAFKA_VERSION jars (once; cached in $JARS)"
  local pom_dir; pom_dir=$(mktemp -d)
  cat >"$pom_dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>crm-sync.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  mkdir -p "$JARS"
  if ! mvn -q -B -f "$pom_dir/pom.xml" dependency:copy-dependencies -DoutputDirectory="$JARS" -DincludeScope=runtime \
      >"$pom_dir/mvn.log" 2>&1; then
    cat "$pom_dir/mvn.log" >&2
    fail "maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log above)"
  fi
  rm -rf "$pom_dir"
  touch "$JARS/.complete"
}

kafka_running() { [[ -f $KAFKA_PID ]] && kill -0 "$(cat "$KAFKA_PID")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kafka_answers() {
  kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list >/dev/null 2>&1
}

write_kafka_config() {
  mkdir -p "$KAFKA_DATA" "$RUN" "$LOGS"
  cat >"$CRM_SYNC_HOME/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,SSL://127.0.0.1:$KAFKA_MTLS_PORT,OAUTH://127.0.0.1:$KAFKA_OAUTH_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT,SSL://127.0.0.1:$KAFKA_MTLS_PORT,OAUTH://127.0.0.1:$KAFKA_OAUTH_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,OAUTH:SASL_SSL
# The secure suites' listeners (certificates made by this script, SCRAM users added at format time).
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/kafka-server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
listener.name.ssl.ssl.client.auth=required
# OAUTHBEARER: signed JWTs only (Kafka's validator, not its unsecured default), from our issuer,
# for our audience, checked against the local identity provider's keys.
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler
# Kafka 4.1's default JWT validator is the client-side one, which checks no signature at all.
sasl.oauthbearer.jwt.validator.class=org.apache.kafka.common.security.oauthbearer.BrokerJwtValidator
sasl.oauthbearer.jwks.endpoint.url=file://$TLS/oidc-jwks.json
sasl.oauthbearer.expected.issuer=$OIDC_ISSUER
sasl.oauthbearer.expected.audience=$OIDC_AUDIENCE
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=$PARTITIONS
# One broker: internal topics must have replication 1, or groups and transactions hang silently.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Tests create many short-lived topics; keep their footprint small.
log.segment.bytes=16777216
log.retention.hours=24
PROPS
  cat >"$CRM_SYNC_HOME/log4j2.properties" <<PROPS
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$KAFKA_LOG
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
PROPS
}

start_kafka() {
  fetch_kafka
  make_certificates
  if kafka_running; then
    say "kafka already running (pid $(cat "$KAFKA_PID")) on 127.0.0.1:$KAFKA_PORT"
    if ! port_open "$KAFKA_SASL_SSL_PORT" || ! port_open "$KAFKA_MTLS_PORT" || ! port_open "$KAFKA_OAUTH_PORT"; then
      say "WARNING: this kafka was started by an older stack.sh without the SASL_SSL ($KAFKA_SASL_SSL_PORT), mTLS ($KAFKA_MTLS_PORT) and OAUTHBEARER ($KAFKA_OAUTH_PORT) listeners the secure suites need; run \`$0 restart-kafka\` to add them"
    fi
    return 0
  fi
  if port_open "$KAFKA_PORT"; then
    fail "port $KAFKA_PORT is taken by a process this script did not start; stop it or set CRM_SYNC_KAFKA_PORT"
  fi
  write_kafka_config
  # CI starts from empty storage: topics left by earlier runs on the same machine only slow it.
  if [[ ${CRM_SYNC_KAFKA_FRESH:-0} == 1 && -d $KAFKA_DATA ]]; then
    say "CRM_SYNC_KAFKA_FRESH=1: discarding Kafka storage in $KAFKA_DATA"
    rm -rf "$KAFKA_DATA"
    mkdir -p "$KAFKA_DATA"
  fi
  if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
    say "formatting Kafka storage in $KAFKA_DATA"
    local cluster_id
    cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid | tail -n1)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$CRM_SYNC_HOME/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$(cat "$TLS/scram-password")]" \
      --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$(cat "$TLS/scram-password")]" \
      >>"$KAFKA_LOG" 2>&1 || fail "formatting Kafka storage failed; see $KAFKA_LOG"
  else
    STORAGE_PREDATES_SCRAM=1
  fi
  say "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
  # Kafka reads a JWKS only from a URL the operator allowed explicitly.
  # shellcheck disable=SC2086 # the options are words
  nohup java -Xms256m -Xmx512m $KAFKA_JVM_OPTS -Xlog:gc:file="$LOGS/kafka-gc.log":time,uptime:filecount=2,filesize=20M \
    -Djava.awt.headless=true \
    -Dorg.apache.kafka.sasl.oauthbearer.allowed.urls="file://$TLS/oidc-jwks.json" \
    -Dlog4j2.configurationFile="$CRM_SYNC_HOME/log4j2.properties" \
    -cp "$JARS/*" kafka.Kafka "$CRM_SYNC_HOME/server.properties" \
    >>"$LOGS/kafka.stdout" 2>&1 </dev/null &
  echo $! >"$KAFKA_PID"
  local deadline=$((SECONDS + 90))
  until port_open "$KAFKA_PORT" && kafka_answers; do
    kafka_running || { tail -n 30 "$KAFKA_LOG" "$LOGS/kafka.stdout" >&2 || true; fail "kafka exited during start-up; see $KAFKA_LOG"; }
    ((SECONDS < deadline)) || fail "kafka did not answer metadata requests within 90 s; see $KAFKA_LOG"
    sleep 1
  done
  # Storage formatted by an older stack.sh has no SCRAM users: add them through the running broker.
  if [[ ${STORAGE_PREDATES_SCRAM:-0} == 1 ]]; then add_scram_users; fi
  say "kafka ready"
}

# SCRAM credentials are upserts: running this on storage that has them already changes nothing.
add_scram_users() {
  local password mechanism; password=$(cat "$TLS/scram-password")
  # One mechanism per request: Kafka refuses to alter a user's credentials twice in one.
  for mechanism in SCRAM-SHA-512 SCRAM-SHA-256; do
    kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users \
      --entity-name "$SCRAM_USER" --add-config "$mechanism=[password=$password]" >/dev/null \
      || fail "could not add the SCRAM user $SCRAM_USER ($mechanism)"
  done
}

# --- Certificates for the secure suites ----------------------------------------------------------
# One CA signs the broker's and PostgreSQL's server certificates (valid for 127.0.0.1 and
# localhost) and a client certificate for mutual TLS; a second CA signs nothing, so tests can
# show what an untrusted server certificate does. secure.env tells the test kit where all is.
make_certificates() {
  command -v openssl >/dev/null || fail "openssl not found: it makes the local certificates"
  mkdir -p "$TLS" "$LOGS"
  if [[ ! -f $TLS/.complete ]]; then
    say "making a local CA and certificates in $TLS"
    local ext="subjectAltName=IP:127.0.0.1,DNS:localhost"
    (
      cd "$TLS"
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=crm-sync local CA" \
        -keyout ca.key -out ca.pem
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=crm-sync untrusted CA" \
        -keyout other-ca.key -out other-ca.pem
      for name in server client; do
        openssl req -newkey rsa:2048 -nodes -subj "/CN=crm-sync-$name" -keyout "$name.key" -out "$name.csr"
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
          -extfile <(echo "$ext") -out "$name.pem"
      done
      cat server.key server.pem >kafka-server.pem
      chmod 600 ./*.key kafka-server.pem
    ) >>"$LOGS/certificates.log" 2>&1 || fail "making certificates failed; see $LOGS/certificates.log"
    touch "$TLS/.complete"
  fi
  make_oidc_keys
  local secret
  for secret in scram-password pg-password; do
    [[ -s $TLS/$secret ]] && continue
    (umask 077 && openssl rand -hex 16 >"$TLS/$secret") || fail "could not write $TLS/$secret"
  done
  cat >"$CRM_SYNC_HOME/secure.env" <<ENV
CRM_SYNC_TEST_SASL_SSL_BROKERS=127.0.0.1:$KAFKA_SASL_SSL_PORT
CRM_SYNC_TEST_MTLS_BROKERS=127.0.0.1:$KAFKA_MTLS_PORT
CRM_SYNC_TEST_SCRAM_USER=$SCRAM_USER
CRM_SYNC_TEST_SCRAM_PASSWORD_FILE=$TLS/scram-password
CRM_SYNC_TEST_CA=$TLS/ca.pem
CRM_SYNC_TEST_UNTRUSTED_CA=$TLS/other-ca.pem
CRM_SYNC_TEST_CLIENT_CERT=$TLS/client.pem
CRM_SYNC_TEST_CLIENT_KEY=$TLS/client.key
CRM_SYNC_TEST_PG_TLS_USER=${PG_USER}_tls
CRM_SYNC_TEST_PG_TLS_PASSWORD_FILE=$TLS/pg-password
CRM_SYNC_TEST_PLAINTEXT_BROKERS=127.0.0.1:$KAFKA_PORT
CRM_SYNC_TEST_OAUTH_BROKERS=127.0.0.1:$KAFKA_OAUTH_PORT
CRM_SYNC_TEST_OIDC_KEY=$TLS/oidc.key
CRM_SYNC_TEST_OIDC_KEY_ID=$OIDC_KEY_ID
CRM_SYNC_TEST_OIDC_ISSUER=$OIDC_ISSUER
CRM_SYNC_TEST_OIDC_AUDIENCE=$OIDC_AUDIENCE
CRM_SYNC_TEST_KAFKA_LIBS=$JARS
ENV
}

# The local identity provider's signing key (PKCS#8) and its public half as a JWKS, which the
# broker's OAUTHBEARER listener trusts.
make_oidc_keys() {
  [[ -s $TLS/oidc-jwks.json && -s $TLS/oidc.key ]] && return 0
  command -v python3 >/dev/null || fail "python3 not found: it writes the local identity provider's JWKS"
  (
    cd "$TLS"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out oidc.key
    chmod 600 oidc.key
    openssl rsa -in oidc.key -noout -modulus | cut -d= -f2 | python3 -c '
import base64, json, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
n = bytes.fromhex(sys.stdin.read().strip())
key = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": sys.argv[1], "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}
print(json.dumps({"keys": [key]}))' "$OIDC_KEY_ID" >oidc-jwks.json
  ) >>"$LOGS/certificates.log" 2>&1 || fail "making the identity provider's keys failed; see $LOGS/certificates.log"
}

create_topics() {
  local existing missing=()
  existing=$(kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list 2>/dev/null)
  for t in "${TOPICS[@]}"; do
    grep -qx "$t" <<<"$existing" || missing+=("$t")
  done
  for t in "${missing[@]}"; do
    say "creating topic $t ($PARTITIONS partitions)"
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --create \
      --if-not-exists --topic "$t" --partitions "$PARTITIONS" --replication-factor 1 $(topic_config "$t") >/dev/null \
      || fail "could not create topic $t"
  done
  ((${#missing[@]})) || say "topics present: ${TOPICS[*]}"
}

stop_kafka() {
  if ! kafka_running; then say "kafka not running"; rm -f "$KAFKA_PID"; return 0; fi
  local pid; pid=$(cat "$KAFKA_PID")
  say "stopping kafka (pid $pid)"
  kill "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then say "kafka ignored SIGTERM for 30 s; killing"; kill -9 "$pid"; fi
    sleep 0.5
  done
  rm -f "$KAFKA_PID"
}

# --- PostgreSQL ----------------------------------------------------------------------------------

pg_version() { pg_lsclusters --no-header 2>/dev/null | awk '$2=="main"{print $1; exit}'; }

install_postgres() {
  command -v pg_ctlcluster >/dev/null && [[ -n $(pg_version) ]] && return 0
  say "installing PostgreSQL from the OS packages"
  command -v apt-get >/dev/null || fail "PostgreSQL is missing and apt-get is not available to install it"
  local sudo=""; ((EUID == 0)) || sudo=sudo
  $sudo apt-get update -qq >/dev/null || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null || fail "apt-get install postgresql failed"
  [[ -n $(pg_version) ]] || fail "postgresql installed but no 'main' cluster exists (pg_lsclusters)"
}

pg_running() { pg_lsclusters --no-header 2>/dev/null | awk '$2=="main"{print $4}' | grep -q online; }

as_postgres() { if ((EUID == 0)); then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }

start_postgres() {
  install_postgres
  local v; v=$(pg_version)
  if pg_running; then
    say "postgresql $v already running"
  else
    say "starting postgresql $v"
    if ((EUID == 0)); then pg_ctlcluster "$v" main start; else sudo pg_ctlcluster "$v" main start; fi \
      || fail "pg_ctlcluster $v main start failed; see /var/log/postgresql/postgresql-$v-main.log"
    mkdir -p "$RUN" && touch "$PG_STARTED_HERE"
  fi
  local deadline=$((SECONDS + 30))
  until as_postgres "psql -qAtc 'select 1'" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "postgresql does not accept connections; see /var/log/postgresql/postgresql-$v-main.log"
    sleep 0.5
  done
  # CREATEDB: the test suites create a fresh database per test.
  as_postgres "psql -qAt -v ON_ERROR_STOP=1" >/dev/null <<SQL || fail "could not create role/database $PG_USER/$PG_DB"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
  enable_postgres_tls "$v"
  say "postgresql ready: postgres://$PG_USER:***@127.0.0.1:5432/$PG_DB (TLS with the CA $TLS/ca.pem)"
}

# TLS with a certificate from the local CA (so clients can use sslmode=verify-full). ssl settings
# take effect on a reload: the running server never goes down for this.
enable_postgres_tls() {
  local v=$1 dir=/var/lib/postgresql/crm-sync-tls
  make_certificates
  local sudo=""; ((EUID == 0)) || sudo=sudo
  $sudo install -d -o postgres -g postgres -m 700 "$dir"
  $sudo install -o postgres -g postgres -m 600 "$TLS/server.pem" "$dir/server.pem"
  $sudo install -o postgres -g postgres -m 600 "$TLS/server.key" "$dir/server.key"
  as_postgres "psql -qAt -v ON_ERROR_STOP=1" >/dev/null <<SQL || fail "could not enable TLS on postgresql $v"
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${PG_USER}_tls') THEN
    CREATE ROLE ${PG_USER}_tls LOGIN;
  END IF;
END \$\$;
-- A role of its own (password in $TLS/pg-password) for the suites that check no secret is logged.
ALTER ROLE ${PG_USER}_tls PASSWORD '$(cat "$TLS/pg-password")';
GRANT $PG_USER TO ${PG_USER}_tls;
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = '$dir/server.pem';
ALTER SYSTEM SET ssl_key_file = '$dir/server.key';
SELECT pg_reload_conf();
SQL
}

# The machine has one PostgreSQL, possibly serving other stacks (another CRM_SYNC_HOME) or
# other software: `down` stops it only when this stack's `up` started it.
stop_postgres() {
  local v; v=$(pg_version)
  if [[ -z $v ]] || ! pg_running; then say "postgresql not running"; rm -f "$PG_STARTED_HERE"; return 0; fi
  if [[ ! -e $PG_STARTED_HERE ]]; then
    say "postgresql $v left running: it was running before this stack ($CRM_SYNC_HOME) started (stop it with pg_ctlcluster $v main stop)"
    return 0
  fi
  say "stopping postgresql $v"
  if ((EUID == 0)); then pg_ctlcluster "$v" main stop; else sudo pg_ctlcluster "$v" main stop; fi
  rm -f "$PG_STARTED_HERE"
}

status() {
  if kafka_running; then
    say "kafka $KAFKA_VERSION: running, pid $(cat "$KAFKA_PID"), 127.0.0.1:$KAFKA_PORT (SASL_SSL $KAFKA_SASL_SSL_PORT, mTLS $KAFKA_MTLS_PORT, OAUTHBEARER $KAFKA_OAUTH_PORT; $CRM_SYNC_HOME/secure.env), log $KAFKA_LOG"
  else
    say "kafka: stopped (log $KAFKA_LOG)"
  fi
  local v; v=$(pg_version)
  if [[ -n $v ]] && pg_running; then
    say "postgresql $v: running, 127.0.0.1:5432 database $PG_DB, log /var/log/postgresql/postgresql-$v-main.log"
  else
    say "postgresql: stopped${v:+ (log /var/log/postgresql/postgresql-$v-main.log)}"
  fi
}

case "${1:-}" in
  up) start_postgres; start_kafka; create_topics; status ;;
  down) stop_kafka; stop_postgres ;;
  status) status ;;
  # Fault injection for the chaos suite: bounce one server while the pipeline runs.
  restart-kafka) CRM_SYNC_KAFKA_FRESH=0; stop_kafka; start_kafka ;;
  restart-postgres)
    v=$(pg_version)
    say "restarting postgresql $v"
    if ((EUID == 0)); then pg_ctlcluster "$v" main restart; else sudo pg_ctlcluster "$v" main restart; fi ;;
  fetch) fetch_kafka ;;
  *) echo "usage: $0 up|down|status|fetch|restart-kafka|restart-postgres" >&2; exit 2 ;;
esac

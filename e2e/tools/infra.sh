#!/usr/bin/env bash
# Starts and stops the real infrastructure on free loopback ports:
#   k8s       etcd, kube-apiserver, kube-controller-manager and the process kubelet
#   kafka     one KRaft node with a PLAINTEXT and a SASL_PLAINTEXT (SCRAM) listener
#   minio     S3-compatible object store
#   iceberg   Iceberg REST catalog (JDBC/SQLite) with its warehouse in MinIO
#   registry  Apicurio Registry (Confluent-compatible API under /apis/ccompat/v7)
#
# Usage: infra.sh up|down|status [component...]     (default: all components)
#        infra.sh kill|resume component...          (kafka, minio, iceberg)
#
# Each component runs in $KAFKATABLE_RUN/<component> with its log and pid file; `up` is
# idempotent (a healthy component is left running) and `down` stops only the processes this
# script started. `kill` crashes a component (SIGKILL, no clean shutdown) and `resume` starts
# it again in place: the same ports and the same data, as a restarted server would come back.
# Addresses and credentials go to $KAFKATABLE_RUN/env, which the Rust fixtures, the Makefile
# and the demo read.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${KAFKATABLE_CACHE:-$HOME/.cache/kafkatable}
RUN=${KAFKATABLE_RUN:-$CACHE/run}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
ENV_FILE=$RUN/env
K8S_BIN=$CACHE/k8s-$K8S_VERSION
ADMIN_TOKEN=kafkatable-admin-token
S3_ACCESS_KEY=kafkatable
S3_SECRET_KEY=kafkatable-secret
SASL_USER=kafkatable
SASL_PASSWORD=kafkatable-secret
WAREHOUSE_BUCKET=iceberg-warehouse
ALL=(k8s kafka minio iceberg registry)
# Set by `resume`: start on the recorded ports and data instead of fresh ones.
RESUME=0

log() { printf '[infra] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# alive NAME: the process recorded in NAME's pid file is running and is ours: every command
# line started here names $RUN, so a recycled pid from an earlier boot does not count.
alive() {
  local pidf=$RUN/$1/pid pid
  [[ -f $pidf ]] || return 1
  pid=$(cat "$pidf")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$RUN"
}

# spawn NAME CMD...: starts CMD in its own session, logging to $RUN/NAME/log.
spawn() {
  local name=$1; shift
  mkdir -p "$RUN/$name"
  # (fd 9 is the script's lock: a server must not inherit it and hold it for its lifetime.)
  setsid "$@" >>"$RUN/$name/log" 2>&1 < /dev/null 9>&- &
  local pid=$!
  echo "$pid" > "$RUN/$name/pid"
  # Until setsid has exec'd, /proc/PID/cmdline is this script's and `alive` would not know the
  # process: wait for the exec (or the exit).
  for _ in $(seq 100); do
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$RUN" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
}

# stop NAME [KILL]: TERM the process group, KILL it after 15 s; with KILL, at once, as a crash
# would end it. The component's directory (ports, data) stays either way.
stop() {
  local name=$1 signal=${2:-TERM} pidf=$RUN/$1/pid pid
  [[ -f $pidf ]] || return 0
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid, SIG$signal)"
    kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

# logged_since FILE LINES PATTERN: PATTERN appears in FILE after its first LINES lines.
logged_since() { tail -n +"$(($2 + 1))" "$1" 2>/dev/null | grep -q "$3"; }

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; shows NAME's log on timeout.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    # Read while the process execs, /proc/PID/cmdline can be empty for an instant: a process
    # only counts as gone when two looks agree.
    if ! alive "$name" && { sleep 0.2; ! alive "$name"; }; then
      tail -n 40 "$RUN/$name/log" >&2; die "$name exited during start-up"
    fi
    if ((SECONDS >= deadline)); then tail -n 40 "$RUN/$name/log" >&2; die "$name not healthy after ${secs}s"; fi
    sleep 0.5
  done
}

# setenv KEY VALUE: records KEY=VALUE in the env file, replacing an older value.
setenv() {
  mkdir -p "$RUN"; touch "$ENV_FILE"
  grep -v "^$1=" "$ENV_FILE" > "$ENV_FILE.tmp" || true
  printf '%s=%s\n' "$1" "$2" >> "$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}
getenv() { grep "^$1=" "$ENV_FILE" 2>/dev/null | tail -n1 | cut -d= -f2-; }

# ---------------------------------------------------------------- Kubernetes control plane
pki() {
  local d=$RUN/pki
  [[ -f $d/sa.key && -f $d/apiserver.crt ]] && return 0
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=kafkatable-ca \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
    -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n' > "$d/ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/ext" -out "$d/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  printf '%s,kafkatable-admin,kafkatable-admin,system:masters\n' "$ADMIN_TOKEN" > "$d/tokens.csv"
}

apiserver_ready() {
  curl -sf --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$(cat "$RUN/apiserver/port")/readyz"
}

up_k8s() {
  [[ -x $K8S_BIN/kube-apiserver ]] || die "Kubernetes binaries missing: run e2e/tools/go-tools.sh"
  local etcd_bin=$CACHE/etcd-$ETCD_VERSION/etcd
  [[ -x $etcd_bin ]] || die "etcd missing: run e2e/tools/go-tools.sh etcd"
  pki
  if ! alive etcd; then
    local cport pport; cport=$(free_port); pport=$(free_port)
    rm -rf "$RUN/etcd"; mkdir -p "$RUN/etcd"; echo "$cport" > "$RUN/etcd/port"
    log "starting etcd on 127.0.0.1:$cport"
    spawn etcd "$etcd_bin" --name kafkatable --data-dir "$RUN/etcd/data" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "kafkatable=http://127.0.0.1:$pport" --unsafe-no-fsync --log-level warn
    wait_for etcd 60 curl -sf "http://127.0.0.1:$cport/health"
  fi
  if ! alive apiserver; then
    local port; port=$(free_port)
    rm -rf "$RUN/apiserver"; mkdir -p "$RUN/apiserver"; echo "$port" > "$RUN/apiserver/port"
    log "starting kube-apiserver on 127.0.0.1:$port"
    spawn apiserver "$K8S_BIN/kube-apiserver" \
      --etcd-servers "http://127.0.0.1:$(cat "$RUN/etcd/port")" \
      --cert-dir "$RUN/apiserver/certs" --tls-cert-file "$RUN/pki/apiserver.crt" \
      --tls-private-key-file "$RUN/pki/apiserver.key" --client-ca-file "$RUN/pki/ca.crt" \
      --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
      --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
      --authorization-mode RBAC --token-auth-file "$RUN/pki/tokens.csv" \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$RUN/pki/sa.pub" \
      --service-account-signing-key-file "$RUN/pki/sa.key" \
      --endpoint-reconciler-type none --v 1
    wait_for apiserver 120 apiserver_ready
    cat > "$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kafkatable
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $RUN/pki/ca.crt
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: kafkatable
  context: {cluster: kafkatable, user: admin, namespace: default}
current-context: kafkatable
EOF
  fi
  if ! alive controller-manager; then
    local port; port=$(free_port)
    log "starting kube-controller-manager"
    spawn controller-manager "$K8S_BIN/kube-controller-manager" \
      --kubeconfig "$RUN/kubeconfig" --authentication-kubeconfig "$RUN/kubeconfig" \
      --authorization-kubeconfig "$RUN/kubeconfig" --leader-elect=false --controllers '*' \
      --service-account-private-key-file "$RUN/pki/sa.key" --root-ca-file "$RUN/pki/ca.crt" \
      --service-cluster-ip-range 10.96.0.0/16 --bind-address 127.0.0.1 --secure-port "$port" \
      --use-service-account-credentials=true --v 1
    wait_for controller-manager 60 curl -sfk "https://127.0.0.1:$port/healthz"
  fi
  # Pods run from the images (the test images: the Containerfiles around the debug binaries);
  # KT_HOST_BINARIES=DIR is the inner-loop fast path that runs DIR's binaries on the host.
  local runtime
  if [[ -n ${KT_HOST_BINARIES:-} ]]; then
    runtime=(--host-binaries "$KT_HOST_BINARIES")
  else
    "$here/images.sh" test
    runtime=(--images "$CACHE/images/test" --image-cache "$CACHE/rootfs")
  fi
  setenv KT_IMAGES "$CACHE/images/test"
  setenv KT_HEALTH "$CACHE/kt-health/kt-health"
  if ! alive kubelet; then
    local bin=${KT_KUBELET_BIN:-$TARGET/debug/process-kubelet}
    [[ -x $bin ]] || die "process kubelet missing at $bin: run cargo build -p kafkatable-e2e"
    mkdir -p "$RUN/kubelet"
    log "starting the process kubelet (${runtime[*]})"
    spawn kubelet "$bin" --kubeconfig "$RUN/kubeconfig" --node-name kafkatable-node \
      --root-dir "$RUN/kubelet/pods" "${runtime[@]}" --ca-file "$RUN/pki/ca.crt"
    wait_for kubelet 60 "$K8S_BIN/kubectl" --kubeconfig "$RUN/kubeconfig" wait --for=condition=Ready \
      node/kafkatable-node --timeout=2s
  fi
  setenv KUBECONFIG "$RUN/kubeconfig"
  setenv KT_KUBECTL "$K8S_BIN/kubectl"
  setenv KT_HELM "$CACHE/helm-$HELM_VERSION/helm"
  setenv KT_NODE_NAME kafkatable-node
}

down_k8s() { stop kubelet; stop controller-manager; stop apiserver; stop etcd; }
status_k8s() { for n in etcd apiserver controller-manager kubelet; do report "$n"; done; }

# ------------------------------------------------------------------------------- Kafka
kafka_cp() { echo "$CACHE/kafka-$KAFKA_VERSION/libs/*"; }

up_kafka() {
  [[ -f $CACHE/kafka-$KAFKA_VERSION/.complete ]] || die "Kafka jars missing: run e2e/tools/java-tools.sh kafka"
  local d=$RUN/kafka
  if ! alive kafka && ((RESUME)); then
    [[ -f $d/server.properties && -d $d/data ]] || die "kafka: nothing to resume in $d (run infra.sh up)"
    log "restarting Kafka in place (same ports and data)"
    start_kafka
  elif ! alive kafka; then
    local p1 p2 p3 p4
    p1=$(free_port); p2=$(free_port); p3=$(free_port); p4=$(free_port)
    rm -rf "$d"; mkdir -p "$d"
    kafka_tls "$d/tls"
    cat > "$d/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$p3
listeners=PLAINTEXT://127.0.0.1:$p1,SASL_PLAINTEXT://127.0.0.1:$p2,CONTROLLER://127.0.0.1:$p3,SSL://127.0.0.1:$p4
advertised.listeners=PLAINTEXT://127.0.0.1:$p1,SASL_PLAINTEXT://127.0.0.1:$p2,SSL://127.0.0.1:$p4
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$d/tls/broker.pem
listener.name.ssl.ssl.client.auth=none
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$d/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
EOF
    cat > "$d/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
EOF
    local cluster_id
    cluster_id=$(java -cp "$(kafka_cp)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
    java -Dlog4j.configuration="file:$d/log4j.properties" -cp "$(kafka_cp)" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$d/server.properties" \
      --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" > "$d/format.log" 2>&1 \
      || { cat "$d/format.log" >&2; die "kafka storage format failed"; }
    echo "$p1" > "$d/port"; echo "$p2" > "$d/sasl_port"; echo "$p4" > "$d/tls_port"
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$p1 (SASL/SCRAM on $p2, TLS on $p4)"
    start_kafka
  fi
  setenv KT_KAFKA_BOOTSTRAP "127.0.0.1:$(cat "$RUN/kafka/port")"
  setenv KT_KAFKA_SASL_BOOTSTRAP "127.0.0.1:$(cat "$RUN/kafka/sasl_port")"
  setenv KT_KAFKA_TLS_BOOTSTRAP "127.0.0.1:$(cat "$RUN/kafka/tls_port")"
  setenv KT_KAFKA_TLS_CA "$RUN/kafka/tls/ca.crt"
  setenv KT_KAFKA_TLS_OTHER_CA "$RUN/kafka/tls/other-ca.crt"
  setenv KT_KAFKA_SASL_USERNAME "$SASL_USER"
  setenv KT_KAFKA_SASL_PASSWORD "$SASL_PASSWORD"
  setenv KT_KAFKA_CLASSPATH "$(kafka_cp)"
}
# kafka_tls DIR: a CA, the broker's certificate for 127.0.0.1/localhost signed by it (with its
# key in one PEM keystore file), and a second CA that signed nothing, for the wrong-CA tests.
kafka_tls() {
  local t=$1
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=kafkatable-kafka-ca \
    -keyout "$t/ca.key" -out "$t/ca.crt" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=kafkatable-other-ca \
    -keyout "$t/other-ca.key" -out "$t/other-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kafka-broker -keyout "$t/broker.key" \
    -out "$t/broker.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$t/ext"
  openssl x509 -req -in "$t/broker.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
    -days 3650 -extfile "$t/ext" -out "$t/broker.crt" 2>/dev/null
  # Kafka's PEM keystore: the PKCS#8 key, then the certificate chain.
  { openssl pkcs8 -topk8 -nocrypt -in "$t/broker.key"; cat "$t/broker.crt" "$t/ca.crt"; } > "$t/broker.pem"
}
# start_kafka: runs the broker of $RUN/kafka and waits for it (this start, not an earlier one).
start_kafka() {
  local d=$RUN/kafka from
  from=$( (wc -l < "$d/log") 2>/dev/null || echo 0)
  spawn kafka java -Dkafkatable.run="$RUN" -Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j.configuration="file:$d/log4j.properties" \
    -Dkafka.logs.dir="$d" -cp "$(kafka_cp)" kafka.Kafka "$d/server.properties"
  wait_for kafka 120 logged_since "$d/log" "$from" 'Kafka Server started'
}
down_kafka() { stop kafka; }
status_kafka() { report kafka; }

# ------------------------------------------------------------------------------- MinIO
minio_ready() { curl -sf "http://127.0.0.1:$(cat "$RUN/minio/port")/minio/health/ready"; }

up_minio() {
  local bin=$CACHE/minio-$MINIO_VERSION/minio
  [[ -x $bin ]] || die "MinIO missing: run e2e/tools/go-tools.sh minio"
  if ! alive minio; then
    local port cport
    if ((RESUME)); then
      [[ -f $RUN/minio/port && -f $RUN/minio/console_port ]] || die "minio: nothing to resume (run infra.sh up)"
      port=$(cat "$RUN/minio/port"); cport=$(cat "$RUN/minio/console_port")
      log "restarting MinIO in place on 127.0.0.1:$port (same data)"
    else
      port=$(free_port); cport=$(free_port)
      rm -rf "$RUN/minio"; mkdir -p "$RUN/minio/data"
      echo "$port" > "$RUN/minio/port"; echo "$cport" > "$RUN/minio/console_port"
      log "starting MinIO on 127.0.0.1:$port"
    fi
    MINIO_ROOT_USER=$S3_ACCESS_KEY MINIO_ROOT_PASSWORD=$S3_SECRET_KEY MINIO_BROWSER=off \
      MINIO_UPDATE=off spawn minio "$bin" server "$RUN/minio/data" --address "127.0.0.1:$port" \
      --console-address "127.0.0.1:$cport" --quiet
    wait_for minio 60 minio_ready
  fi
  setenv KT_S3_ENDPOINT "http://127.0.0.1:$(cat "$RUN/minio/port")"
  setenv KT_S3_ACCESS_KEY "$S3_ACCESS_KEY"
  setenv KT_S3_SECRET_KEY "$S3_SECRET_KEY"
  setenv KT_S3_REGION us-east-1
  setenv KT_MINIO_BIN "$bin"
}
down_minio() { stop minio; }
status_minio() { report minio; }

# --------------------------------------------------------------- Iceberg REST catalog
up_iceberg() {
  local jar=$CACHE/iceberg-rest-$ICEBERG_REST_VERSION/iceberg-open-api-$ICEBERG_REST_VERSION.jar
  [[ -f $jar ]] || die "Iceberg REST catalog missing: run e2e/tools/java-tools.sh iceberg"
  alive minio || up_minio
  if ! alive iceberg; then
    local port endpoint; endpoint="http://127.0.0.1:$(cat "$RUN/minio/port")"
    if ((RESUME)); then
      [[ -f $RUN/iceberg/port && -f $RUN/iceberg/catalog.db ]] || die "iceberg: nothing to resume (run infra.sh up)"
      port=$(cat "$RUN/iceberg/port")
      log "restarting the Iceberg REST catalog in place on 127.0.0.1:$port (same catalog database)"
    else
      port=$(free_port)
      rm -rf "$RUN/iceberg"; mkdir -p "$RUN/iceberg"; echo "$port" > "$RUN/iceberg/port"
      "$CACHE/venv/bin/python" "$here/s3_bucket.py" "$endpoint" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$WAREHOUSE_BUCKET"
      log "starting the Iceberg REST catalog on 127.0.0.1:$port (warehouse s3://$WAREHOUSE_BUCKET)"
    fi
    # One connection (CATALOG_CLIENTS=1), a write-ahead log and a busy timeout. With the default
    # pool of two connections, one that lost a write race (SQLITE_BUSY_SNAPSHOT: the other had
    # written since its read) kept failing every commit from then on, and the catalog never
    # recovered; requests now take turns on one connection.
    CATALOG_REST_PORT=$port CATALOG_WAREHOUSE="s3://$WAREHOUSE_BUCKET/" \
      CATALOG_URI="jdbc:sqlite:file:$RUN/iceberg/catalog.db?journal_mode=WAL&busy_timeout=10000" \
      CATALOG_CLIENTS=1 CATALOG_JDBC_USER=user CATALOG_JDBC_PASSWORD=password \
      CATALOG_IO__IMPL=org.apache.iceberg.aws.s3.S3FileIO CATALOG_S3_ENDPOINT="$endpoint" \
      CATALOG_S3_PATH__STYLE__ACCESS=true CATALOG_S3_ACCESS__KEY__ID=$S3_ACCESS_KEY \
      CATALOG_S3_SECRET__ACCESS__KEY=$S3_SECRET_KEY CATALOG_CLIENT_REGION=us-east-1 \
      AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY \
      spawn iceberg java -Dkafkatable.run="$RUN" -Xms128m -Xmx384m -jar "$jar"
    wait_for iceberg 120 curl -sf "http://127.0.0.1:$port/v1/config"
  fi
  setenv KT_ICEBERG_REST_URI "http://127.0.0.1:$(cat "$RUN/iceberg/port")"
  setenv KT_ICEBERG_WAREHOUSE "s3://$WAREHOUSE_BUCKET/"
}
down_iceberg() { stop iceberg; }
status_iceberg() { report iceberg; }

# ----------------------------------------------------------------- schema registry
# java_at_least N: a java binary of major version N or newer (Apicurio 3 needs 21; the
# machines' default java is 17, with a Temurin 25 JDK beside it).
java_at_least() {
  local want=$1 candidate major
  for candidate in ${JAVA21_HOME:+$JAVA21_HOME/bin/java} "$(command -v java)" /usr/lib/jvm/*/bin/java; do
    [[ -x $candidate ]] || continue
    major=$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [[ ${major%%.*} =~ ^[0-9]+$ ]] && ((${major%%.*} >= want)); then echo "$candidate"; return 0; fi
  done
  return 1
}

up_registry() {
  local dir=$CACHE/apicurio-$APICURIO_VERSION
  [[ -f $dir/.complete ]] || die "Apicurio Registry missing: run e2e/tools/java-tools.sh apicurio"
  if ! alive registry; then
    local port java; port=$(free_port)
    java=$(java_at_least 21) || die "Apicurio Registry $APICURIO_VERSION needs Java 21 or newer (set JAVA21_HOME)"
    rm -rf "$RUN/registry"; mkdir -p "$RUN/registry"; echo "$port" > "$RUN/registry/port"
    log "starting Apicurio Registry $APICURIO_VERSION on 127.0.0.1:$port ($java)"
    spawn registry "$java" -Dkafkatable.run="$RUN" -Xms128m -Xmx384m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$port" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$(free_port)" -jar "$dir/quarkus-run.jar"
    wait_for registry 120 curl -sf "http://127.0.0.1:$port/apis/ccompat/v7/subjects"
  fi
  setenv KT_REGISTRY_URL "http://127.0.0.1:$(cat "$RUN/registry/port")/apis/ccompat/v7"
  # For tests that run a registry of their own (stopped and started again mid-test).
  setenv KT_REGISTRY_JAVA "$(java_at_least 21)"
  setenv KT_REGISTRY_JAR "$dir/quarkus-run.jar"
}
down_registry() { stop registry; }
status_registry() { report registry; }

report() {
  if alive "$1"; then printf '%-20s running (pid %s)\n' "$1" "$(cat "$RUN/$1/pid")"
  else printf '%-20s stopped\n' "$1"; fi
}

cmd=${1:-}; shift || true
comps=("$@"); [[ ${#comps[@]} -eq 0 ]] && comps=("${ALL[@]}")
mkdir -p "$RUN"
# One infra.sh at a time (tests that crash and resume components may run side by side).
exec 9>"$RUN/.lock"
flock 9
case $cmd in
  up)
    setenv KAFKATABLE_RUN "$RUN"
    setenv KT_PYTHON "$CACHE/venv/bin/python"
    for c in "${comps[@]}"; do "up_$c"; done
    log "ready; addresses in $ENV_FILE" ;;
  down)
    for ((i = ${#comps[@]} - 1; i >= 0; i--)); do "down_${comps[i]}"; done ;;
  status)
    for c in "${comps[@]}"; do "status_$c"; done ;;
  kill|resume)
    for c in "$@"; do
      [[ $c == kafka || $c == minio || $c == iceberg ]] || die "$cmd: one of kafka, minio, iceberg (got ${c:-nothing})"
    done
    (($# > 0)) || die "$cmd: name the components"
    if [[ $cmd == kill ]]; then
      for c in "$@"; do stop "$c" KILL; done
    else
      RESUME=1
      for c in "$@"; do "up_$c"; done
    fi ;;
  *) echo "usage: $0 up|down|status [${ALL[*]}] | kill|resume kafka|minio|iceberg..." >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Fetches the JVM-based infrastructure from Maven Central into the cache:
#   Apache Kafka (KRaft broker + admin tools), the Iceberg REST catalog fixture, Apicurio Registry.
# Idempotent: what is already in the cache is not fetched again.
# Usage: java-tools.sh [kafka|iceberg|apicurio]...   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${KAFKATABLE_CACHE:-$HOME/.cache/kafkatable}
MVN=(mvn -q -B -Dmaven.repo.local="$CACHE/m2")
mkdir -p "$CACHE"

log() { printf '[java-tools] %s\n' "$*" >&2; }

kafka() {
  local out="$CACHE/kafka-$KAFKA_VERSION"
  [[ -f $out/.complete ]] && return 0
  log "fetching Apache Kafka $KAFKA_VERSION jars"
  local work; work=$(mktemp -d "$CACHE/.mvn.XXXXXX")
  cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.kafkatable.local</groupId><artifactId>kafka-libs</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
  </dependencies>
</project>
POM
  rm -rf "$out"; mkdir -p "$out"
  "${MVN[@]}" -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs"
  rm -rf "$work"; touch "$out/.complete"
}

iceberg() {
  local out="$CACHE/iceberg-rest-$ICEBERG_REST_VERSION"
  [[ -f $out/.complete ]] && return 0
  log "fetching the Iceberg REST catalog fixture $ICEBERG_REST_VERSION"
  rm -rf "$out"; mkdir -p "$out"
  "${MVN[@]}" dependency:copy -Dartifact="org.apache.iceberg:iceberg-open-api:$ICEBERG_REST_VERSION" \
    -DoutputDirectory="$out"
  touch "$out/.complete"
}

apicurio() {
  local out="$CACHE/apicurio-$APICURIO_VERSION"
  [[ -f $out/.complete ]] && return 0
  log "fetching Apicurio Registry $APICURIO_VERSION"
  rm -rf "$out"; mkdir -p "$out"
  "${MVN[@]}" dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$out"
  tar -xzf "$out"/apicurio-registry-app-*.tar.gz -C "$out"
  rm -f "$out"/apicurio-registry-app-*.tar.gz
  touch "$out/.complete"
}

targets=("$@"); [[ ${#targets[@]} -eq 0 ]] && targets=(kafka iceberg apicurio)
for t in "${targets[@]}"; do "$t"; done

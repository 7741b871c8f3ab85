# kafkatable: build, test and run everything on one machine.
# Downloads and builds are cached outside the clone in $(KAFKATABLE_CACHE), keyed by version.

SHELL := /bin/bash
export KAFKATABLE_CACHE ?= $(HOME)/.cache/kafkatable
export KAFKATABLE_RUN ?= $(KAFKATABLE_CACHE)/run
export CARGO_TARGET_DIR ?= $(KAFKATABLE_CACHE)/target
TOOLS := e2e/tools

.PHONY: help setup tools build crds lint unit-test integration-test test chaos fuzz bench images infra-up infra-down infra-status demo

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

tools: ## Fetch and build the infrastructure (Kubernetes, etcd, helm, MinIO, Kafka, catalog, registry, Python readers)
	$(TOOLS)/go-tools.sh
	$(TOOLS)/java-tools.sh
	$(TOOLS)/py-tools.sh

build: ## Build every crate, binary and test
	cargo build --workspace --all-targets --locked

crds: ## Regenerate crds/kafkatable.yaml (and the chart's copy) from the Rust types
	cargo run -q --locked -p kafkatable-crds --bin crdgen > crds/kafkatable.yaml.tmp
	mv crds/kafkatable.yaml.tmp crds/kafkatable.yaml
	cp crds/kafkatable.yaml charts/kafkatable-operator/crds/kafkatable.yaml

setup: tools build ## Everything the tests and the demo need, without starting it

lint: ## rustfmt, clippy (warnings are errors) and helm lint --strict against the chart's values.schema.json
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	$(KAFKATABLE_CACHE)/helm-$$(sed -n 's/^HELM_VERSION=//p' $(TOOLS)/versions.env)/helm lint --strict charts/kafkatable-operator

unit-test: ## Unit tests (no infrastructure)
	cargo test --workspace --lib --bins --locked

integration-test: ## Integration tests against the running infrastructure (make infra-up)
	cargo test -p kafkatable-e2e --test '*' --locked

test: setup lint ## The whole suite: lint, unit tests, then integration tests on freshly started infrastructure
	$(TOOLS)/test.sh

chaos: setup ## The exactly-once chaos tests with 300 kills and 12 broker/store/catalog crashes (CI runs 30 and 3)
	$(TOOLS)/infra.sh up k8s kafka minio iceberg registry
	KAFKATABLE_CHAOS_KILLS=$${KAFKATABLE_CHAOS_KILLS:-300} cargo test -p kafkatable-e2e --test chaos --locked -- --nocapture

fuzz: ## Every decoder fuzzed for 1,000,000 executions each on a release build (FUZZ_EXECUTIONS, FUZZ_SEED to change); the tests run a short round
	cargo run --release -q --locked -p kafkatable-e2e --bin kafkatable-fuzz -- --executions $${FUZZ_EXECUTIONS:-1000000} --seed $${FUZZ_SEED:-1}

bench: setup ## Benchmarks on release builds: ingester rates, ratios, RSS, latency; operator reconcile time with 1,000 tables
	cargo build --release --locked -p kafkatable-ingester -p kafkatable-operator
	$(TOOLS)/infra.sh up k8s kafka minio iceberg registry
	KAFKATABLE_INGESTER_BIN=$(CARGO_TARGET_DIR)/release/kafkatable-ingester cargo run -q --locked -p kafkatable-e2e --bin kafkatable-bench
	KAFKATABLE_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/kafkatable-operator cargo run -q --locked -p kafkatable-e2e --bin kafkatable-operator-bench

images: ## Release images of the operator and the ingester as OCI archives in $(KAFKATABLE_CACHE)/images/release, then --help inside each
	cargo build --release --locked -p kafkatable-ingester -p kafkatable-operator
	$(TOOLS)/images.sh release
	KT_IMAGES_UNDER_TEST=$(KAFKATABLE_CACHE)/images/release cargo test --locked -p kafkatable-e2e --test images -- --nocapture

infra-up: ## Start the infrastructure (idempotent); addresses land in $(KAFKATABLE_RUN)/env
	$(TOOLS)/infra.sh up

infra-down: ## Stop the infrastructure started by infra-up
	$(TOOLS)/infra.sh down

infra-status: ## Show which components run
	$(TOOLS)/infra.sh status

demo: setup ## The product end to end: operator via Helm, a KafkaTable, ingesters, a table read back
	$(TOOLS)/demo.sh

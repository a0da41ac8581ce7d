SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CM := ./target/release/cm

.PHONY: build up down lint test bench clean toolchain

build:
	cargo build --release

# cm finds fabfile.toml from the cwd (repo root).
up:
	bash scripts/ensure-toolchain.sh
	bash scripts/ensure-rabbitmq.sh
	cargo build --release
	$(CM) mq start
	$(CM) mq setup
	$(CM) server start
	$(CM) server status

down:
	if [ -x $(CM) ]; then $(CM) server stop; fi

toolchain:
	bash scripts/ensure-toolchain.sh

# Fresh toolchains may lack the components; offline installs must not stop the build here
# (the next command will fail loudly if they are really missing).
lint: toolchain
	cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1 \
		|| rustup component add clippy rustfmt || true
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Services the integration tests talk to; cargo test builds the cm binary they spawn.
test: toolchain lint
	bash scripts/ensure-rabbitmq.sh
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-celery-venv.sh
	bash scripts/ensure-tools.sh
	cargo test --workspace --no-fail-fast
	# Restarts the shared broker: alone, after everything else.
	cargo test --test broker_restart -- --ignored --test-threads 1
	# 75 s against a RabbitMQ node of its own (consumer_timeout = 5000): apart, once.
	cargo test --test long_jobs -- --ignored --test-threads 1
	# 75–100 s as root: hosts in network namespaces of its own, one cut off for 30 s; a full tmpfs under the store.
	cargo test --test hosts_apart -- --ignored --test-threads 1
	# About a minute: a three-node RabbitMQ cluster of its own, nodes stopped and killed under the workers.
	cargo test --test cluster -- --ignored --test-threads 1
	# 20–35 s as root: a TLS-only RabbitMQ node and a hostssl-only PostgreSQL of its own (initdb as user postgres), a CA the test makes.
	cargo test --test tls -- --ignored --test-threads 1

bench:
	bash bench/run.sh

clean:
	cargo clean
	rm -rf var

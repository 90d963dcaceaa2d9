# The two commands of the README: `make demo` and `make test` set up everything
# on a fresh machine (system packages, virtualenv, Kafka's jars) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system venv jars test unit integration lint demo bench brokers-up brokers-down clean \
	rabbitmq4 test-rabbitmq4

setup: system venv jars

system:
	bash .ci/install-system

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Resolve Kafka's jars from Maven Central once, into the cache.
jars: venv
	$(BIN)/python -c "from message_flow_harness.brokers.kafka import ensure_jars; print('kafka jars:', ensure_jars())"

# mypy cannot follow setuptools' editable import hook, so it reads the
# installed layout (harness/ as message_flow_harness, brokers/ inside it)
# from a tree of links made afresh each time.
TYPED := $(VENV)/typed/message_flow_harness

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(VENV)/typed && mkdir -p $(TYPED)
	ln -s $(CURDIR)/harness/* $(TYPED)/ && ln -s $(CURDIR)/brokers $(TYPED)/brokers
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest

# RabbitMQ 4.x (Debian 13's, in a root of its own: it needs a newer glibc than the
# system's): the RabbitMQ tests again, with the harness's private node inside it.
RABBITMQ4_ROOT ?= /opt/rabbitmq4-root

rabbitmq4:
	HARNESS_RABBITMQ_ROOT=$(RABBITMQ4_ROOT) bash .ci/install-rabbitmq4

test-rabbitmq4: setup rabbitmq4
	HARNESS_RABBITMQ_ROOT=$(RABBITMQ4_ROOT) $(BIN)/pytest tests/integration/rabbitmq

unit: venv
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

demo: setup
	$(BIN)/harness demo

bench: setup
	$(BIN)/python -m benchmarks --json benchmarks/results.json

brokers-up: setup
	$(BIN)/harness brokers up

brokers-down: venv
	$(BIN)/harness brokers down

clean: brokers-down
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# tollgate — `make run` serves the embedded default config (runtime dependencies only); `make test` installs the dev
# tools too and runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROTOC_GEN_ES := .tools/node_modules/.bin/protoc-gen-es
PROTOC_GEN_ES_VERSION := 2.13.0
# grpc-js (Node's own HTTP/2) calls the engine in tests/e2e/test_grpc_js_client.py: a gRPC client that is not grpc's C core.
GRPC_JS := .tools/node_modules/@grpc/grpc-js/package.json
GRPC_JS_VERSION := 1.14.7
PROTO_LOADER_VERSION := 0.8.1
PROTOS := $(shell find protos -name '*.proto')
# checkov lives in a virtual environment of its own: its pinned dependencies conflict with tollgate's dev tools.
CHECKOV := .tools/checkov/bin/checkov
KUBECTL ?= kubectl
OVERLAYS := $(wildcard deploy/kubernetes/overlays/*)

.PHONY: install install-runtime generate clients check-generated lint manifests test run bench chaos fleet clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime

# What `make run` needs: tollgate and its runtime dependencies, no dev tools (the dev install includes these).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

install: $(VENV)/.installed

install-runtime: $(VENV)/.runtime

$(CHECKOV):
	$(PY) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install -q checkov

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

generate: install
	rm -rf generated/tollgate
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=generated --grpc_python_out=generated --mypy_out=generated --mypy_grpc_out=generated $(PROTOS)
	find generated/tollgate -type d -exec sh -c 'touch "$$0/__init__.py"' {} \;

$(PROTOC_GEN_ES):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/protoc-gen-es@$(PROTOC_GEN_ES_VERSION)

$(GRPC_JS):
	npm install --silent --no-audit --no-fund --prefix .tools @grpc/grpc-js@$(GRPC_JS_VERSION) \
		@grpc/proto-loader@$(PROTO_LOADER_VERSION)

# Go and TypeScript clients into gen/ with local plugins, offline (buf.gen.local.yaml; docs/api.md).
clients: $(BUF) $(PROTOC_GEN_ES)
	@command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null \
		|| { echo "protoc-gen-go and protoc-gen-go-grpc are missing: apt-get install protoc-gen-go protoc-gen-go-grpc"; exit 1; }
	rm -rf gen
	PATH="$(abspath .tools/node_modules/.bin):$$PATH" $(BUF) generate --template buf.gen.local.yaml

# CI fails when the committed generated code is not what the protos produce.
check-generated: generate
	git diff --exit-code --stat -- generated
	test -z "$$(git status --porcelain -- generated)"

lint: install $(BUF)
	$(BUF) lint
	if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1'; fi
	$(BIN)/ruff check gateway authsvc statssvc routersvc tests bench
	$(BIN)/ruff format --check gateway authsvc statssvc routersvc tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(MAKE) --no-print-directory manifests

# Every Kustomize overlay renders, validates against the Kubernetes schemas (offline) and passes checkov.
manifests: install $(CHECKOV)
	@command -v $(KUBECTL) >/dev/null || { echo "kubectl not found: it renders deploy/kubernetes (apt-get install kubectl)"; exit 1; }
	mkdir -p build/manifests
	for overlay in $(OVERLAYS); do $(KUBECTL) kustomize $$overlay > build/manifests/$$(basename $$overlay).yaml || exit 1; done
	$(BIN)/kubernetes-validate --kubernetes-version 1.32.0 --strict --quiet build/manifests/*.yaml
	BC_SKIP_MAPPING=TRUE $(CHECKOV) --config-file deploy/kubernetes/.checkov.yaml $$(printf -- '-f %s ' build/manifests/*.yaml)

test: install $(CHECKOV) $(BUF) $(PROTOC_GEN_ES) $(GRPC_JS)
	$(BIN)/python -m pytest -q

run: install-runtime
	$(BIN)/tollgate serve

bench: install
	$(BIN)/python -m bench
	$(BIN)/python -m bench.spool_cost
	$(BIN)/python -m bench.codec_cost
	$(BIN)/python -m bench.upstream_client
	$(BIN)/python -m bench.exchange_cost

# Faults done to real processes (SIGKILL, SIGTERM with streams in flight...), and the matrix of what each cost.
chaos: install
	$(BIN)/python -m bench.chaos

# Three replicas behind HAProxy on a Redis Cluster, with incidents; prints the table (see docs/operations.md).
fleet: install
	$(BIN)/python -m bench.fleet

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache build/manifests

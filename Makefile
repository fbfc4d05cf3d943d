# Moitessier: `make help` lists the targets.

.PHONY: help test bench fuzz serve vet lint

# The demo page's browser test is a module of its own, so that its browser
# driver is no requirement of the library's module: test, vet and lint run
# in both modules.
BROWSERTEST := cmd/moitessier/demo/browsertest
# staticcheck, pinned; `go run` caches the binary it builds.
STATICCHECK ?= go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

test: ## run every test of both modules with the race detector (Postgres tests skip if no server answers)
	go test -race ./...
	go -C $(BROWSERTEST) test -race ./...

vet: ## go vet and gofmt
	go vet ./...
	go -C $(BROWSERTEST) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

lint: ## staticcheck, and go.mod and go.sum tidy, in both modules
	$(STATICCHECK) ./...
	cd $(BROWSERTEST) && $(STATICCHECK) ./...
	go mod tidy -diff
	go -C $(BROWSERTEST) mod tidy -diff

bench: ## run the standard benchmark workloads on every store
	go test -run '^$$' -bench . -benchtime 1s ./memstore ./sqlite ./postgres

fuzz: ## fuzz the scope index for 30 s
	go test -run '^$$' -fuzz FuzzIndex -fuzztime 30s ./internal/scopeindex

serve: ## run the hub on a local SQLite file
	go run ./cmd/moitessier serve

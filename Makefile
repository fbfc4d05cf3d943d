# Moitessier: `make help` lists the targets.

.PHONY: help test bench fuzz serve vet

# The demo page's browser test is a module of its own, so that its browser
# driver is no requirement of the library's module: test and vet run
# in both modules.
BROWSERTEST := cmd/moitessier/demo/browsertest

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

test: ## run every test of both modules with the race detector (Postgres tests skip if no server answers)
	go test -race ./...
	go -C $(BROWSERTEST) test -race ./...

vet: ## go vet and gofmt
	go vet ./...
	go -C $(BROWSERTEST) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

bench: ## run the standard benchmark workloads on every store
	go test -run '^$$' -bench . -benchtime 1s ./memstore ./sqlite ./postgres

fuzz: ## fuzz the scope index for 30 s
	go test -run '^$$' -fuzz FuzzIndex -fuzztime 30s ./internal/scopeindex

serve: ## run the hub on a local SQLite file
	go run ./cmd/moitessier serve

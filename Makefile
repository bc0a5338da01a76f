# The two commands of the README. Each installs what it needs when absent.

.PHONY: run test

## Build and run Chatty on the embedded default (edge + API, SQLite, in-process bus).
run:
	scripts/deps.sh run
	cargo run --release -p chatty -- up

## The whole test suite: unit, conformance, integration, browser, manifests.
test:
	scripts/test.sh

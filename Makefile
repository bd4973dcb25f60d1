# Two commands on a fresh clone (each sets up whatever is missing first; ./setup.sh takes a second when
# nothing changed):
#   make run     the quickstart: recipes/quickstart.yaml end to end (RECIPE=... for another recipe)
#   make test    the test suite, as CI runs it (.ci/run); PYTEST_ARGS=... to pass arguments to pytest
RECIPE ?= recipes/quickstart.yaml
PYTEST_ARGS ?=

.PHONY: setup run test

setup:
	./setup.sh

run: setup
	.venv/bin/workbench run $(RECIPE)

test: setup
	@.venv/bin/pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo "make test: pytest collected no tests; failing on purpose" >&2; exit $$rc; }

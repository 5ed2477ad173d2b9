# One entry point for the checks CI runs before the tests.
.PHONY: lint test
lint:
	ruff format --check src tests bench
	ruff check src tests bench
	mypy

test:
	python -m pytest -q

# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: run test setup venv hypervisor lint bench clean

$(VENV)/.installed: requirements.txt
	scripts/system-deps
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

hypervisor:
	scripts/hypervisor

setup: venv hypervisor
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0

run: setup
	@if [ -n "$$DJANGO_SUPERUSER_USERNAME" ] && ! $(PY) manage.py shell -v 0 -c "from django.contrib.auth.models import User; raise SystemExit(not User.objects.filter(username='$$DJANGO_SUPERUSER_USERNAME').exists())" 2>/dev/null; then \
		$(PY) manage.py createsuperuser --noinput; fi
	$(PY) manage.py demo_vms --snapshots
	@scripts/run-server $(HOST) $(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

test: venv hypervisor lint
	scripts/system-deps --test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/snapshot_create.py
	$(PY) bench/tree_render.py
	$(PY) bench/concurrency.py

clean:
	rm -rf $(VENV) staticfiles db.sqlite3* test-db.sqlite3*

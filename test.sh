#!/usr/bin/env bash
# The test suite: set up a virtual environment with the test and mujoco extras and run pytest on 2 emulated
# CPU devices (tests/conftest.py), in two worker processes (pytest-xdist; each test file stays in
# one worker, so its module fixtures are built once). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,mujoco]"
.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=15 "$@"

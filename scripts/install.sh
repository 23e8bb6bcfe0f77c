#!/usr/bin/env bash
# Create a virtual environment with everything chainer-cifar needs.
#
#   bash scripts/install.sh            # .venv with Python 3.11 and the pinned stack
#   bash scripts/install.sh --numpy2   # today's stack (use with PYTHON=python3.12)
#
# Environment: PYTHON (the interpreter to build the venv from), VENV (its folder,
# default .venv). Chainer 7.8.1 only ships an sdist whose setup.py imports
# pkg_resources, so "setuptools<70" and wheel go in first and the requirements
# are built against them (--no-build-isolation).
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=requirements.txt
if [ "${1:-}" = "--numpy2" ]; then requirements=requirements-numpy2.txt; fi
venv=${VENV:-.venv}

if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
    done
fi
if [ -z "${PYTHON:-}" ] || ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: no Python found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$requirements" = requirements.txt ] && [ "$version" != 3.11 ] && [ "$version" != 3.10 ]; then
    echo "error: the pinned stack (NumPy 1.26) needs Python 3.10 or 3.11, $PYTHON is $version;" \
         "set PYTHON=python3.11, or use --numpy2 for Python $version" >&2
    exit 2
fi

echo "== creating $venv with $PYTHON (Python $version), $requirements"
"$PYTHON" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q "setuptools<70" wheel
"${pip[@]}" install -q --no-build-isolation -r "$requirements"
"${pip[@]}" install -q --no-build-isolation --no-deps -e .
"$venv/bin/python" -c 'import chainer_cifar, chainer, numpy, sys; print("== ok: Python %s, chainer %s, numpy %s" % (sys.version.split()[0], chainer.__version__, numpy.__version__))'

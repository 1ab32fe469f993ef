#!/usr/bin/env bash
# Set up layertime on a fresh machine: the package, torch, torchvision and the
# test tools, installed into the current Python with pip.  Nothing is needed
# by hand beforehand but Python 3.10+ with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[test]"

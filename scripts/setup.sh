#!/usr/bin/env bash
# Set up layertime on a fresh machine: the package, torch, torchvision, the
# test tools and the frameworks of the integrations (Lightning, Hugging Face
# transformers with accelerate), installed into the current Python with pip.
# Nothing is needed by hand beforehand but Python 3.10+ with pip.
#
# The HTML report tests open the report in a real headless Chromium (driven
# by Playwright, which uses the system browser: it downloads none).  On a
# Debian/Ubuntu machine run as root, Chromium is installed with apt when it is
# missing; elsewhere install it yourself (or set LAYERTIME_CHROMIUM to its path).
set -euo pipefail
cd "$(dirname "$0")/.."
# The framework integrations' extras too, so their tests run (never skipped).
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -e ".[test,lightning,hf]"

if [ -z "${LAYERTIME_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
        && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # With its recommends: fonts (legible screenshots) and the GL/DRI libraries.
        apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: Chromium is missing; the HTML report tests need it" \
             "(apt-get install chromium, or set LAYERTIME_CHROMIUM)" >&2
    fi
fi

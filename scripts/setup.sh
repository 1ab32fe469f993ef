#!/usr/bin/env bash
# Set up layertime on a fresh Linux machine, in four steps it announces as it goes:
#
#   1. The Python: the active virtual environment's when one is active ($VIRTUAL_ENV), else
#      that of a working .venv, else python3 on PATH (or $LAYERTIME_PYTHON).  It must be 3.10
#      or newer.
#   2. The virtual environment: the active one when there is one (and .venv is made a link to
#      it, so that .venv/bin/... names it either way), else .venv in the project, created when
#      missing and reused when it works.  Nothing is installed into a system Python, so
#      Debian's externally managed /usr/bin/python3 (PEP 668) works too; where that Python
#      cannot make a virtual environment (Debian's python3-venv not installed), it is installed
#      with apt when run as root, else one line says what to install.
#   3. pip installs layertime (editable) with torch, torchvision, its test tools and the
#      transformers, lightning and timm integrations into that environment, showing its
#      progress.  The environment takes about 6 GB (measured 6.1 GB with Python 3.11).
#   4. Chromium, which only the HTML report tests need (Playwright drives the system browser
#      and downloads none): found on PATH or at $LAYERTIME_CHROMIUM, else installed with apt
#      when run as root on Debian/Ubuntu, else one line says how.  Never a failure of setup.
#
# LAYERTIME_SETUP_DRY_RUN=1 prints the choices and the commands without changing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$(pwd -P)
dry=${LAYERTIME_SETUP_DRY_RUN:-}
[ "$dry" = 0 ] && dry=
extras="test,hf,lightning,timm"

say() { printf 'setup: %s\n' "$*"; }
note() { printf 'setup: note: %s\n' "$*" >&2; }
fail() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
# Print a command, then run it (in a dry run, only print it).
run() {
    if [ -n "$dry" ]; then
        printf 'setup: would run: %s\n' "$*"
        return 0
    fi
    printf '+ %s\n' "$*"
    "$@"
}
is_root() { [ "$(id -u)" = 0 ]; }
has_apt() { command -v apt-get >/dev/null 2>&1; }
apt_install() {
    run apt-get update && run env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# --- 1. the Python -------------------------------------------------------------------------
venv=.venv
if [ -n "${VIRTUAL_ENV:-}" ]; then
    [ -x "$VIRTUAL_ENV/bin/python" ] \
        || fail "the active virtual environment $VIRTUAL_ENV has no bin/python; deactivate it (or recreate it) and run this again"
    active=$(cd "$VIRTUAL_ENV" && pwd -P)
    py=$active/bin/python
elif [ -x .venv/bin/python ] && .venv/bin/python -c '' 2>/dev/null; then
    active=
    reuse=1
    py=$project/.venv/bin/python
else
    active=
    base=${LAYERTIME_PYTHON:-python3}
    if ! command -v "$base" >/dev/null 2>&1; then
        if [ -z "${LAYERTIME_PYTHON:-}" ] && is_root && has_apt; then
            say "no python3 on PATH: installing Debian's python3 with apt"
            apt_install python3 python3-venv
        else
            fail "no $base on PATH: install Python 3.10 or newer (Debian/Ubuntu: apt-get install python3 python3-venv), or set LAYERTIME_PYTHON to one"
        fi
    fi
    py=$(command -v "$base" || echo "$base")
fi
if version=$("$py" -c 'import sys; print(*sys.version_info[:3], sys.executable)' 2>/dev/null) \
        && read -r major minor micro exe <<<"$version" \
        && [[ "$major.$minor.$micro" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    ver=$major.$minor
    if [ "$major" -lt 3 ] || { [ "$major" = 3 ] && [ "$minor" -lt 10 ]; }; then
        fail "layertime needs Python 3.10 or newer; $py is $ver (set LAYERTIME_PYTHON to a newer python3)"
    fi
elif [ -n "$dry" ] && ! command -v "$py" >/dev/null 2>&1; then
    ver="not installed yet"
    pending=1
else
    fail "could not run $py as Python 3 (layertime needs Python 3.10 or newer)"
fi
if [ -n "${exe:-}" ] && [ "$exe" != "$py" ]; then
    say "[1/4] Python: $py, that is $exe ($ver.$micro)"
elif [ -n "${micro:-}" ]; then
    say "[1/4] Python: $py ($ver.$micro)"
else
    say "[1/4] Python: $py ($ver)"
fi

# --- 2. the virtual environment ------------------------------------------------------------
if [ -n "$active" ]; then
    if [ -e .venv ] && [ "$(cd .venv && pwd -P)" = "$active" ]; then
        say "[2/4] virtual environment: the active one, $active (.venv)"
    elif [ -L .venv ] || [ ! -e .venv ]; then
        say "[2/4] virtual environment: the active one, $active; .venv is made a link to it, so .venv/bin/... names it"
        run ln -sfn "$active" .venv
    else
        fail ".venv already holds another virtual environment: to install into the active one ($active) remove .venv first; to use .venv instead run 'deactivate' first"
    fi
elif [ -n "${reuse:-}" ]; then
    if [ -L .venv ]; then
        say "[2/4] virtual environment: .venv, a link to $(cd .venv && pwd -P) (reused; remove the link to make a new .venv)"
    else
        say "[2/4] virtual environment: .venv (exists, reused; remove it to make it anew)"
    fi
else
    if [ -e .venv ] || [ -L .venv ]; then
        say ".venv has no working bin/python (an interrupted setup, or its Python moved): making it anew"
        run rm -rf .venv
    fi
    if [ -z "${pending:-}" ] && ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
        pkg="python$ver-venv"
        real=$(readlink -f "$py" 2>/dev/null || echo "$py")
        case "$real" in
            /usr/bin/*) debian_python=1 ;;
            *) debian_python= ;;
        esac
        if [ -n "$debian_python" ] && is_root && has_apt; then
            say "$py cannot make a virtual environment (no ensurepip): installing Debian's $pkg with apt"
            apt_install "$pkg"
        elif [ -n "$debian_python" ] && has_apt; then
            fail "$py cannot make a virtual environment: install Debian's $pkg as root (sudo apt-get install $pkg), then run this again"
        else
            fail "$py cannot make a virtual environment (its ensurepip module is missing): install its venv support (Debian/Ubuntu: $pkg), or set LAYERTIME_PYTHON to another python3"
        fi
    fi
    say "[2/4] virtual environment: making .venv with $py"
    if ! run "$py" -m venv .venv; then
        rm -rf .venv
        fail "'$py -m venv .venv' failed (its message is above)"
    fi
fi
vpy=$venv/bin/python
if [ -z "$dry" ] && ! "$vpy" -m pip --version >/dev/null 2>&1; then
    fail "the virtual environment $(cd .venv && pwd -P) has no pip ('$vpy -m ensurepip' adds it)"
fi

# --- 3. layertime and what it needs --------------------------------------------------------
avail_kb=$(df -Pk "$(cd .venv 2>/dev/null && pwd -P || echo "$project")" 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((8 * 1024 * 1024)) ]; then
    note "only $((avail_kb / 1024 / 1024)) GB free there; the environment needs about 6 GB, and pip unpacks about 3 GB of downloads on the way"
fi
say "[3/4] installing layertime (editable) with torch, torchvision, its test tools and the transformers, lightning and timm integrations into .venv with pip: a first install is about 6 GB and takes minutes"
if ! run "$vpy" -m pip install --disable-pip-version-check -e ".[$extras]"; then
    fail "pip could not install layertime into .venv (its message is above)"
fi

# --- 4. Chromium, for the HTML report tests only -------------------------------------------
chromium=${LAYERTIME_CHROMIUM:-}
[ -n "$chromium" ] || chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -n "$chromium" ]; then
    say "[4/4] Chromium, for the HTML report tests: $chromium"
elif is_root && has_apt; then
    say "[4/4] Chromium, which only the HTML report tests need (layertime does not): installing Debian's package with apt"
    # With its recommends: fonts (legible screenshots) and the GL/DRI libraries.
    apt_install chromium \
        || note "apt could not install Chromium (its message is above): the HTML report tests will fail until it is installed or LAYERTIME_CHROMIUM names one; layertime itself is ready"
else
    if is_root; then how="install Chromium, or set LAYERTIME_CHROMIUM to its path"
    elif has_apt; then how="install it as root (sudo apt-get install chromium), or set LAYERTIME_CHROMIUM to its path"
    else how="install Chromium, or set LAYERTIME_CHROMIUM to its path"; fi
    note "[4/4] Chromium is missing: only the HTML report tests need it (layertime itself is ready); $how"
fi

if [ -n "$dry" ]; then
    say "dry run: nothing was changed"
else
    say "done: .venv/bin/layertime profile alexnet runs the main job, .venv/bin/python -m pytest -q the tests (or 'source .venv/bin/activate' first, then layertime ...)"
fi

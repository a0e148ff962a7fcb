# shellcheck shell=bash
# Sourced by .ci/run and .ci/demo: makes a fresh machine (Debian 12, Python >= 3.11) ready to run
# onlineca.  Installs what is missing with apt-get (the Debian packages named in NEED_APT, and
# python3-venv when the system Python is "externally managed", PEP 668), makes and uses .venv in
# that case, then installs onlineca (editable) with the extras in ONLINECA_EXTRAS.  Exports PY
# (the Python to use) and puts the `onlineca` command on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null; then
  echo "error: $PY not found; onlineca needs Python >= 3.11" >&2
  exit 1
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "error: $("$PY" --version 2>&1) is too old; onlineca needs Python >= 3.11 (set PYTHON=...)" >&2
  exit 1
}

# pip may not install into a distribution's own Python (PEP 668): use a virtual environment then.
externally_managed() {
  "$PY" -c 'import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
         and sys.prefix == sys.base_prefix else 1)'
}
use_venv=0
if [ -x .venv/bin/python ] || externally_managed || ! "$PY" -m pip --version >/dev/null 2>&1; then
  use_venv=1
fi

need_apt=(${NEED_APT:-})
# Debian ships the venv module without ensurepip's wheels: only a trial tells.
if [ "$use_venv" = 1 ] && [ ! -x .venv/bin/python ]; then
  probe="$(mktemp -d)"
  "$PY" -m venv "$probe/v" >/dev/null 2>&1 || need_apt+=("python3-venv")
  rm -rf "$probe"
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to install ${need_apt[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "$use_venv" = 1 ]; then
  echo "== virtual environment .venv (the system Python is externally managed)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  PY="$PWD/.venv/bin/python"
  export PATH="$PWD/.venv/bin:$PATH"
fi
export PY

echo "== pip install -e .${ONLINECA_EXTRAS:+[$ONLINECA_EXTRAS]}"
"$PY" -m pip install -q --disable-pip-version-check -e ".${ONLINECA_EXTRAS:+[$ONLINECA_EXTRAS]}"

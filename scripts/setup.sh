#!/usr/bin/env bash
# Create .venv and install rlhf-assets with its test tools from the lock (requirements/dev.lock). Idempotent; needs
# only the package registries. torch==2.13.0 is installed first, on its own, by pip, which takes the CPU wheel on
# this machine's disk and never pulls CUDA packages; every other version comes from the lock (the same versions a
# SageMaker job installs, requirements/job.lock), installed by uv (seconds, where pip takes over a minute), which
# keeps the installed torch because the lock pins the same version. `--compile-bytecode` writes the .pyc files pip
# would (with PYTHONDONTWRITEBYTECODE set, as here, every process would otherwise compile its imports from source:
# seconds per process).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" "uv==0.13.9"
.venv/bin/python -m uv pip install --python .venv/bin/python --quiet --compile-bytecode -r requirements/dev.lock
.venv/bin/python -m uv pip install --python .venv/bin/python --quiet --no-deps -e .
.venv/bin/python -m compileall -q rlhf_assets
# --with-browser installs Debian's chromium + chromium-driver (the browser tests); --with-postgres Debian's
# postgresql (the service tests start a private server of their own; nothing is started here).
packages=()
for flag in "$@"; do
    case "$flag" in
        --with-browser) { command -v chromium && command -v chromedriver; } >/dev/null || packages+=(chromium chromium-driver) ;;
        --with-postgres) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql) ;;
        *) echo "unknown option $flag (--with-browser, --with-postgres)" >&2; exit 2 ;;
    esac
done
if (( ${#packages[@]} )); then
    sudo_cmd=""
    [[ "$(id -u)" != 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${packages[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Sets up everything edgekit needs on a fresh Debian 12 / Python 3.11 machine, idempotently:
#   1. Debian packages: the Arm cross-compiler + newlib, QEMU (Cortex-M boards), the RISC-V cross-compiler +
#      picolibc and qemu-system-riscv32 (RV32 cores), Chromium (report screenshots),
#      espeak-ng (the spoken-keyword data set, edgekit/speech.py).
#   2. A virtual environment at .venv/ with the pinned Python packages and edgekit itself (editable).
#   3. lava-nc 0.10.0 with its one Python-3.11 workaround (scripts/lava_py311_fix.py).
#   4. The emulated 64-bit Arm phone cores (qemu-user, above): an arm64 userland with Python and ONNX Runtime's
#      aarch64 build, unpacked from Debian's arm64 packages and the registry's wheels into
#      $XDG_CACHE_HOME/edgekit/arm64/ (targets/phone/arm64.py; nothing installed system-wide).
# A stamp file per step makes a second run cheap; delete .venv/ to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

APT_PACKAGES="gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi qemu-system-arm gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc qemu-user chromium espeak-ng"
missing=""
for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "edgekit setup: installing Debian packages:$missing"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "edgekit setup: creating .venv"
    "$PY" -m venv .venv
fi
STAMP=.venv/.edgekit-setup
WANT=$(cat requirements.txt pyproject.toml setup.py scripts/setup.sh scripts/lava_py311_fix.py | sha256sum | cut -c1-16)
if [ "$(cat $STAMP 2>/dev/null)" != "$WANT" ]; then
    echo "edgekit setup: installing Python packages (pinned, see requirements.txt)"
    .venv/bin/pip install -q -r requirements.txt
    # lava-nc 0.10.0 declares Requires-Python <3.11 but runs on 3.11 with one fix (see the script).
    .venv/bin/pip install -q --ignore-requires-python lava-nc==0.10.0 numpy==1.26.4 scipy==1.15.3 scikit-learn==1.6.1
    .venv/bin/python scripts/lava_py311_fix.py
    .venv/bin/pip install -q --no-deps -e .
    echo "$WANT" > $STAMP
fi
# Made once per onnxruntime version (about 10 s), then found by its stamp.
.venv/bin/python -m edgekit.targets.phone.arm64 >/dev/null

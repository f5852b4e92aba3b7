# Set-up and the two jobs the README opens with. Everything installs itself on
# a fresh machine (Python 3.11; torch==2.13.0's CPU wheel is on local disk;
# hdl/setup-tools.sh installs Debian's yosys, iverilog, nextpnr-ice40 and
# fpga-icestorm when they are missing, and the PyPI simulators).
PYTHON ?= python3
PIP := PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 $(PYTHON) -m pip

.PHONY: setup demo test bench
setup:
	PYTHON=$(PYTHON) bash hdl/setup-tools.sh
	$(PIP) install -q -e '.[test,sim]'

# Main job: train a small fixed-point layer-skipping network on the bundled
# MNIST, generate its Verilog, co-simulate test images in Icarus (cocotb).
DEMO_IMAGES ?= 20
demo: setup
	rm -rf runs/demo build/demo
	eqprop train --config configs/demo.toml
	eqprop hdl generate --config runs/demo/config.toml --checkpoint runs/demo --out build/demo
	eqprop sim --config runs/demo/config.toml --checkpoint runs/demo --design build/demo \
		--simulator icarus --examples $(DEMO_IMAGES)

# The whole test suite.
test: setup
	$(PYTHON) -m pytest -q

# Speed of the float model at the paper's size (not part of the tests).
bench: setup
	$(PYTHON) -m eqprop.model.bench

# Set-up and the two jobs the README opens with. Everything installs itself on
# a fresh machine (Python 3.11; torch==2.13.0's CPU wheel is on local disk;
# hdl/setup-tools.sh installs Debian's yosys, iverilog, nextpnr-ice40 and
# fpga-icestorm when they are missing, and the PyPI simulators; the [fpga] extra
# is YoWASP's Yosys and nextpnr-ecp5 for the ECP5 targets).
PYTHON ?= python3
PIP := PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 $(PYTHON) -m pip

.PHONY: setup demo test bench cosim-bitdepth
setup:
	PYTHON=$(PYTHON) bash hdl/setup-tools.sh
	$(PIP) install -q -e '.[test,sim,cluster,fpga]'

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
	$(PYTHON) -m eqprop.model.bench --settle 1e-4

# Co-simulation at 8, 6 and 4 bits (docs/cosim.md): the demo network trained in
# float and quantized to each depth, and trained in fixed point at 6 and 4 bits;
# 1,000 MNIST test images each in Verilator (a few minutes per design).
COSIM_IMAGES ?= 1000
cosim-bitdepth: setup
	eqprop train --config configs/demo-float.toml
	for b in 8 6 4; do \
	  eqprop hdl generate --config runs/demo-float/config.toml --checkpoint runs/demo-float \
	    --out build/demo-float-b$$b --name eqprop_demo_float_b$$b --no-lint \
	    --bits state=$$b,weight=$$b,weight_store=$$b,bias=$$((b + 4)),rounding=nearest-even && \
	  eqprop sim --config runs/demo-float/config.toml --design build/demo-float-b$$b \
	    --simulator verilator --examples $(COSIM_IMAGES) || exit 1; \
	done
	for b in 6 4; do \
	  eqprop train --config configs/demo.toml --out runs/demo-b$$b \
	    --bits state=$$b,weight=$$b,weight_store=$$((b + 4)),bias=$$((b + 4)) && \
	  eqprop hdl generate --config runs/demo-b$$b/config.toml --checkpoint runs/demo-b$$b \
	    --out build/demo-b$$b --name eqprop_demo_b$$b --no-lint && \
	  eqprop sim --config runs/demo-b$$b/config.toml --design build/demo-b$$b \
	    --simulator verilator --examples $(COSIM_IMAGES) || exit 1; \
	done

"""The EqProp core in Amaranth and everything that turns it into hardware.

``core.py`` and ``lane.py`` compose the components of ``units/`` (docs/rtl.md) into
a core that computes docs/numerics.md bit for bit; ``layout.py`` spreads a topology
over P lanes; ``enums.py`` names every code, ``memory_map.py`` computes every host
address and ``regmap.py`` documents them once (C header, docs tables, manifest);
``driver.py`` loads and runs the core from amaranth.sim or cocotb; ``axi.py`` and
``serial.py`` are bus wrappers; ``generate.py`` writes the Verilog, memory files and
manifest, and ``fpga.py``/``toolchain.py`` run lint, synthesis, place and route and
bitstream packing for the targets. ``cli.py`` holds the ``eqprop hdl`` commands.
"""

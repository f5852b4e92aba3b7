"""Co-simulation of the generated core against the fixed-point model.

``job.py`` writes what the model expects for each example, ``tb_core.py`` is the
cocotb bench (driver, monitor, scoreboard), ``runner.py`` builds and runs it in
Icarus or Verilator, ``cli.py`` is ``eqprop sim`` and its report, ``waves.py`` is
``eqprop waves`` (vcdvcd), and ``plain/`` with ``plaintb.py`` is a plain Verilog
testbench driven from the manifest alone (docs/cosim.md).
"""

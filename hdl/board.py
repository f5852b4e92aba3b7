"""A board top for the ULX3S (``eqprop hdl generate --board ulx3s``): the core behind the UART
bridge (``hdl/uart.py``) on the board's FTDI USB-serial port.

=================  ==========================  ==========================================
board              FPGA (CABGA381, speed 6)    target of the flow (``hdl/fpga.py``)
=================  ==========================  ==========================================
``ulx3s``          LFE5U-85F                   ``ecp5-85k``
``ulx3s-85f``      LFE5U-85F                   ``ecp5-85k``
``ulx3s-45f``      LFE5U-45F                   ``ecp5-45k``
``ulx3s-25f``      LFE5U-25F                   ``ecp5-25k``
=================  ==========================  ==========================================

The top ``NAME_ulx3s`` (``Ulx3sTop``) has only board pins as ports:

- ``clk25``: the 25 MHz oscillator. The core runs on it directly, or, for another clock
  (``[hdl] clock_mhz`` / ``--clock-mhz``), on an ``EHXPLLL`` output (:func:`pll_config`:
  the dividers whose output is nearest the asked frequency).
- ``uart_rx`` (FPGA input, site M1, the FTDI's TXD) and ``uart_tx`` (FPGA output, site L4,
  the FTDI's RXD): amaranth-boards names the UART's lines from the FPGA's side, as here.
- ``button_pwr``: the PWR button, low when pressed; pressing it resets the core (through a
  reset synchroniser, which also holds the core in reset until the PLL has locked).
- ``led[0..7]``: LED 0 the core's ``busy``, LED 1 its ``irq`` (an example has ended and
  ``status`` was not read yet), LED 7 the clock is up (PLL locked), the others off.

The pin sites and IO attributes are read from amaranth-boards' resource lists (its
``ULX3S_*_Platform``, ``fpga`` extra), never typed here: :func:`board_pins` and
:func:`lpf_text`, the ``.lpf`` that nextpnr-ecp5 places the top with. The bitstream is
built by the project's flow (YoWASP Yosys ``synth_ecp5``, nextpnr-ecp5 ``--lpf``,
ecppack: ``hdl/fpga.py``), not by amaranth's platform build, which expects native tools.
"""


import math
from dataclasses import dataclass

from amaranth.hdl import Cat, ClockDomain, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .uart import UartCore

OSC_MHZ = 25.0  # the ULX3S's oscillator (clk25)
DEFAULT_BAUD = 115200
#: a frame whose bytes stop arriving for this long is dropped (hdl/uart.py)
FRAME_TIMEOUT_S = 0.05
N_LEDS = 8


@dataclass(frozen=True)
class Board:
    name: str
    variant: str  # amaranth-boards' platform: ULX3S_{variant}_Platform
    target: str  # hdl/fpga.py's TARGETS

    @property
    def suffix(self) -> str:
        """The top's and the files' suffix: ``NAME_ulx3s``, ``NAME_ulx3s_45f``."""
        return self.name.replace("-", "_")

    def platform(self):
        """amaranth-boards' platform of this board (only its resource lists are used);
        ImportError naming the package when it is missing."""
        try:
            from amaranth_boards import ulx3s
        except ImportError as e:
            raise ImportError("amaranth-boards not found: install it with 'pip install -e .[fpga]'") from e
        return getattr(ulx3s, f"ULX3S_{self.variant}_Platform")()


BOARDS = {b.name: b for b in (Board("ulx3s", "85F", "ecp5-85k"), Board("ulx3s-85f", "85F", "ecp5-85k"),
                              Board("ulx3s-45f", "45F", "ecp5-45k"), Board("ulx3s-25f", "25F", "ecp5-25k"))}

#: the top's ports: (port, amaranth-boards resource, number, subsignal)
PORTS = (("clk25", "clk25", 0, None), ("uart_rx", "uart", 0, "rx"), ("uart_tx", "uart", 0, "tx"),
         ("button_pwr", "button_pwr", 0, None),
         *((f"led[{k}]", "led", k, None) for k in range(N_LEDS)))


@dataclass(frozen=True)
class Pin:
    port: str  # the top's port (bit), the LPF's COMP
    site: str
    dir: str  # "i" | "o"
    invert: bool  # the board's signal is active low (amaranth-boards' PinsN)
    attrs: dict  # IOBUF attributes (IO_TYPE, PULLMODE, DRIVE, ...)
    clock_hz: float | None
    resource: str


def board_pins(board: Board) -> list[Pin]:
    """The top's pins as amaranth-boards defines them (site, direction, inversion, IO
    attributes, clock frequency)."""
    plat = board.platform()
    out = []
    for port, name, number, sub in PORTS:
        res = plat.lookup(name, number)
        attrs = dict(res.attrs)
        ios = res.ios
        if sub is not None:
            io = next(s for s in ios if getattr(s, "name", None) == sub)
            attrs.update(io.attrs)
            ios = io.ios
        pins = ios[0]
        if len(pins.names) != 1:
            raise ValueError(f"{name} {number}: {len(pins.names)} pins, the top takes one")
        clock = res.clock.frequency if res.clock is not None else None
        out.append(Pin(port, pins.names[0], pins.dir, bool(pins.invert), attrs, clock,
                       f"{name}/{number}" + (f"/{sub}" if sub else "")))
    return out


def lpf_text(board: Board, pins: list[Pin] | None = None) -> str:
    """The LPF (Lattice preference file) of the top for nextpnr-ecp5: each port's site
    (``LOCATE COMP``), IO attributes (``IOBUF PORT``) and the oscillator's frequency
    (``FREQUENCY PORT``), all from amaranth-boards."""
    import amaranth_boards  # noqa: F401  (board_pins needs it)
    from importlib.metadata import version

    pins = board_pins(board) if pins is None else pins
    lines = [f"# {board.name}: pins of the top, from amaranth-boards {version('amaranth-boards')} "
             f"ULX3S_{board.variant}_Platform (generated by eqprop.hdl.board)",
             "BLOCK RESETPATHS;", "BLOCK ASYNCPATHS;"]
    for p in pins:
        lines.append(f'LOCATE COMP "{p.port}" SITE "{p.site}";  # {p.resource}{" (active low)" if p.invert else ""}')
        if p.attrs:
            lines.append(f'IOBUF PORT "{p.port}" ' + " ".join(f"{k}={v}" for k, v in p.attrs.items()) + ";")
        if p.clock_hz:
            lines.append(f'FREQUENCY PORT "{p.port}" {p.clock_hz / 1e6:g} MHZ;')
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# The PLL (ECP5 EHXPLLL, feedback from CLKOP)
# --------------------------------------------------------------------------

PFD_MIN_MHZ, VCO_MIN_MHZ, VCO_MAX_MHZ = 3.125, 400.0, 800.0
OUT_MIN_MHZ, OUT_MAX_MHZ = 3.125, 400.0
PLL_TOLERANCE = 0.01  # the largest relative error pll_config accepts


@dataclass(frozen=True)
class PllConfig:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    fin_mhz: float

    @property
    def fout_mhz(self) -> float:
        return self.fin_mhz * self.clkfb_div / self.clki_div

    @property
    def vco_mhz(self) -> float:
        return self.fout_mhz * self.clkop_div


def pll_config(fin_mhz: float, fout_mhz: float) -> PllConfig:
    """EHXPLLL dividers for ``fout_mhz`` from ``fin_mhz`` (feedback from CLKOP:
    fout = fin x CLKFB_DIV / CLKI_DIV, VCO = fout x CLKOP_DIV in 400-800 MHz, the phase
    detector at >= 3.125 MHz): the nearest output, then the VCO nearest 600 MHz.
    ValueError (one line naming ``clock_mhz``) when no output is within 1%."""
    best, key = None, None
    for i in range(1, 129):
        if fin_mhz / i < PFD_MIN_MHZ:
            break
        for fb in range(1, 81):
            fo = fin_mhz * fb / i
            if fo > OUT_MAX_MHZ:
                break
            if fo < OUT_MIN_MHZ:
                continue
            lo, hi = max(1, math.ceil(VCO_MIN_MHZ / fo)), min(128, math.floor(VCO_MAX_MHZ / fo))
            if lo > hi:
                continue
            op = min(max(round(600.0 / fo), lo), hi)
            k = (abs(fo - fout_mhz), abs(fo * op - 600.0), i)
            if key is None or k < key:
                best, key = PllConfig(i, fb, op, fin_mhz), k
    if best is None or abs(best.fout_mhz - fout_mhz) > PLL_TOLERANCE * fout_mhz:
        near = f" (nearest {best.fout_mhz:.3f} MHz)" if best is not None else ""
        raise ValueError(f"clock_mhz: the PLL cannot make {fout_mhz:g} MHz from {fin_mhz:g} MHz{near}")
    return best


def _pll(m: Module, clkin, clkout, locked, cfg: PllConfig):
    m.submodules.pll = Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{cfg.fin_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{cfg.fout_mhz:.6g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=cfg.clki_div, p_CLKFB_DIV=cfg.clkfb_div, p_FEEDBK_PATH="CLKOP",
        p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=cfg.clkop_div, p_CLKOP_CPHASE=cfg.clkop_div - 1, p_CLKOP_FPHASE=0,
        i_CLKI=clkin, i_CLKFB=clkout, o_CLKOP=clkout, o_LOCK=locked,
        i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
        i_PLLWAKESYNC=0, i_ENCLKOP=0)


# --------------------------------------------------------------------------
# The top
# --------------------------------------------------------------------------

class Ulx3sTop(wiring.Component):
    """The board top (the module's docstring): ``uart_core`` (a :class:`UartCore`) clocked by
    ``clk25`` or by the PLL of ``pll`` (None: 25 MHz), reset by the PWR button."""

    clk25: In(1)
    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    button_pwr: In(1, init=1)
    led: Out(N_LEDS)

    def __init__(self, uart_core: UartCore, pins: list[Pin], pll: PllConfig | None = None):
        self.uart = uart_core
        self.inverted = {p.port for p in pins if p.invert}
        self.pll = pll
        super().__init__()

    def _pin(self, port: str, value):
        """A port's logical value from (or to) its pin: inverted where the board's signal is
        active low."""
        return ~value if port in self.inverted else value

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        if self.pll is None:
            m.d.comb += [cd.clk.eq(self.clk25), locked.eq(1)]
        else:
            _pll(m, self.clk25, cd.clk, locked, self.pll)
        pressed = self._pin("button_pwr", self.button_pwr)
        m.submodules.reset_sync = ResetSynchronizer(pressed | ~locked, domain="sync")
        m.submodules.uart = u = self.uart
        leds = Cat(u.busy, u.irq, Const(0, N_LEDS - 3), locked)
        m.d.comb += [u.rx.eq(self._pin("uart_rx", self.uart_rx)),
                     self.uart_tx.eq(self._pin("uart_tx", u.tx)),
                     self.led.eq(Cat(*(self._pin(f"led[{k}]", leds[k]) for k in range(N_LEDS))))]
        return m


def board_clock(clock_mhz: float, baud: int) -> tuple[PllConfig | None, float, int]:
    """(the PLL, None at 25 MHz; the core's clock in MHz; the UART's cycles per bit) for
    ``clock_mhz`` and ``baud``. ValueError (one line naming ``clock_mhz`` or ``baud``) for a
    clock the PLL cannot make or a baud rate the clock cannot divide to."""
    from .uart import divisor_for

    pll = None if abs(clock_mhz - OSC_MHZ) < 1e-9 else pll_config(OSC_MHZ, clock_mhz)
    f_mhz = OSC_MHZ if pll is None else pll.fout_mhz
    return pll, f_mhz, divisor_for(f_mhz * 1e6, baud)


def board_top(params, board: Board, clock_mhz: float, baud: int) -> tuple[Ulx3sTop, dict]:
    """The top for a design (``params.net`` holds its initial weights) at ``clock_mhz``
    (25: the oscillator, else the PLL) and ``baud``, and its manifest entry (ValueError as
    :func:`board_clock`)."""
    from .uart import PROTOCOL, uart_core

    pll, f_mhz, divisor = board_clock(clock_mhz, baud)
    timeout = round(FRAME_TIMEOUT_S * f_mhz * 1e6)
    pins = board_pins(board)
    top = Ulx3sTop(uart_core(params, divisor, timeout), pins, pll)
    entry = {
        "board": board.name, "platform": f"amaranth-boards ULX3S_{board.variant}_Platform", "target": board.target,
        "clock": {"oscillator_mhz": OSC_MHZ, "core_mhz": f_mhz,
                  "pll": None if pll is None else {"primitive": "EHXPLLL", "clki_div": pll.clki_div,
                                                   "clkfb_div": pll.clkfb_div, "clkop_div": pll.clkop_div,
                                                   "vco_mhz": pll.vco_mhz}},
        "uart": {"baud": baud, "divisor": divisor, "actual_baud": f_mhz * 1e6 / divisor, "frame": "8N1",
                 "frame_timeout_cycles": timeout, "protocol": PROTOCOL},
        "reset": "button_pwr pressed, or the PLL unlocked, through a reset synchroniser",
        "leds": {"0": "busy", "1": "irq", "7": "clock up (PLL locked)"},
        "pins": [{"port": p.port, "site": p.site, "dir": p.dir, "active_low": p.invert, "attrs": p.attrs,
                  "resource": p.resource} for p in pins],
    }
    return top, entry

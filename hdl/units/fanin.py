"""A lane's fan-in lists: the connection ROM and the stored weights (the weight source)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..enums import Walk
from ..params import CoreParams
from .signatures import check_lane, check_words, entry_bits, entry_layout, write_signature


def entry_rows(params: CoreParams, index: int) -> list[dict]:
    """The connection ROM of lane ``index``: its entries' fields (``signatures.entry_layout``),
    in memory order (``layout.py``: the drive entries, then the step entries)."""
    lay = params.layout
    rows = []
    for e in lay.lanes[index].entries:
        if e.src_input:
            saddr, sbank = e.src, 0
        else:
            saddr, sbank = int(lay.local[e.src]), int(lay.owner[e.src])
        rows.append({
            "sel_in": int(e.src_input), "saddr": saddr, "sbank": sbank,
            "nloc": int(lay.local[e.neuron]), "nidx": e.neuron, "edge": max(e.edge, 0), "pair": e.pair,
            "first": int(e.first), "last": int(e.last), "dummy": int(e.dummy),
            "out": int(e.neuron >= lay.out_first),
        })
    return rows


class FaninStore(wiring.Component):
    """Lane ``index``'s fan-in lists and their walk: the connection ROM (``layout.py``: per
    neuron, one entry per connection; the drive entries ``[0, n_drive)``, whose source is an
    input, then the step entries ``[n_drive, n_total)``), the stored weights ``W``
    (weight_store format, §1) and the counter that walks a range of them, one entry per
    ``advance``.

    Ports (the ROM and weight reads are synchronous: data one cycle after the address):

    - ``start`` (in): the walk restarts at the first entry of the range ``walk`` (``Walk``,
      read with ``start``): ``DRIVE`` [0, n_drive) (the drive pass), ``STEP`` [n_drive,
      n_total) (a relaxation step), ``ALL`` [0, n_total) (the update).
    - ``advance`` (in): the walk moves to the next entry (MacPipeline: every cycle of its
      walk; UpdateUnit: once per entry).
    - ``pos`` (out): the entry the walk is at, whose read is issued in this cycle;
      ``last`` (out): it is the range's last entry.
    - ``host_rd``, ``host_addr`` (in): read entry ``host_addr`` instead (the host, while the
      lane is idle).
    - ``entry`` (out): the fields (``signatures.entry_layout``) of the entry read in the
      previous cycle; ``weight`` (out): its stored weight (signed raw).
    - ``wr`` (in): en, addr, data: a stored weight written back (UpdateUnit, host).

    ``weights``: the initial stored weights in entry order (``CoreParams.lane_weights``),
    raw integers of the weight_store format, one per entry (None: zeros). This is the
    component the memory walk of a larger design (dense blocks walked by address counters,
    single-port RAMs, one copy of each symmetric weight) replaces: the MAC and the update
    only ask for the next entry and read its fields and weight.
    """

    LATENCY = 1  # pos (or host_addr) -> entry, weight

    def __init__(self, params: CoreParams, index: int, weights=None):
        check_lane(params, index)
        self.p = params
        self.index = index
        lane = params.layout.lanes[index]
        self.n_entries = len(lane.entries)
        self.n_drive = lane.n_drive
        self.weights = check_words(f"lane {index} weights", weights, self.n_entries, params.num.weight_store)
        ws = signed(params.num.weight_store.n_word)
        bits = entry_bits(self.n_entries)
        super().__init__({
            "start": In(1), "walk": In(Walk), "advance": In(1), "pos": Out(bits), "last": Out(1),
            "host_rd": In(1), "host_addr": In(bits),
            "entry": Out(entry_layout(params)),
            "weight": Out(ws),
            "wr": In(write_signature(bits, ws)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = max(self.n_entries, 1)
        rows = entry_rows(self.p, self.index)
        rom = m.submodules.conn = memory.Memory(shape=entry_layout(self.p), depth=depth, init=rows)
        wmem = m.submodules.weights = memory.Memory(shape=self.weight.shape(), depth=depth, init=self.weights)
        rom_rd, w_rd, w_wr = rom.read_port(), wmem.read_port(), wmem.write_port()
        to_drive_end = Signal()  # the walk ends at the drive part's end (else at the list's)
        with m.If(self.start):
            m.d.sync += [self.pos.eq(Mux(self.walk == Walk.STEP, self.n_drive, 0)),
                         to_drive_end.eq(self.walk == Walk.DRIVE)]
        with m.Elif(self.advance):
            m.d.sync += self.pos.eq(self.pos + 1)
        addr = Mux(self.host_rd, self.host_addr, self.pos)
        end = Mux(to_drive_end, self.n_drive - 1, self.n_entries - 1)
        m.d.comb += [self.last.eq(self.pos == end), rom_rd.addr.eq(addr), w_rd.addr.eq(addr),
                     self.entry.eq(rom_rd.data), self.weight.eq(w_rd.data),
                     w_wr.en.eq(self.wr.en), w_wr.addr.eq(self.wr.addr), w_wr.data.eq(self.wr.data)]
        return m

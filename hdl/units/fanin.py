"""A lane's fan-in lists: the connection ROM and the stored weights (the weight source)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..params import CoreParams
from .signatures import check_lane, check_words, entry_bits, entry_layout, write_signature


def entry_rows(params: CoreParams, index: int) -> list[dict]:
    """The connection ROM of lane ``index``: its entries' fields (``signatures.entry_layout``)."""
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
    neuron, one entry per connection), the stored weights ``W`` (weight_store format, §1)
    and the counter that walks them, one entry per ``advance``.

    Ports (the ROM and weight reads are synchronous: data one cycle after the address):

    - ``start`` (in): the walk restarts at entry 0 (a relaxation step or the update begins).
    - ``advance`` (in): the walk moves to the next entry (MacPipeline: every cycle of its
      walk; UpdateUnit: once per entry).
    - ``pos`` (out): the entry the walk is at, whose read is issued in this cycle;
      ``last`` (out): it is the last entry.
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
        self.n_entries = len(params.layout.lanes[index].entries)
        self.weights = check_words(f"lane {index} weights", weights, self.n_entries, params.num.weight_store)
        ws = signed(params.num.weight_store.n_word)
        bits = entry_bits(self.n_entries)
        super().__init__({
            "start": In(1), "advance": In(1), "pos": Out(bits), "last": Out(1),
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
        with m.If(self.start):
            m.d.sync += self.pos.eq(0)
        with m.Elif(self.advance):
            m.d.sync += self.pos.eq(self.pos + 1)
        addr = Mux(self.host_rd, self.host_addr, self.pos)
        m.d.comb += [self.last.eq(self.pos == self.n_entries - 1), rom_rd.addr.eq(addr), w_rd.addr.eq(addr),
                     self.entry.eq(rom_rd.data), self.weight.eq(w_rd.data),
                     w_wr.en.eq(self.wr.en), w_wr.addr.eq(self.wr.addr), w_wr.data.eq(self.wr.data)]
        return m

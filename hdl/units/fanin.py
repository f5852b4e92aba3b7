"""A lane's fan-in lists: the connection ROM and the stored weights (the weight source)."""

from __future__ import annotations

from amaranth.hdl import Module, signed
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
    """Entry ``addr`` of lane ``index``'s connection list (``layout.py``: per neuron, one
    entry per connection) and its stored weight ``W`` (weight_store format, §1).

    Ports (synchronous read: data one cycle after ``addr``):

    - ``addr`` (in): entry to read (MacPipeline's walk, UpdateUnit's, or the host's).
    - ``entry`` (out): the entry's fields (``signatures.entry_layout``).
    - ``weight`` (out): its stored weight (signed raw).
    - ``wr`` (in): en, addr, data: a stored weight written back (UpdateUnit, host).

    ``weights``: the initial stored weights in entry order (``CoreParams.lane_weights``),
    raw integers of the weight_store format, one per entry (None: zeros). This is the one
    component the memory walk of a larger design (dense blocks, single-port RAMs, one copy of
    each symmetric weight) replaces.
    """

    LATENCY = 1  # addr -> entry, weight

    def __init__(self, params: CoreParams, index: int, weights=None):
        check_lane(params, index)
        self.p = params
        self.index = index
        self.entries = params.layout.lanes[index].entries
        self.weights = check_words(f"lane {index} weights", weights, len(self.entries), params.num.weight_store)
        ws = signed(params.num.weight_store.n_word)
        bits = entry_bits(len(self.entries))
        super().__init__({
            "addr": In(bits),
            "entry": Out(entry_layout(params)),
            "weight": Out(ws),
            "wr": In(write_signature(bits, ws)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = max(len(self.entries), 1)
        rows = entry_rows(self.p, self.index)
        rom = m.submodules.conn = memory.Memory(shape=entry_layout(self.p), depth=depth, init=rows)
        wmem = m.submodules.weights = memory.Memory(shape=self.weight.shape(), depth=depth, init=self.weights)
        rom_rd, w_rd, w_wr = rom.read_port(), wmem.read_port(), wmem.write_port()
        m.d.comb += [rom_rd.addr.eq(self.addr), w_rd.addr.eq(self.addr),
                     self.entry.eq(rom_rd.data), self.weight.eq(w_rd.data),
                     w_wr.en.eq(self.wr.en), w_wr.addr.eq(self.wr.addr), w_wr.data.eq(self.wr.data)]
        return m

"""One lane: the relaxation steps and the local weight update of its neurons.

A lane owns a set of non-input neurons (``layout.py``) and walks their fan-in
lists. It is built from the components of ``units/`` (docs/rtl.md):

    FaninStore   the walk of the lane's lists (dense segments by address counters, sparse
                 entries and holes from small tables) + the stored weights, one entry per
                 cycle, over a range: the drive entries (input sources), the step entries,
                 or all (the update)
    StateBanks   a copy of every lane's states (P banks x 3 buffers)
    MacPipeline  I F M P A C: sum_j w_ij s_j per neuron (docs/numerics.md §2)
    NeuronUnit   drive pass: D_i = inputs' part + aligned bias (§2) into the drive memory;
                 a step: N0 N1 NB NC N2 N3: D_i, eq. 5's step, the nudge, rounding, clip (§4),
                 the settle flag (§4a); the new state goes to every lane's copy of this
                 lane's bank
    UpdateUnit   eqs. 7-8 (§6): 4 cycles per entry (pipelined: each entry's products and
                 write-back overlap the next entries'), 2 to drain, 9 per bias
    HostPort     host writes and reads of the lane's memories while it is idle

and four small memories: the biases, the drive words D_i of its neurons (written by the
drive pass at the start of each example, read by every relaxation step), the target bits
of its output neurons and the inputs (a copy in every lane). The lane's own logic is the
multiplexing of the memories' ports between the relaxation, the update and the host.
"""

from __future__ import annotations

from amaranth.hdl import MemoryData, Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .enums import LaneMode, Walk
from .params import CoreParams
from .units import FaninStore, HostPort, MacPipeline, NeuronUnit, StateBanks, UpdateUnit, bank_address
from .units.signatures import (
    bank_list,
    bank_write_signature,
    check_lane,
    check_words,
    lane_control_signature,
    lane_host_signature,
    per_bank,
    rate_layout,
)

# Latencies (cycles), read by the cycle model (core.py) and the tests: the components' own.
START_LATENCY = 1  # the controller's start -> the lane's (its own register)
MAC_LATENCY = MacPipeline.LATENCY  # entry issue -> accumulator holds the entry
NEURON_LATENCY = NeuronUnit.LATENCY  # last entry accumulated -> the new state is in the banks
DRIVE_LATENCY = NeuronUnit.DRIVE_LATENCY  # last drive entry accumulated -> D_i is in the drive memory
UPDATE_CYCLES_PER_ENTRY = UpdateUnit.CYCLES_PER_ENTRY
UPDATE_CYCLES_PER_BIAS = UpdateUnit.CYCLES_PER_BIAS
UPDATE_DRAIN_CYCLES = UpdateUnit.DRAIN_CYCLES
# From this many lanes on, each lane keeps its own copies of the controller's and the host's
# registers it reads (a fan-out cut for the 8-lane ECP5 designs). With two lanes each of
# those registers has two loads, and the copies (271 of the UP5K's 5,280 logic cells in the
# tiny two-lane design) are what kept it off the chip (docs/rtl.md "Lane copies from three
# lanes on, the weight address a register"). No cycle depends on it.
COPY_MIN_LANES = 3


class Lane(wiring.Component):
    """Lane ``index`` of a core built from ``params``.

    ``START_LATENCY``: the lane starts a cycle after ``ctrl.start`` (its own register of it).

    Ports:

    - ``ctrl`` (in, from the core's PhaseController, ``lane_control_signature``): ``start``
      (pulse) begins the drive pass (``mode`` DRIVE: the drive entries, D_i into the drive
      memory), a relaxation step (``mode`` RELAX: the step entries) or the update pass
      (``mode`` UPDATE: every entry, then the biases), and ``busy`` (out) stays high until it
      is over; ``nudge``: the weakly-clamped phase
      (output neurons get the beta term, §4 step 4); ``rd_buf``, ``wr_buf``: the state
      buffers (0-2) a relaxation step reads and writes; ``s0_buf``, ``sb_buf``: where s^0
      and s^beta are, read by the update; ``ev_base``: the first random event of the step
      (state stream: example base + t S) or of the update (u (n_slots + S)), §5. The lane
      takes mode and buffers at ``start``, which must come after the first cycle in which
      ``busy`` is low again (the controller's come two cycles after), and the host may use
      its memories from that cycle on. The lane itself starts ``START_LATENCY`` = 1 cycle
      after ``start`` (its own register of it) and raises ``busy`` the cycle after.
    - ``beta_neg`` (in, register): sigma = -1; ``settle_tol`` (in, register) and ``moved``
      (out, sticky until the next step starts): §4a; ``rate`` (in, registers): the update's
      multiplier M of each layer pair, §6.

    Between lanes: ``result`` (out): this lane's new states (en, bank address, data), which
    the core gives to ``bank_in[index]`` of every lane; ``bank_in[w]`` (in): lane w's.
    From the host: ``host`` (in: HostDecoder's decoded access, see ``units.HostPort``, which
    registers it while the lane is idle: a write lands a cycle after ``we``, ``rdata`` comes
    four cycles after the address).

    ``weights``: the initial stored weights by weight address (``CoreParams.lane_weights``);
    ``biases``: the initial biases of the lane's neurons in ``layout.lanes[index].neurons``
    order (raw; None: zeros).
    """

    def __init__(self, params: CoreParams, index: int, weights=None, biases=None):
        check_lane(params, index)
        self.p = params
        self.index = index
        self.lane = params.layout.lanes[index]
        self.n_own = len(self.lane.neurons)
        self.weights = check_words(f"lane {index} weights", weights, self.lane.n_words,
                                   params.num.weight_store)
        self.biases = check_words(f"lane {index} biases", biases, self.n_own, params.num.bias)
        # the drive memory's contents (one D_i per neuron, §2), here so that a testbench can read them
        self.drive_data = MemoryData(shape=signed(params.drive_bits), depth=max(self.n_own, 1), init=[])
        super().__init__({
            "ctrl": In(lane_control_signature(params)),
            "beta_neg": In(1), "settle_tol": In(params.state.n_word), "rate": In(rate_layout(params)),
            "busy": Out(1), "moved": Out(1),
            "result": Out(bank_write_signature(params, index)),
            **per_bank(params, "bank_in", lambda w: In(bank_write_signature(params, w))),
            "host": In(lane_host_signature(params)),
        })
        self.bank_in = bank_list(self, params, "bank_in")  # ports bank_in0 ...

    def elaborate(self, platform):
        m = Module()
        p, ell = self.p, self.index
        fan = m.submodules.fanin = FaninStore(p, ell, self.weights)
        banks = m.submodules.banks = StateBanks(p, ell)
        mac = m.submodules.mac = MacPipeline(p, ell)
        neu = m.submodules.neuron = NeuronUnit(p)
        upd = m.submodules.update = UpdateUnit(p, ell)
        hp = m.submodules.hostport = HostPort(p, ell)
        wiring.connect(m, mac.sum, neu.sum)
        depth = max(self.n_own, 1)
        bmem = m.submodules.biases = memory.Memory(shape=signed(p.num.bias.n_word), depth=depth, init=self.biases)
        dmem = m.submodules.drives = memory.Memory(self.drive_data)
        tmem = m.submodules.targets = memory.Memory(shape=1, depth=depth, init=[])
        xmem = m.submodules.inputs = memory.Memory(shape=p.state.n_word, depth=p.layout.n_in, init=[])
        b_rd, t_rd, x_rd = bmem.read_port(), tmem.read_port(), xmem.read_port()
        d_rd, d_wr = dmem.read_port(), dmem.write_port()
        c = self.ctrl
        # The ports' selects come from registers, not from the units' busy flags (docs/rtl.md
        # "Bank addresses, registered selects, two-cycle host reads"): ``units``, the units own
        # the memories' ports (set by a start, held while any unit is busy and for one cycle
        # after; the controller sees a step's end two cycles after the lanes' busy falls, and
        # only then can the host or the arg-max use them); ``idle`` = not ``units`` gates the
        # host's writes and points the weight memory at the host's address; ``updating``: the
        # lane's copy of the controller's mode is UPDATE.
        units = Signal()
        # ``start``: the lane's own copy of the controller's start, a cycle later (one register
        # reaching every lane's walk and units was the 8-lane demo's critical path on the ECP5);
        # the lane's ``units`` in its input keeps synthesis from merging the lanes' copies.
        start = Signal(name="start_r")
        m.d.sync += [start.eq(c.start & ~units), units.eq(c.start | start | self.busy)]
        idle = ~units
        # The host's access (the decoder's, or the arg-max's on lane 0) is registered in the
        # HostPort while the lane is idle (fanned out to every lane's memories, the busy gate of
        # a host write into the UP5K's SPRAM address and the lanes' host registers, which
        # synthesis merged into one for all 8 lanes, were critical paths); the enable, the
        # lane's own, keeps the copies apart.
        wiring.connect(m, wiring.flipped(self.host), hp.host)
        m.d.comb += hp.idle.eq(idle)
        ctrl_keys = ("mode", "rd_buf", "wr_buf", "s0_buf", "sb_buf", "nudge", "ev_base")
        if p.layout.P >= COPY_MIN_LANES:
            # With COPY_MIN_LANES lanes or more, each lane's own copies of the controller's mode,
            # buffer numbers, nudge and event base, taken at a start (they change only with one, or
            # while no lane works), so that each register reaches only its lane's logic (the
            # controller's, each fanned out to every lane's banks, were the 8-lane demo's
            # critical path on the ECP5). The enable has the lane's own ``units`` in it (always
            # 0 at a start: the controller starts a step two cycles after the last lane's busy
            # falls), which also keeps synthesis from merging the copies back into one.
            mode_r, rd_r, wr_r, s0_r, sb_r, nudge_r, ev_r = (Signal.like(getattr(c, k), name=f"ctrl_{k}_r")
                                                             for k in ctrl_keys)
            with m.If(c.start & ~units):
                m.d.sync += [mode_r.eq(c.mode), rd_r.eq(c.rd_buf), wr_r.eq(c.wr_buf), s0_r.eq(c.s0_buf),
                             sb_r.eq(c.sb_buf), nudge_r.eq(c.nudge), ev_r.eq(c.ev_base)]
            # Likewise the host's registers the units read (they change only while the core is
            # idle), taken while the lane is idle (the decoder's beta_neg, fanned out to every
            # lane's update, was a 15 ns route on the ECP5).
            beta_neg_r, tol_r = Signal(name="beta_neg_r"), Signal.like(self.settle_tol, name="settle_tol_r")
            rate_r = Signal.like(self.rate, name="rate_r")
            with m.If(idle):
                m.d.sync += [beta_neg_r.eq(self.beta_neg), tol_r.eq(self.settle_tol), rate_r.eq(self.rate)]
        else:  # one or two lanes: little fan-out to cut, and the UP5K designs have no logic to spare
            mode_r, rd_r, wr_r, s0_r, sb_r, nudge_r, ev_r = (getattr(c, k) for k in ctrl_keys)
            beta_neg_r, tol_r, rate_r = self.beta_neg, self.settle_tol, self.rate
        updating = mode_r == LaneMode.UPDATE

        def fit(v, port):  # v as wide as the port it drives (the assignment would drop the rest)
            return v[:len(port)] if len(v) > len(port) else v

        def mux(sel, a, b, port):  # Mux(sel, a, b) into ``port``, from the bits it keeps
            return Mux(sel, fit(a, port), fit(b, port))

        # the lane's start comes a cycle after the controller's, with the copies (or, below
        # COPY_MIN_LANES lanes, the controller's registers, which hold until the next start) in place
        drive = mode_r == LaneMode.DRIVE
        relax_start = start & (mode_r == LaneMode.RELAX)
        # the FaninStore's range: the drive entries, the step entries, or all of them (update)
        walk = Mux(drive, Walk.DRIVE, Mux(updating, Walk.ALL, Walk.STEP))
        m.d.comb += [
            self.busy.eq(mac.busy | neu.busy | upd.busy), self.moved.eq(neu.moved),
            mac.start.eq(relax_start | (start & drive)), neu.clear.eq(relax_start), fan.start.eq(start),
            fan.walk.eq(walk), neu.drive_pass.eq(drive),
            d_rd.addr.eq(neu.rd_loc), neu.drive.eq(d_rd.data),
            d_wr.en.eq(neu.drive_wr.en), d_wr.addr.eq(neu.drive_wr.addr), d_wr.data.eq(neu.drive_wr.data),
            fan.advance.eq(mac.advance | upd.advance), mac.last.eq(fan.last), upd.last.eq(fan.last),
            upd.pos.eq(fan.pos), fan.host_rd.eq(idle), fan.host_addr.eq(hp.rd_addr),
            upd.start.eq(start & updating),
            neu.nudge.eq(nudge_r), neu.beta_neg.eq(beta_neg_r), upd.beta_neg.eq(beta_neg_r),
            neu.ev_base.eq(ev_r), upd.ev_base.eq(ev_r), neu.settle_tol.eq(tol_r),
            upd.rate.eq(rate_r),
            # read data to every reader
            mac.entry.eq(fan.entry), mac.weight.eq(fan.weight >> p.mac_shift), upd.entry.eq(fan.entry),
            upd.weight.eq(fan.weight), mac.x_data.eq(x_rd.data), upd.x_data.eq(x_rd.data),
            neu.bias.eq(b_rd.data), upd.bias.eq(b_rd.data), hp.bias.eq(b_rd.data), hp.weight.eq(fan.weight),
            neu.state.eq(banks.own_data), upd.own_data.eq(banks.own_data), neu.target.eq(t_rd.data),
            *[d.eq(banks.src_data[w]) for w in range(p.layout.P) for d in
              (mac.bank_data[w], upd.bank_data[w], hp.bank_data[w])],
            # read addresses: the host while idle, else the update or the relaxation
            b_rd.addr.eq(Mux(units, mux(updating, upd.bias_addr, neu.rd_loc, b_rd.addr),
                             fit(hp.rd_addr, b_rd.addr))),
            t_rd.addr.eq(neu.rd_loc),
            # the source reads, the MAC's and the update's: the FaninStore's entry.saddr (mac.src_loc)
            x_rd.addr.eq(fit(mac.src_loc, x_rd.addr)),
            banks.src_buf.eq(Mux(units, Mux(updating, Mux(upd.rd.sb, sb_r, s0_r), rd_r),
                                 hp.bank_buf)),
            banks.src_loc.eq(Mux(units, fit(mac.src_loc, banks.src_loc),
                                 fit(hp.bank_loc, banks.src_loc))),
            banks.own_buf.eq(Mux(updating, Mux(upd.rd.sb, sb_r, s0_r), rd_r)),
            banks.own_loc.eq(Mux(updating, upd.rd.own, neu.rd_loc)),
        ]
        # writes: the update's, else the host's (only while idle; the two never meet, so the
        # unit's write enable selects, not a decode of the host's access)
        for port, unit_wr, host_wr in ((fan.wr, upd.w_wr, hp.weight_wr), (bmem.write_port(), upd.b_wr, hp.bias_wr)):
            m.d.comb += [port.en.eq(unit_wr.en | (idle & host_wr.en)),
                         port.addr.eq(mux(unit_wr.en, unit_wr.addr, host_wr.addr, port.addr)),
                         port.data.eq(Mux(unit_wr.en, unit_wr.data, host_wr.data))]
        for port, host_wr in ((tmem.write_port(), hp.target_wr), (xmem.write_port(), hp.input_wr)):
            m.d.comb += [port.en.eq(idle & host_wr.en), port.addr.eq(fit(host_wr.addr, port.addr)),
                         port.data.eq(host_wr.data)]
        # this lane's results (its bank, the write buffer), to every lane; the banks take the
        # host's start states while idle (a lane's result write, a register of its NeuronUnit,
        # selects: the host writes only while the core is idle, when no lane writes)
        res = neu.result
        m.d.comb += [self.result.en.eq(res.en), self.result.data.eq(res.data),
                     self.result.addr.eq(bank_address(wr_r, res.addr, self.n_own))]
        for w in range(p.layout.P):
            host_wr, lane_wr = hp.state_wr[w], self.bank_in[w]
            m.d.comb += [banks.write[w].en.eq(lane_wr.en | (idle & host_wr.en)),
                         banks.write[w].addr.eq(Mux(lane_wr.en, lane_wr.addr, host_wr.addr)),
                         banks.write[w].data.eq(Mux(lane_wr.en, lane_wr.data, host_wr.data))]
        return m

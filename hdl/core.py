"""The EqProp core: P lanes, the phase controller and the host interface.

Phases (the paper's section 5.1 and Figure 6, docs/numerics.md §4-§6):

    IDLE --start--> FREE (n_free steps) --> NUDGED (n_nudged steps) --> UPDATE --> DONE
                      |  (inference)
                      +--> ARGMAX (scan the output neurons) --> DONE

Every relaxation step starts all lanes together and waits until every lane
has written its last neuron (synchronous semantics, double-buffered states).
A free phase (training or inference) ends early under the settle rule
(docs/numerics.md §4a): after each step the controller ORs the lanes'
``moved`` flags (some state changed by more than ``settle_tol``), counts
consecutive quiet steps and stops when the count reaches ``settle_steps``
(0: off, always ``n_free`` steps); ``free_steps`` holds the steps the last
example's free phase took. The weakly-clamped phase keeps its ``n_nudged``
steps and its events start at the example's base + n_free * S (§5), wherever
the free phase stopped.
The host talks to the core through ``HOST_BUS``, a plain synchronous
register/memory bus (address, write data, write enable, read enable; read
data returns one cycle after the read enable). The memory map and the cycle
model are described in the generator's manifest (``generate.py``).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .lane import (
    MAC_LATENCY,
    MODE_RELAX,
    MODE_UPDATE,
    NEURON_LATENCY,
    REGION_BANK,
    REGION_BIAS,
    REGION_INPUT,
    REGION_TARGET,
    REGION_WEIGHT,
    UPDATE_CYCLES_PER_BIAS,
    UPDATE_CYCLES_PER_ENTRY,
    Lane,
)
from .params import CoreParams, bits_for

from .enums import (  # noqa: F401  (the names generate.py, the driver and the benches import)
    ADDR_BITS,
    CTRL_INFER,
    CTRL_START,
    REGION_SHIFT,
    REGIONS,
    REGISTERS,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_WR_ERR,
    Reg,
    Region,
)

R_REG, R_INPUT, R_TARGET, R_STATE, R_S0, R_FINAL, R_WEIGHT, R_BIAS = (r.value for r in Region)
REG_CTRL, REG_STATUS, REG_BETA_NEG, REG_EXAMPLE, REG_UPDATE, REG_PRED, REG_CYC_FREE, REG_CYC_NUDGED, \
    REG_CYC_UPDATE, REG_N_FREE, REG_N_NUDGED, REG_CYC_TOTAL, REG_SETTLE_TOL, REG_SETTLE_STEPS, \
    REG_FREE_STEPS = (r.value for r in Reg)

HOST_BUS = wiring.Signature({
    "addr": Out(ADDR_BITS),
    "wdata": Out(32),
    "we": Out(1),
    "re": Out(1),
    "rdata": In(32),
    "rvalid": In(1),
})

STEP_OVERHEAD = 1  # the launch cycle of each step
UPDATE_OVERHEAD = 2  # launch and done detection of the update pass


def lane_field_bits(params: CoreParams) -> int:
    """Bits of the per-lane offset inside weight/bias/target/state regions."""
    lay = params.layout
    return max(bits_for(lay.lane_depth), bits_for(3 * lay.neurons_per_lane), bits_for(lay.n_in))


class Core(wiring.Component):
    """The core. Ports: ``bus`` (HOST_BUS), ``busy`` (status bit 0) and ``irq``: high from the
    end of an example until the host reads ``status`` or starts the next one (level)."""
    bus: In(HOST_BUS)
    busy: Out(1)
    irq: Out(1)

    def __init__(self, params: CoreParams, lane_weights=None, lane_biases=None):
        self.p = params
        self.lane_weights = lane_weights
        self.lane_biases = lane_biases
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        p = self.p
        lay = p.layout
        P = lay.P
        S = lay.S
        lanes = []
        for ell in range(P):
            ln = Lane(p, ell,
                      None if self.lane_weights is None else self.lane_weights[ell],
                      None if self.lane_biases is None else self.lane_biases[ell])
            m.submodules[f"lane{ell}"] = ln
            lanes.append(ln)
        fb = lane_field_bits(p)
        bus = self.bus
        region = bus.addr[REGION_SHIFT:]
        off = bus.addr[:REGION_SHIFT]
        off_lane = off[fb:fb + bits_for(P)]
        off_loc = off[:fb]

        # ------------------------------------------------------- registers
        beta_neg = Signal()
        example = Signal(32)
        update_no = Signal(32)
        n_free = Signal(16, init=p.n_free)
        n_nudged = Signal(16, init=p.n_nudged)
        # settle rule (§4a): reset values from the design's rule; settle_steps = 0 is off
        settle_tol = Signal(p.state.n_word, init=p.settle.tol if p.settle is not None else 0)
        settle_steps = Signal(16, init=p.settle.steps if p.settle is not None else 0)
        free_steps = Signal(16)  # steps the last free phase took
        cyc_free, cyc_nudged, cyc_update, cyc_total = (Signal(32, name=n) for n in
                                                       ("cyc_free", "cyc_nudged", "cyc_update", "cyc_total"))
        busy = Signal()
        done = Signal()
        infer = Signal()

        # ------------------------------------------------------- controller
        phase = Signal(range(8))
        IDLE, FREE, NUDGED, UPDATE, ARGMAX, WAIT = range(6)
        step = Signal(16)
        rd_buf, wr_buf = Signal(2), Signal(2)
        f_buf, n_buf = Signal(2), Signal(2)  # where s^0 and the final state are
        ev_base = Signal(32)
        # The weakly-clamped phase's first event, example base + n_free * S (§5), with the design's
        # n_free like the example stride (a constant: no multiplier for the register n_free).
        nudge_base = Signal(32)
        launch = Signal()  # pulse: start every lane
        lane_mode = Signal()
        launched = Signal()  # one cycle after a launch, before busy can be read
        any_busy = Signal()
        m.d.comb += any_busy.eq(Cat(*[ln.busy for ln in lanes]).any())
        any_moved = Signal()  # §4a: some state of the step just finished changed by more than settle_tol
        m.d.comb += any_moved.eq(Cat(*[ln.moved for ln in lanes]).any())
        quiet = Signal(16)  # consecutive quiet free steps so far
        stride_train = (p.n_free + p.n_nudged) * S
        stride_infer = p.n_free * S

        for ln in lanes:
            m.d.comb += [ln.start.eq(launch), ln.mode.eq(lane_mode), ln.nudge.eq(phase == NUDGED),
                         ln.beta_neg.eq(beta_neg), ln.rd_buf.eq(rd_buf), ln.wr_buf.eq(wr_buf),
                         ln.s0_buf.eq(f_buf), ln.sb_buf.eq(n_buf), ln.ev_base.eq(ev_base),
                         ln.settle_tol.eq(settle_tol)]

        start_cmd = bus.we & (region == R_REG) & (off == REG_CTRL) & bus.wdata[0] & ~busy
        m.d.sync += [launch.eq(0), launched.eq(launch)]
        m.d.comb += [busy.eq(phase != IDLE), self.busy.eq(busy)]
        # status bit 2: a write while busy is dropped (every region) and leaves this sticky bit;
        # a write of status with bit 2 set clears it (while idle).
        wr_err = Signal()
        status_wr = bus.we & (region == R_REG) & (off == REG_STATUS) & ~busy
        with m.If(bus.we & busy):
            m.d.sync += wr_err.eq(1)
        with m.Elif(status_wr & bus.wdata[2]):
            m.d.sync += wr_err.eq(0)
        # irq: set when an example ends (done rises), cleared by a read of status or a start;
        # the set wins, so an interrupt is never lost (at worst one more after a racing read).
        irq = Signal()
        done_prev = Signal()
        m.d.sync += done_prev.eq(done)
        with m.If(done & ~done_prev):
            m.d.sync += irq.eq(1)
        with m.Elif((bus.re & (region == R_REG) & (off == REG_STATUS)) | start_cmd):
            m.d.sync += irq.eq(0)
        m.d.comb += self.irq.eq(irq)
        with m.If(busy):
            m.d.sync += cyc_total.eq(cyc_total + 1)
        with m.Switch(phase):
            with m.Case(IDLE):
                with m.If(start_cmd):
                    infer_v = bus.wdata[1]
                    ex_base = (example * Mux(infer_v, stride_infer, stride_train))[:32]
                    m.d.sync += [infer.eq(infer_v), done.eq(0), step.eq(0), rd_buf.eq(0), wr_buf.eq(1),
                                 f_buf.eq(0), n_buf.eq(0), cyc_free.eq(0), cyc_nudged.eq(0),
                                 cyc_update.eq(0), cyc_total.eq(0), quiet.eq(0), free_steps.eq(0),
                                 ev_base.eq(ex_base), nudge_base.eq((ex_base + p.n_free * S)[:32])]
                    with m.If(n_free > 0):
                        m.d.sync += [phase.eq(FREE), launch.eq(1), lane_mode.eq(MODE_RELAX)]
                    with m.Elif(infer_v):
                        m.d.sync += phase.eq(ARGMAX)
                    with m.Else():
                        m.d.sync += phase.eq(FREE)  # zero free steps: falls through below
            with m.Case(FREE, NUDGED):
                with m.If(phase == FREE):
                    m.d.sync += cyc_free.eq(cyc_free + 1)
                with m.Else():
                    m.d.sync += cyc_nudged.eq(cyc_nudged + 1)
                with m.If(~launch & ~launched & ~any_busy):
                    # step finished (or no step in this phase)
                    nsteps = Mux(phase == FREE, n_free, n_nudged)
                    ran = Mux(phase == FREE, n_free > 0, n_nudged > 0)
                    last_written = wr_buf
                    step_next = step + 1
                    # §4a: a free step is quiet when no lane saw a change above settle_tol;
                    # settle_steps quiet steps in a row end the free phase.
                    quiet_next = Mux(any_moved, 0, quiet + 1)
                    settled = (phase == FREE) & (settle_steps != 0) & (quiet_next >= settle_steps)
                    m.d.sync += quiet.eq(quiet_next)
                    with m.If(ran & (step_next < nsteps) & ~settled):
                        m.d.sync += [step.eq(step_next), ev_base.eq(ev_base + S), launch.eq(1)]
                        with m.If(phase == FREE):
                            m.d.sync += [rd_buf.eq(wr_buf), wr_buf.eq(rd_buf)]
                        with m.Else():  # alternate between buffer 2 and the one s^0 is not in
                            m.d.sync += [rd_buf.eq(wr_buf), wr_buf.eq(rd_buf)]
                    with m.Else():
                        with m.If(phase == FREE):
                            fbv = Mux(n_free > 0, last_written, 0)
                            # the nudged phase's events start at base + n_free * S (§5), also
                            # when the settle rule ended the free phase early (§4a)
                            m.d.sync += [f_buf.eq(fbv), n_buf.eq(fbv), ev_base.eq(nudge_base),
                                         free_steps.eq(Mux(n_free > 0, step_next, 0))]
                            with m.If(infer):
                                m.d.sync += phase.eq(ARGMAX)
                            with m.Else():
                                m.d.sync += [phase.eq(NUDGED), step.eq(0), rd_buf.eq(fbv), wr_buf.eq(2)]
                                with m.If(n_nudged > 0):
                                    m.d.sync += launch.eq(1)
                        with m.Else():
                            m.d.sync += [n_buf.eq(Mux(n_nudged > 0, last_written, f_buf)), phase.eq(UPDATE),
                                         launch.eq(1), lane_mode.eq(MODE_UPDATE),
                                         ev_base.eq((update_no * (lay.n_edges + S))[:32])]
            with m.Case(UPDATE):
                m.d.sync += cyc_update.eq(cyc_update + 1)
                with m.If(~launch & ~launched & ~any_busy):
                    m.d.sync += [phase.eq(IDLE), done.eq(1), lane_mode.eq(MODE_RELAX)]
        # In the nudged phase the buffers alternate so that s^0 (in f_buf) is kept:
        # the next step writes the buffer that is neither the one just written nor f_buf.
        with m.If((phase == NUDGED) & ~launch & ~launched & ~any_busy & (step + 1 < n_nudged)):
            m.d.sync += wr_buf.eq(3 - wr_buf - f_buf)

        # ------------------------------------------------------- arg-max
        # Scan the output neurons through lane 0's copies of the banks.
        outs = [(int(lay.owner[i]), int(lay.local[i])) for i in range(lay.out_first, S)]
        am_k = Signal(range(len(outs) + 2))
        am_valid = Signal()
        am_idx = Signal(8)
        best = Signal(p.state.n_word)
        best_k = Signal(8)
        host0 = lanes[0].host
        am_data = host0.rdata
        with m.If(phase == ARGMAX):
            m.d.sync += [am_k.eq(am_k + 1), am_valid.eq(am_k < len(outs)), am_idx.eq(am_k)]
            with m.If(am_valid & ((am_idx == 0) | (am_data[:p.state.n_word] > best))):
                m.d.sync += [best.eq(am_data), best_k.eq(am_idx)]
            with m.If(am_k == len(outs) + 1):
                m.d.sync += [phase.eq(IDLE), done.eq(1), am_k.eq(0), am_valid.eq(0)]

        # ------------------------------------------------------- host access
        # Writes into lane memories (only while the core is idle: dropped otherwise, status bit 2).
        for ell, ln in enumerate(lanes):
            h = ln.host
            mine = off_lane == ell
            m.d.comb += [h.wdata.eq(bus.wdata), h.addr.eq(off_loc)]
            with m.Switch(region):
                with m.Case(R_WEIGHT):
                    m.d.comb += [h.region.eq(REGION_WEIGHT), h.we.eq(bus.we & mine & ~busy)]
                with m.Case(R_BIAS):
                    m.d.comb += [h.region.eq(REGION_BIAS), h.we.eq(bus.we & mine & ~busy)]
                with m.Case(R_TARGET):
                    m.d.comb += [h.region.eq(REGION_TARGET), h.we.eq(bus.we & mine & ~busy)]
                with m.Case(R_INPUT):
                    m.d.comb += [h.region.eq(REGION_INPUT), h.we.eq(bus.we & ~busy), h.addr.eq(off)]
                with m.Case(R_STATE, R_S0, R_FINAL):
                    m.d.comb += [h.region.eq(REGION_BANK), h.addr.eq(off)]
        # State reads through lane 0: bank = off_lane, address = buffer offset + local.
        bank_sel_bits = bits_for(3 * lay.neurons_per_lane)
        buf_for_read = Mux(region == R_S0, f_buf, n_buf)
        nbank = Array(Const(len(l.neurons)) for l in lay.lanes)
        read_off = Mux(buf_for_read == 0, 0, Mux(buf_for_read == 1, nbank[off_lane], 2 * nbank[off_lane]))
        with m.If((region == R_S0) | (region == R_FINAL)):
            m.d.comb += host0.addr.eq((off_lane << bank_sel_bits) | (read_off + off_loc)[:bank_sel_bits])
        # Arg-max scan drives lane 0's read path (the host waits for done).
        with m.If(phase == ARGMAX):
            am_w = Signal(bits_for(P))
            am_loc = Signal(bank_sel_bits)
            with m.Switch(am_k):
                for k, (w, loc) in enumerate(outs):
                    with m.Case(k):
                        m.d.comb += [am_w.eq(w), am_loc.eq(loc)]
            am_off = Mux(f_buf == 0, 0, Mux(f_buf == 1, nbank[am_w], 2 * nbank[am_w]))
            m.d.comb += [host0.region.eq(REGION_BANK),
                         host0.addr.eq((am_w << bank_sel_bits) | (am_off + am_loc)[:bank_sel_bits])]
        # Initial states: region STATE writes go into buffer 0 of bank off_lane in every lane.
        state_we = bus.we & (region == R_STATE) & ~busy
        for ell, ln in enumerate(lanes):
            for w, src in enumerate(lanes):
                tgt = ln.bank_in[w]
                with m.If(state_we & (off_lane == w)):
                    m.d.comb += [tgt.en.eq(1), tgt.addr.eq(off_loc), tgt.data.eq(bus.wdata)]
                with m.Else():
                    m.d.comb += [tgt.en.eq(src.result.en), tgt.addr.eq(src.result.addr),
                                 tgt.data.eq(src.result.data)]

        # Register writes.
        with m.If(bus.we & (region == R_REG) & ~busy):
            with m.Switch(off):
                with m.Case(REG_BETA_NEG):
                    m.d.sync += beta_neg.eq(bus.wdata[0])
                with m.Case(REG_EXAMPLE):
                    m.d.sync += example.eq(bus.wdata)
                with m.Case(REG_UPDATE):
                    m.d.sync += update_no.eq(bus.wdata)
                with m.Case(REG_N_FREE):
                    m.d.sync += n_free.eq(bus.wdata)
                with m.Case(REG_N_NUDGED):
                    m.d.sync += n_nudged.eq(bus.wdata)
                with m.Case(REG_SETTLE_TOL):
                    m.d.sync += settle_tol.eq(bus.wdata)
                with m.Case(REG_SETTLE_STEPS):
                    m.d.sync += settle_steps.eq(bus.wdata)
        # Reads: one cycle of latency.
        rq_region = Signal(4)
        rq_off = Signal(REGION_SHIFT)
        rq_lane = Signal(bits_for(P))
        m.d.sync += [bus.rvalid.eq(bus.re), rq_region.eq(region), rq_off.eq(off), rq_lane.eq(off_lane)]
        reg_val = Signal(32)
        with m.Switch(rq_off):
            for name, val in ((REG_STATUS, Cat(busy, done, wr_err)), (REG_BETA_NEG, beta_neg),
                              (REG_EXAMPLE, example), (REG_UPDATE, update_no), (REG_PRED, best_k),
                              (REG_CYC_FREE, cyc_free), (REG_CYC_NUDGED, cyc_nudged),
                              (REG_CYC_UPDATE, cyc_update), (REG_N_FREE, n_free), (REG_N_NUDGED, n_nudged),
                              (REG_CYC_TOTAL, cyc_total), (REG_SETTLE_TOL, settle_tol),
                              (REG_SETTLE_STEPS, settle_steps), (REG_FREE_STEPS, free_steps)):
                with m.Case(name):
                    m.d.comb += reg_val.eq(val)
        lane_rdata = Array(ln.host.rdata for ln in lanes)
        with m.Switch(rq_region):
            with m.Case(R_REG):
                m.d.comb += bus.rdata.eq(reg_val)
            with m.Case(R_WEIGHT, R_BIAS):
                m.d.comb += bus.rdata.eq(lane_rdata[rq_lane])
            with m.Case(R_S0, R_FINAL, R_STATE):
                m.d.comb += bus.rdata.eq(host0.rdata)
        return m


def cycle_model(p: CoreParams) -> dict:
    """Cycles per step, phase and example, as formulas and numbers (the manifest's).

    ``free``, ``train_example`` and ``inference_example`` are for a full free phase
    (n_free steps). Under the settle rule (docs/numerics.md §4a) an example whose free
    phase took t steps (the ``free_steps`` register) costs ``t x step`` free cycles and
    ``t x step + train_rest`` (training) or ``t x step + inference_rest`` (inference) in
    all: :func:`example_cycles`."""
    lay = p.layout
    depth = lay.lane_depth
    step = depth + MAC_LATENCY + NEURON_LATENCY + STEP_OVERHEAD
    upd_lane = [UPDATE_CYCLES_PER_ENTRY * len(l.entries) + UPDATE_CYCLES_PER_BIAS * len(l.neurons)
                for l in lay.lanes]
    update = max(upd_lane) + UPDATE_OVERHEAD
    free = p.n_free * step
    nudged = p.n_nudged * step
    argmax = len(range(lay.out_first, lay.S)) + 2
    return {
        "step": step,
        "step_formula": f"max lane entries ({depth}) + MAC latency ({MAC_LATENCY}) + neuron latency "
                        f"({NEURON_LATENCY}) + controller ({STEP_OVERHEAD})",
        "free": free,
        "free_formula": f"t x step, t = the free phase's steps: n_free ({p.n_free}), or fewer under the "
                        f"settle rule (numerics.md §4a; register free_steps)",
        "nudged": nudged,
        "update": update,
        "update_formula": f"max over lanes of {UPDATE_CYCLES_PER_ENTRY} x entries + {UPDATE_CYCLES_PER_BIAS} x neurons"
                          f" + controller ({UPDATE_OVERHEAD})",
        "train_example": free + nudged + update,
        "inference_example": free + argmax,
        "train_rest": nudged + update,
        "inference_rest": argmax,
        "example_formula": "training: t x step + train_rest (nudged + update); inference: t x step + "
                           "inference_rest (arg-max: n_out + 2); t = n_free without the settle rule",
        "mac_utilisation": lay.total_macs / (lay.P * step),
    }


def example_cycles(cm: dict, free_steps: int, infer: bool) -> int:
    """Cycles of one example whose free phase took ``free_steps`` steps (``cm``: cycle_model)."""
    return free_steps * cm["step"] + cm["inference_rest" if infer else "train_rest"]

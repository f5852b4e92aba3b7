"""The phase controller: drive pass, free, weakly-clamped, update, arg-max (the paper's section 5.1)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arith import const_mul, trailing_zeros
from ..enums import LaneMode, Phase
from ..params import CoreParams
from .signatures import check_steps, lane_control_signature


class PhaseController(wiring.Component):
    """Runs one example (docs/numerics.md §2, §4, §4a, §5, §6):

        IDLE --start--> DRIVE (one pass) --> FREE (n_free steps, fewer under the settle rule)
             --> NUDGED (n_nudged steps) --> UPDATE --> IDLE, done
                            |  (infer)
                            +--> ARGMAX --> IDLE, done

    The drive pass (``mode`` DRIVE) runs at every start, training and inference: each lane
    walks its drive entries once and writes D_i, the clamped inputs' part of §2's sum plus
    the aligned bias, with the weights as they are at the start of the example; both
    relaxation phases read it (the weights change only in the update, after them).

    Every relaxation step starts all lanes together (``lanes.start``) and waits until no lane
    is busy (synchronous semantics: a step reads buffer ``rd_buf`` and writes ``wr_buf``).
    The free phase alternates buffers 0 and 1; s^0 stays where the free phase ended
    (``s0_buf``) while the weakly-clamped phase alternates buffer 2 with the third one;
    ``sb_buf`` is where it ended. After each free step the lanes' ``moved`` flags (ORed:
    ``lanes_moved``) count consecutive quiet steps; ``settle_steps`` of them end the free
    phase (0: off, §4a). ``ev_base`` is the step's first state event, example x stride +
    t S, the weakly-clamped phase's from example x stride + n_free S wherever the free phase
    stopped, and the update's u (n_slots + S) (§5).

    Ports: ``start``, ``infer`` (in: HostDecoder's), ``example``, ``update``, ``n_free``,
    ``n_nudged``, ``settle_steps`` (in: registers; ``example`` must hold its value from the
    cycle before ``start``: the decoder's start comes a cycle after the write that starts),
    ``lanes_busy``, ``lanes_moved`` (in), ``argmax_done`` (in); ``lanes`` (out: every lane's
    control), ``phase`` (out),
    ``argmax_run`` (out: phase is ARGMAX, from its own register: it steers lane 0's host
    port, and a decode of ``phase`` there was the UP5K's critical path), ``busy``
    (out: not IDLE), ``done`` (out: sticky until the next start), ``free_steps`` (out: the
    steps the last free phase took), ``cycles_free``, ``cycles_nudged``, ``cycles_update``,
    ``cycles_total`` (out: the last example's cycles).
    """

    STEP_OVERHEAD = 2  # the launch cycle of each step (and of the drive pass), the registered lanes' busy
    UPDATE_OVERHEAD = 3  # launch and done detection of the update pass, the registered lanes' busy

    def __init__(self, params: CoreParams):
        check_steps(params)
        self.p = params
        S = params.layout.S
        # the event bases are modulo 2^32 (§5): of ``example`` and ``update`` only the low bits
        # their strides' factors 2^t leave take part (arith.const_mul)
        ex_bits = 32 - min(trailing_zeros(params.n_free * S, 32),
                           trailing_zeros((params.n_free + params.n_nudged) * S, 32))
        up_bits = 32 - trailing_zeros(params.layout.n_slots + S, 32)
        super().__init__({
            "start": In(1), "infer": In(1), "example": In(max(ex_bits, 1)), "update": In(max(up_bits, 1)),
            "n_free": In(16), "n_nudged": In(16), "settle_steps": In(16),
            "lanes_busy": In(1), "lanes_moved": In(1), "argmax_done": In(1),
            "lanes": Out(lane_control_signature(params)),
            "phase": Out(Phase), "argmax_run": Out(1), "busy": Out(1), "done": Out(1), "free_steps": Out(16),
            "cycles_free": Out(32), "cycles_nudged": Out(32), "cycles_update": Out(32), "cycles_total": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        ph, ctl = self.phase, self.lanes
        self._infer, self._quiet = Signal(name="infer"), Signal(16, name="quiet")  # quiet: consecutive quiet steps
        self._step, self._nudge_base = Signal(16, name="step"), Signal(32, name="nudge_base")
        launched, launched2 = Signal(), Signal()  # one and two cycles after a launch
        # The lanes' busy and moved flags, registered (the lanes are far from the controller: a
        # path from their units' flags through this FSM into its registers' enables was the
        # UP5K's critical path): a step's end is seen one cycle later; ``launched2`` covers the
        # cycle after a launch, before a lane's busy reaches ``busy_q``.
        busy_q, moved_q = Signal(), Signal()
        m.d.sync += [busy_q.eq(self.lanes_busy), moved_q.eq(self.lanes_moved)]
        # The example's event bases (example x stride, §5: shifts and adds, the strides are the
        # design's constants, no DSP), registered from the ``example`` register every cycle: the
        # host writes it at least a cycle before the start write, which reaches the controller a
        # cycle after that. The constant multiply and the weakly-clamped phase's add in front of
        # the start's registers were the 8-lane demo's ECP5 critical path; the add is now done
        # in the drive pass's first cycle (``_nudge_base``).
        p = self.p
        S = p.layout.S
        self._ex_train, self._ex_infer = Signal(32, name="ex_train"), Signal(32, name="ex_infer")
        m.d.sync += [self._ex_train.eq(const_mul(self.example, (p.n_free + p.n_nudged) * S, 32)),
                     self._ex_infer.eq(const_mul(self.example, p.n_free * S, 32))]
        # The step compares, registered from the step and quiet counters (they change only when
        # a step ends or at a start, and the next step ends at the earliest after its launch,
        # the lanes' own start, their busy and its register: five cycles later; where it ends
        # sooner, the phase has no steps and the compare is false)
        self._more_free, self._more_nudged, self._quiet_hit = Signal(), Signal(), Signal()
        m.d.sync += [self._more_free.eq(self._step + 1 < self.n_free),
                     self._more_nudged.eq(self._step + 1 < self.n_nudged),
                     self._quiet_hit.eq((self.settle_steps != 0) & (self._quiet + 1 >= self.settle_steps))]
        # ``busy`` (phase != IDLE) is a register of its own, set and cleared with the phase: it
        # gates every host write (HostDecoder), and a decode of ``phase`` there was the head of
        # the 8-lane design's critical path on the ECP5
        m.d.comb += ctl.nudge.eq(ph == Phase.NUDGED)
        m.d.sync += [ctl.start.eq(0), launched.eq(ctl.start), launched2.eq(launched)]
        lanes_done = ~ctl.start & ~launched & ~launched2 & ~busy_q  # the step (or the update) is over
        self._moved = moved_q
        with m.If(self.busy):
            m.d.sync += self.cycles_total.eq(self.cycles_total + 1)
        with m.Switch(ph):
            with m.Case(Phase.IDLE):
                with m.If(self.start):
                    self._begin(m)
            with m.Case(Phase.DRIVE):
                # the weakly-clamped phase's first event, example base + n_free S (§5), with the
                # design's n_free like the example stride (a constant), from the base the start
                # registered (its ev_base is the training stride's; an inference does not use it)
                with m.If(launched):
                    m.d.sync += self._nudge_base.eq((ctl.ev_base + p.n_free * S)[:32])
                with m.If(lanes_done):
                    self._relax(m)
            with m.Case(Phase.FREE, Phase.NUDGED):
                free = ph == Phase.FREE
                with m.If(free):
                    m.d.sync += self.cycles_free.eq(self.cycles_free + 1)
                with m.Else():
                    m.d.sync += self.cycles_nudged.eq(self.cycles_nudged + 1)
                with m.If(lanes_done):
                    self._step_done(m, free)
            with m.Case(Phase.UPDATE):
                m.d.sync += self.cycles_update.eq(self.cycles_update + 1)
                with m.If(lanes_done):
                    m.d.sync += [ph.eq(Phase.IDLE), self.busy.eq(0), self.done.eq(1), ctl.mode.eq(LaneMode.RELAX)]
            with m.Case(Phase.ARGMAX):
                with m.If(self.argmax_done):
                    m.d.sync += [ph.eq(Phase.IDLE), self.busy.eq(0), self.argmax_run.eq(0), self.done.eq(1)]
        return m

    def _begin(self, m):
        """A start: the example's event base (§5), buffers and counters cleared; the drive pass
        launched (§2)."""
        ctl = self.lanes
        ex_base = Mux(self.infer, self._ex_infer, self._ex_train)  # example x stride (registered)
        m.d.sync += [self._infer.eq(self.infer), self.done.eq(0), self._step.eq(0), ctl.rd_buf.eq(0),
                     ctl.wr_buf.eq(1), ctl.s0_buf.eq(0), ctl.sb_buf.eq(0), self.cycles_free.eq(0),
                     self.cycles_nudged.eq(0), self.cycles_update.eq(0), self.cycles_total.eq(0),
                     self._quiet.eq(0), self.free_steps.eq(0), ctl.ev_base.eq(ex_base),
                     self.phase.eq(Phase.DRIVE), self.busy.eq(1), ctl.start.eq(1), ctl.mode.eq(LaneMode.DRIVE)]

    def _relax(self, m):
        """The drive pass is over: the free phase's first step (or, without free steps, the
        arg-max of an inference, or the weakly-clamped phase of a training example)."""
        ctl = self.lanes
        with m.If(self.n_free > 0):
            m.d.sync += [self.phase.eq(Phase.FREE), ctl.start.eq(1), ctl.mode.eq(LaneMode.RELAX)]
        with m.Elif(self._infer):
            m.d.sync += [self.phase.eq(Phase.ARGMAX), self.argmax_run.eq(1)]
        with m.Else():
            m.d.sync += self.phase.eq(Phase.FREE)  # zero free steps: ends at the next cycle

    def _step_done(self, m, free):
        """A step has finished (or the phase has none): the next step, or the next phase."""
        p, ctl, step = self.p, self.lanes, self._step
        S = p.layout.S
        step_next = (step + 1)[:16]
        # §4a: a free step is quiet when no lane saw a change above settle_tol
        quiet_next = Mux(self._moved, 0, (self._quiet + 1)[:16])
        # (quiet_next >= settle_steps != 0 without a moved lane; registered: _quiet_hit)
        settled = free & ~self._moved & self._quiet_hit
        m.d.sync += self._quiet.eq(quiet_next)
        more = Mux(free, self._more_free, self._more_nudged)  # step_next < the phase's steps
        with m.If(more & ~settled):
            m.d.sync += [step.eq(step_next), ctl.ev_base.eq(ctl.ev_base + S), ctl.start.eq(1),
                         ctl.rd_buf.eq(ctl.wr_buf)]
            # free: alternate 0 and 1; weakly clamped: the buffer neither just written nor s^0's
            m.d.sync += ctl.wr_buf.eq(Mux(free, ctl.rd_buf, (3 - ctl.wr_buf - ctl.s0_buf)[:2]))
        with m.Elif(free):
            s0 = Mux(self.n_free > 0, ctl.wr_buf, 0)
            # the weakly-clamped phase's events start at base + n_free S (§5), also after a
            # free phase the settle rule ended early (§4a)
            m.d.sync += [ctl.s0_buf.eq(s0), ctl.sb_buf.eq(s0), ctl.ev_base.eq(self._nudge_base),
                         self.free_steps.eq(Mux(self.n_free > 0, step_next, 0))]
            with m.If(self._infer):
                m.d.sync += [self.phase.eq(Phase.ARGMAX), self.argmax_run.eq(1)]
            with m.Else():
                m.d.sync += [self.phase.eq(Phase.NUDGED), step.eq(0), ctl.rd_buf.eq(s0), ctl.wr_buf.eq(2)]
                with m.If(self.n_nudged > 0):
                    m.d.sync += ctl.start.eq(1)
        with m.Else():
            m.d.sync += [ctl.sb_buf.eq(Mux(self.n_nudged > 0, ctl.wr_buf, ctl.s0_buf)), self.phase.eq(Phase.UPDATE),
                         ctl.start.eq(1), ctl.mode.eq(LaneMode.UPDATE),
                         ctl.ev_base.eq(const_mul(self.update, p.layout.n_slots + S, 32))]

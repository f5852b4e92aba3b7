"""The EqProp core: P lanes, the phase controller, the arg-max and the host decoder.

Built from the components of ``units/`` (the map, with every signature and latency:
docs/rtl.md): ``HostDecoder`` (bus, registers, status, irq), ``PhaseController`` (phases,
steps, state buffers, event numbers, cycle counters), ``ArgMax`` and one ``Lane`` per lane
(``lane.py``). The codes (regions, registers, ctrl and status bits, phases) are the enums
of ``enums.py``; the integer names below are kept for the modules that import them.

Phases (the paper's section 5.1 and Figure 6, docs/numerics.md §4-§6):

    IDLE --start--> DRIVE --> FREE (n_free steps) --> NUDGED (n_nudged steps) --> UPDATE --> DONE
                                |  (inference)
                                +--> ARGMAX (scan the output neurons) --> DONE

The drive pass (every example, training and inference) walks each lane's drive
entries (the connections from the clamped inputs) once and keeps, per neuron,
D_i = the inputs' part of the sum plus the aligned bias (docs/numerics.md §2);
every relaxation step then walks only the step entries (the connections between
non-input neurons) and adds D_i.

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
data returns with ``rvalid``, ``READ_LATENCY`` = 4 cycles after the read
enable). The memory map and the cycle model are described in the generator's
manifest (``generate.py``).
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

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
    Phase,
)
from .lane import (
    DRIVE_LATENCY,
    MAC_LATENCY,
    NEURON_LATENCY,
    START_LATENCY,
    UPDATE_CYCLES_PER_BIAS,
    UPDATE_CYCLES_PER_ENTRY,
    UPDATE_DRAIN_CYCLES,
    Lane,
)
from .params import CoreParams
from .units import ArgMax, HostDecoder, PhaseController
from .units.decoder import HOST_BUS
from .units.signatures import host_field_bits

STEP_OVERHEAD = PhaseController.STEP_OVERHEAD  # the launch cycle of each step
UPDATE_OVERHEAD = PhaseController.UPDATE_OVERHEAD  # launch and done detection of the update pass


def lane_field_bits(params: CoreParams) -> int:
    """Bits of the per-lane offset inside weight/bias/target/state regions."""
    return host_field_bits(params)


class Core(wiring.Component):
    """The core: P lanes, the phase controller, the arg-max and the host decoder.

    Ports: ``bus`` (in, HOST_BUS: ``addr[24]`` word address ``(Region << 20) | offset``,
    ``wdata[32]``, ``we``, ``re`` from the host; ``rdata[32]`` with ``rvalid``, four cycles
    after ``re``), ``busy`` (out: status bit 0) and ``irq`` (out, level: high from the end of an
    example until the host reads ``status`` or starts the next one).

    ``lane_weights``, ``lane_biases``: the initial stored weights and biases of every lane
    (``CoreParams.lane_weights`` / ``lane_biases``; None: zeros).
    """
    bus: In(HOST_BUS)
    busy: Out(1)
    irq: Out(1)

    def __init__(self, params: CoreParams, lane_weights=None, lane_biases=None):
        P = params.layout.P
        for name, v in (("lane_weights", lane_weights), ("lane_biases", lane_biases)):
            if v is not None and len(v) != P:
                raise ValueError(f"{name}: {len(v)} lanes given, the core has {P}")
        self.p = params
        self.lane_weights = lane_weights
        self.lane_biases = lane_biases
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        p = self.p
        lanes = [Lane(p, ell, None if self.lane_weights is None else self.lane_weights[ell],
                      None if self.lane_biases is None else self.lane_biases[ell]) for ell in range(p.layout.P)]
        for ell, ln in enumerate(lanes):
            m.submodules[f"lane{ell}"] = ln
        dec = m.submodules.decoder = HostDecoder(p)
        ctl = m.submodules.control = PhaseController(p)
        am = m.submodules.argmax = ArgMax(p)
        wiring.connect(m, wiring.flipped(self.bus), dec.bus)
        wiring.connect(m, ctl.lanes, *[ln.ctrl for ln in lanes])
        # the arg-max borrows lane 0's host port while it scans; the other lanes take the host's
        wiring.connect(m, dec.lanes[0], am.upstream)
        wiring.connect(m, am.lane, lanes[0].host)
        for ell in range(1, p.layout.P):
            wiring.connect(m, dec.lanes[ell], lanes[ell].host)
        m.d.comb += [
            self.busy.eq(dec.host_busy), self.irq.eq(dec.irq),  # (busy from the start's cycle)
            ctl.start.eq(dec.start), ctl.infer.eq(dec.infer), ctl.example.eq(dec.example),
            ctl.update.eq(dec.update), ctl.n_free.eq(dec.n_free), ctl.n_nudged.eq(dec.n_nudged),
            ctl.settle_steps.eq(dec.settle_steps), ctl.argmax_done.eq(am.done),
            ctl.lanes_busy.eq(Cat(ln.busy for ln in lanes).any()),
            ctl.lanes_moved.eq(Cat(ln.moved for ln in lanes).any()),  # §4a
            am.run.eq(ctl.argmax_run), am.s0_buf.eq(ctl.lanes.s0_buf),
            dec.busy.eq(ctl.busy), dec.done.eq(ctl.done), dec.s0_buf.eq(ctl.lanes.s0_buf),
            dec.final_buf.eq(ctl.lanes.sb_buf), dec.pred.eq(am.pred), dec.free_steps.eq(ctl.free_steps),
            *[getattr(dec, k).eq(getattr(ctl, k)) for k in ("cycles_free", "cycles_nudged", "cycles_update",
                                                             "cycles_total")],
        ]
        for ln in lanes:
            m.d.comb += [ln.beta_neg.eq(dec.beta_neg), ln.settle_tol.eq(dec.settle_tol), ln.rate.eq(dec.rate)]
            # every lane's copy of bank w takes lane w's results
            for w, src in enumerate(lanes):
                m.d.comb += [ln.bank_in[w].en.eq(src.result.en), ln.bank_in[w].addr.eq(src.result.addr),
                             ln.bank_in[w].data.eq(src.result.data)]
        return m


def cycle_model(p: CoreParams) -> dict:
    """Cycles per step, phase and example, as formulas and numbers (the manifest's):

        drive  = max lane drive entries + lane start (1) + MAC latency (6) + drive latency (3)
                 + controller (2)
        step   = max lane step entries + lane start (1) + MAC latency (6) + neuron latency (7)
                 + controller (2)
        update = max over lanes (4 x entries + drain (2) + 9 x neurons)
                 + lane start (1) + controller (3)
        argmax = n_out + 5
        training example  = drive + t x step + n_nudged x step + update
        inference example = drive + t x step + argmax

    (the latencies: ``lane.START_LATENCY``, ``MacPipeline.LATENCY``, ``NeuronUnit.DRIVE_LATENCY``
    / ``LATENCY``, ``PhaseController.STEP_OVERHEAD`` / ``UPDATE_OVERHEAD``, ``UpdateUnit.CYCLES_PER_ENTRY`` /
    ``DRAIN_CYCLES`` / ``CYCLES_PER_BIAS``; the entries: ``layout.Lane.n_drive``, ``n_step``,
    all of them, holes, dummies and mirrors, which write nothing, too).
    The drive pass runs once per example, before the free phase.

    ``free``, ``train_example`` and ``inference_example`` are for a full free phase
    (t = n_free steps). Under the settle rule (docs/numerics.md §4a) an example whose free
    phase took t steps (the ``free_steps`` register) costs ``t x step`` free cycles and
    ``t x step + train_rest`` (training) or ``t x step + inference_rest`` (inference) in
    all (the rests include the drive pass): :func:`example_cycles`."""
    lay = p.layout
    depth, ddepth = lay.step_depth, lay.drive_depth
    step = depth + START_LATENCY + MAC_LATENCY + NEURON_LATENCY + STEP_OVERHEAD
    drive = ddepth + START_LATENCY + MAC_LATENCY + DRIVE_LATENCY + STEP_OVERHEAD
    upd_lane = [UPDATE_CYCLES_PER_ENTRY * l.n_entries + (UPDATE_DRAIN_CYCLES if l.n_entries else 0)
                + UPDATE_CYCLES_PER_BIAS * len(l.neurons) for l in lay.lanes]
    update = max(upd_lane) + START_LATENCY + UPDATE_OVERHEAD
    free = p.n_free * step
    nudged = p.n_nudged * step
    argmax = ArgMax.cycles(p)
    return {
        "drive": drive,
        "drive_formula": f"max lane drive entries ({ddepth}) + lane start ({START_LATENCY}) + MAC latency "
                         f"({MAC_LATENCY}) + drive latency ({DRIVE_LATENCY}) + controller ({STEP_OVERHEAD}); "
                         f"once per example",
        "step": step,
        "step_formula": f"max lane step entries ({depth}) + lane start ({START_LATENCY}) + MAC latency "
                        f"({MAC_LATENCY}) + neuron latency ({NEURON_LATENCY}) + controller ({STEP_OVERHEAD})",
        "free": free,
        "free_formula": f"t x step, t = the free phase's steps: n_free ({p.n_free}), or fewer under the "
                        f"settle rule (numerics.md §4a; register free_steps)",
        "nudged": nudged,
        "update": update,
        "update_formula": f"max over lanes of {UPDATE_CYCLES_PER_ENTRY} x entries (drive and step; holes, dummies "
                          f"and mirrors, which write nothing, too) + drain ({UPDATE_DRAIN_CYCLES}) + "
                          f"{UPDATE_CYCLES_PER_BIAS} x neurons + lane start ({START_LATENCY}) + controller "
                          f"({UPDATE_OVERHEAD})",
        "train_example": drive + free + nudged + update,
        "inference_example": drive + free + argmax,
        "train_rest": drive + nudged + update,
        "inference_rest": drive + argmax,
        "example_formula": "training: t x step + train_rest (drive + nudged + update); inference: t x step + "
                           "inference_rest (drive + arg-max: n_out + 5); t = n_free without the settle rule",
        "mac_utilisation": lay.total_macs / (lay.P * step),
    }


def example_cycles(cm: dict, free_steps: int, infer: bool) -> int:
    """Cycles of one example whose free phase took ``free_steps`` steps (``cm``: cycle_model;
    the drive pass is in its ``train_rest`` and ``inference_rest``)."""
    return free_steps * cm["step"] + cm["inference_rest" if infer else "train_rest"]

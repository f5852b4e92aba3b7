"""Which of Verilator's ``-Wall`` warnings on Amaranth's Verilog are the generator's.

Amaranth 0.5 writes Verilog through its bundled Yosys (``write_verilog``), and some
constructs of that output draw Verilator ``-Wall`` warnings whatever the design: every
synchronous signal's init value is a declaration initialiser (PROCASSINIT), submodules
are named ``top.sub`` in the top's file (DECLFILENAME), each signal's process is written
as its default followed by only the case arms that assign it (CASEINCOMPLETE), ``x == 0``
is written ``!x`` (WIDTHTRUNC), operands are trimmed of their known zero or sign bits
(WIDTHEXPAND), and every ``Signal`` and every operator result keeps a named wire of its
own even where the logic reads the net under another name, or reads only a slice of it
(UNUSEDSIGNAL).

:func:`generator_waivers` finds, in the Verilog text itself, the lines where the
generator writes each of these :data:`KINDS`; :func:`waiver_config` turns them into a
Verilator configuration file (``NAME.vlt``) of ``lint_off -rule CODE -file "*NAME.v"
-lines N`` entries, one line each: nothing is waived file-wide, and a warning on any
other line (the design's own: an unused signal or port, a signal wider than what drives
it, ...) stays reported. The rule for UNUSEDSIGNAL follows the nets across the whole
file, through the generator's copies (``assign copy = net;``) and the instances' ports:
a wire is the generator's only if every bit nobody reads under its name is read by logic
under another name somewhere (``alias``), or it is the anonymous result ``$N`` of an
operator Amaranth widens (``+``, ``-``, ``*``, ``<<``) of which the design takes some
bits (``full-width-result``), or the unread ``rst`` of a submodule (``domain-reset``). A
signal whose value nobody reads, or whose unread bits are constants (a signal wider than
what drives it), is the design's.

The parser reads the subset of Verilog that Yosys' ``write_verilog`` produces (one
declaration per line, ``assign``, ``always``/``initial`` processes, instances, the
``ifndef`` blocks of ``evaluate_comb_at_time0``); anything it does not understand gets
no waiver, so that Verilator reports it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

__all__ = ["AMARANTH_WAIVERS", "KINDS", "Waiver", "generator_waivers", "waiver_config", "waive_inline",
           "lint_counts", "counts_table", "module_at"]

#: Verilator ``-Wall`` warning codes that Amaranth 0.5's Verilog draws whatever the design,
#: with the reason each is waived; each is waived only on the lines :data:`KINDS` names.
AMARANTH_WAIVERS = {
    "PROCASSINIT": "Amaranth writes each synchronous signal's init value as the declaration "
    "initialiser of its reg (the FPGA power-on value); reset is explicit logic",
    "DECLFILENAME": "Amaranth names each submodule 'top.path' and writes it into the top's file",
    "CASEINCOMPLETE": "Yosys writes one process per signal: its default first, then only the case "
    "arms that assign it, so a case without a default cannot latch",
    "WIDTHTRUNC": "Amaranth's x == 0 is written as the logical not !x of a multi-bit x",
    "WIDTHEXPAND": "Amaranth's backend trims the known zero or sign bits off an operator's operands "
    "(amaranth.back.rtlil: 'to make the output prettier'), leaving the extension to Verilog",
    "UNUSEDSIGNAL": "Amaranth keeps a named wire for every Signal (also struct fields and the "
    "signals of connected ports) and for every operator's full-width result; the logic reads "
    "the net under one name, or a slice of the result",
}


class Kind(NamedTuple):
    code: str
    rule: str


#: The kinds of generator lines: the warning code and the rule that finds its lines.
KINDS = {
    "init-value": Kind("PROCASSINIT", "a reg declared with an initialiser and assigned in an always block"),
    "submodule-name": Kind("DECLFILENAME", "the 'module' line of a module named TOP.path (Amaranth's submodules)"),
    "case-after-default": Kind("CASEINCOMPLETE", "a case in an always @* block that assigns every signal it "
                               "drives before the case, or in a clocked block"),
    "zero-test": Kind("WIDTHTRUNC", "assign x = ! y; (Amaranth's y == 0)"),
    "trimmed-operand": Kind("WIDTHEXPAND", "assign x = a OP b; with OP an arithmetic, shift or comparison "
                            "operator (an operator cell)"),
    "alias": Kind("UNUSEDSIGNAL", "a wire driven by a copy of other nets (assign w = net, its slices and "
                  "concatenations), each of whose unread bits is read under another name (an anonymous $N "
                  "may also hold unread constant bits: a shift's or an extension's fill, an operand's fill "
                  "to its operator's width)"),
    "domain-reset": Kind("UNUSEDSIGNAL", "the input rst of a submodule that reads none of it: Amaranth "
                         "gives the domain's reset to every module in the domain (also one of only memories)"),
    "full-width-result": Kind("UNUSEDSIGNAL", "an anonymous result $N of +, -, * or << (which Amaranth "
                              "widens: a carry, a full product) of which some bits are read"),
}


class Waiver(NamedTuple):
    """One waived line: ``code`` on ``line`` (1-based) of kind ``kind`` (a key of
    :data:`KINDS`); ``name`` is the signal or module concerned ("" where none)."""

    code: str
    line: int
    kind: str
    name: str


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<attr>\(\*.*?\*\))
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<pp>`[A-Za-z_]+[^\n]*)
  | (?P<esc>\\\S+)
  | (?P<sys>\$[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>\d*\s*'[sS]?[bBoOdDhH]\s*[0-9a-fA-FxXzZ?_]+|\d+)
  | (?P<id>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<op>\+:|-:|<<<|>>>|===|!==|==|!=|<=|>=|&&|\|\||<<|>>|~&|~\||~\^|\^~|\S)
""", re.X | re.S)

_KEYWORDS = {"module", "endmodule", "input", "output", "inout", "wire", "reg", "assign", "always",
             "initial", "begin", "end", "if", "else", "case", "casez", "casex", "endcase", "default",
             "posedge", "negedge", "or", "signed", "integer", "parameter", "localparam"}


class Tok(NamedTuple):
    kind: str  # "id" (plain or escaped, text without the backslash), "num", "sys", "op", "kw"
    text: str
    line: int


def tokenize(text: str, defines: Iterable[str] = ("VERILATOR",)) -> list[Tok]:
    """Yosys Verilog as tokens, with the ``ifdef``/``ifndef`` blocks resolved for
    ``defines`` (what Verilator sees) and comments and attributes dropped."""
    defines = set(defines)
    out: list[Tok] = []
    active = [True]
    line = 1
    for m in _TOKEN.finditer(text):
        kind, val = m.lastgroup, m.group()
        if kind == "nl":
            line += 1
            continue
        if kind in ("comment", "attr", "str"):
            line += val.count("\n")
            continue
        if kind == "ws":
            continue
        if kind == "pp":
            words = val[1:].split()
            d = words[0]
            if d in ("ifdef", "ifndef"):
                on = (words[1] in defines) == (d == "ifdef")
                active.append(active[-1] and on)
            elif d == "else":
                parent = active[-2] if len(active) > 1 else True
                active[-1] = parent and not active[-1]
            elif d == "endif":
                if len(active) > 1:
                    active.pop()
            continue
        if not active[-1]:
            continue
        if kind == "esc":
            out.append(Tok("id", val[1:], line))
        elif kind == "id":
            out.append(Tok("kw" if val in _KEYWORDS else "id", val, line))
        else:
            out.append(Tok(kind, val, line))
    return out


def _num_value(text: str) -> tuple[int | None, int | None]:
    """(width, value) of a Verilog number; value None when it has x/z/? digits, width None
    when unsized."""
    t = text.replace("_", "").replace(" ", "")
    if "'" not in t:
        return None, int(t)
    w, rest = t.split("'", 1)
    rest = rest.lstrip("sS")
    base = {"b": 2, "o": 8, "d": 10, "h": 16}[rest[0].lower()]
    digits = rest[1:]
    try:
        v = int(digits, base)
    except ValueError:
        v = None
    return (int(w) if w else None), v


# --------------------------------------------------------------------------
# Expressions: the references they read, and the bits of a plain net expression
# --------------------------------------------------------------------------

CONST = ("", -1)  # the source of a constant bit


@dataclass
class Decl:
    name: str
    line: int  # first declaration (the port line for ports)
    msb: int = 0
    lsb: int = 0
    kind: str = "wire"  # wire, reg, input, output, memory
    init: int = 0  # the line of the reg's declaration initialiser (0: none)

    @property
    def width(self) -> int:
        return abs(self.msb - self.lsb) + 1

    def bits(self) -> list[int]:
        """Bit indices MSB first."""
        step = -1 if self.msb >= self.lsb else 1
        return list(range(self.msb, self.lsb + step, step))


class _Unparsed(Exception):
    pass


class Expr:
    """A parsed expression span: ``refs`` (name, bits or None for all) it reads,
    ``net_bits`` (MSB-first list of (name, bit) or CONST) when it is a plain net expression
    (references with constant selects, sized constants, concatenations, replications),
    else None; ``op`` is its top-level binary operator, or "!" or "~"/"-" for a unary one at
    its start."""

    def __init__(self, toks: list[Tok], decls: dict[str, Decl]):
        self.toks = toks
        self.decls = decls
        self.refs: list[tuple[str, list[int] | None]] = []
        self._collect(0, len(toks))
        try:
            self.net_bits = self._net(toks)
        except _Unparsed:
            self.net_bits = None
        self.op = self._top_op()

    # references anywhere in the span
    def _collect(self, i: int, j: int):
        toks = self.toks
        while i < j:
            t = toks[i]
            if t.kind == "id":
                if i + 1 < j and toks[i + 1].text == "[":
                    k = _match(toks, i + 1)
                    sel = _const_select(toks[i + 2:k])
                    if sel is None:
                        self.refs.append((t.text, None))
                        self._collect(i + 2, k)
                    else:
                        self.refs.append((t.text, sel))
                    i = k + 1
                    continue
                self.refs.append((t.text, None))
            i += 1

    def _net(self, toks: list[Tok]) -> list:
        if not toks:
            raise _Unparsed
        if toks[0].text == "{":
            k = _match(toks, 0)
            if k != len(toks) - 1:
                raise _Unparsed
            inner = toks[1:k]
            # replication {N{...}}
            if len(inner) >= 3 and inner[0].kind == "num" and inner[1].text == "{":
                n = _num_value(inner[0].text)[1]
                kk = _match(inner, 1)
                if kk != len(inner) - 1 or n is None:
                    raise _Unparsed
                return self._net(inner[1:kk + 1]) * n
            out = []
            for part in _split(inner, ","):
                out += self._net(part)
            return out
        if toks[0].kind == "num":
            if len(toks) != 1:
                raise _Unparsed
            w, _ = _num_value(toks[0].text)
            if w is None:
                raise _Unparsed
            return [CONST] * w
        if toks[0].kind == "id":
            d = self.decls.get(toks[0].text)
            if d is None or d.kind == "memory":
                raise _Unparsed
            if len(toks) == 1:
                return [(d.name, b) for b in d.bits()]
            if toks[1].text != "[" or _match(toks, 1) != len(toks) - 1:
                raise _Unparsed
            sel = _const_select(toks[2:-1])
            if sel is None:
                raise _Unparsed
            return [(d.name, b) for b in sel]
        raise _Unparsed

    def _top_op(self) -> str | None:
        toks = self.toks
        depth = 0
        if toks and toks[0].kind == "op" and toks[0].text in ("!", "~", "-"):
            first = toks[0].text
        else:
            first = None
        for t in toks:
            if t.kind == "op":
                if t.text in "([{":
                    depth += 1
                elif t.text in ")]}":
                    depth -= 1
                elif depth == 0 and t.text == "?":
                    return "?"
        depth = 0
        for idx, t in enumerate(toks):
            if t.kind != "op":
                continue
            if t.text in "([{":
                depth += 1
            elif t.text in ")]}":
                depth -= 1
            elif depth == 0 and idx > 0 and t.text in _BINARY:
                return t.text
        return first


_BINARY = {"+", "-", "*", "/", "%", "<<", ">>", "<<<", ">>>", "==", "!=", "===", "!==", "<", ">", "<=", ">=",
           "&", "|", "^", "~^", "^~", "&&", "||"}
# Operators whose result Amaranth makes wider than their operands (+, - one bit; * the sum; <<)
_WIDENING = {"+", "-", "*", "<<"}
# Operators whose operands Amaranth's RTLIL backend trims (amaranth.back.rtlil emit_operator)
_TRIMMED = {"+", "-", "*", "<<", ">>", ">>>", "==", "!=", "<", ">", "<=", ">="}


def _match(toks: list[Tok], i: int) -> int:
    """Index of the bracket closing toks[i]."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    open_, close = toks[i].text, pairs[toks[i].text]
    depth = 0
    for k in range(i, len(toks)):
        t = toks[k].text
        if toks[k].kind != "op":
            continue
        if t == open_:
            depth += 1
        elif t == close:
            depth -= 1
            if depth == 0:
                return k
    raise _Unparsed


def _split(toks: list[Tok], sep: str) -> list[list[Tok]]:
    parts, cur, depth = [], [], 0
    for t in toks:
        if t.kind == "op" and t.text in "([{":
            depth += 1
        elif t.kind == "op" and t.text in ")]}":
            depth -= 1
        if depth == 0 and t.kind == "op" and t.text == sep:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    parts.append(cur)
    return parts


def _const_select(toks: list[Tok]) -> list[int] | None:
    """Bits (MSB first) of a constant part select ``[hi:lo]``/``[i]``/``[base+:w]``, else None."""
    vals = [(_num_value(t.text)[1] if t.kind == "num" else None) for t in toks]
    if len(toks) == 1 and vals[0] is not None:
        return [vals[0]]
    if len(toks) == 3 and vals[0] is not None and vals[2] is not None:
        a, op, b = vals[0], toks[1].text, vals[2]
        if op == ":":
            step = -1 if a >= b else 1
            return list(range(a, b + step, step))
        if op == "+:":
            return list(range(a + b - 1, a - 1, -1))
        if op == "-:":
            return list(range(a, a - b, -1))
    return None


# --------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------

@dataclass
class Module:
    name: str
    line: int
    decls: dict[str, Decl] = field(default_factory=dict)
    ports: dict[str, str] = field(default_factory=dict)  # name -> input/output/inout
    # (lhs tokens, rhs tokens, line) of every assign
    assigns: list[tuple[list[Tok], list[Tok], int]] = field(default_factory=list)
    # processes: (clocked, list of top-level statements as token lists, line)
    procs: list[tuple[bool, list[Tok], int]] = field(default_factory=list)
    # instances: (module name, [(port, expr tokens)], line)
    insts: list[tuple[str, list[tuple[str, list[Tok]]], int]] = field(default_factory=list)


def _range(toks: list[Tok], i: int) -> tuple[int, int, int]:
    """(msb, lsb, next index) of an optional [msb:lsb] at toks[i]."""
    if i < len(toks) and toks[i].text == "[":
        k = _match(toks, i)
        sel = toks[i + 1:k]
        msb, lsb = _num_value(sel[0].text)[1], _num_value(sel[2].text)[1]
        return msb, lsb, k + 1
    return 0, 0, i


def parse_modules(text: str) -> dict[str, Module]:
    """The modules of Yosys-written Verilog, by name."""
    toks = tokenize(text)
    mods: dict[str, Module] = {}
    i, n = 0, len(toks)
    while i < n:
        if toks[i].text != "module" or toks[i].kind != "kw":
            i += 1
            continue
        start = i
        mod = Module(toks[i + 1].text, toks[i].line)
        try:
            i += 2
            if toks[i].text == "(":
                i = _match(toks, i) + 1
            i += 1  # ;
            while i < n and not (toks[i].kind == "kw" and toks[i].text == "endmodule"):
                i = _item(toks, i, mod)
            mods[mod.name] = mod
        except (_Unparsed, StopIteration, IndexError, KeyError, ValueError):
            # not the Verilog this reads: no waiver in this module (Verilator reports it all)
            i = next((k for k in range(start + 1, n) if toks[k].kind == "kw" and toks[k].text == "endmodule"), n)
        i += 1
    return mods


def _stmt_end(toks: list[Tok], i: int) -> int:
    """Index of the ';' ending the simple statement or item starting at i."""
    depth = 0
    for k in range(i, len(toks)):
        t = toks[k]
        if t.kind == "op":
            if t.text in "([{":
                depth += 1
            elif t.text in ")]}":
                depth -= 1
            elif t.text == ";" and depth == 0:
                return k
    raise _Unparsed


def _item(toks: list[Tok], i: int, mod: Module) -> int:
    t = toks[i]
    if t.kind == "kw" and t.text in ("input", "output", "inout", "wire", "reg", "integer"):
        j = i + 1
        if j < len(toks) and toks[j].text == "signed":
            j += 1
        msb, lsb, j = _range(toks, j)
        name = toks[j].text
        end = _stmt_end(toks, j)
        rest = toks[j + 1:end]
        d = mod.decls.get(name)
        if d is None:
            d = mod.decls[name] = Decl(name, t.line, msb, lsb, t.text)
        if t.text in ("input", "output", "inout"):
            mod.ports[name] = t.text
            d.kind = t.text
        if rest and rest[0].text == "[":  # an array: a memory
            d.kind = "memory"
        if rest and rest[0].text == "=":
            d.init = t.line
        return end + 1
    if t.kind == "kw" and t.text == "assign":
        end = _stmt_end(toks, i + 1)
        body = toks[i + 1:end]
        eq = next(k for k, x in enumerate(body) if x.kind == "op" and x.text == "=")
        mod.assigns.append((body[:eq], body[eq + 1:], t.line))
        return end + 1
    if t.kind == "kw" and t.text in ("always", "initial"):
        j = i + 1
        clocked = False
        if t.text == "always":
            if toks[j].text == "@":
                j += 1
                if toks[j].text == "*":
                    j += 1
                elif toks[j].text == "(":
                    k = _match(toks, j)
                    clocked = any(x.text in ("posedge", "negedge") for x in toks[j:k])
                    if toks[j + 1].text == "*":
                        clocked = False
                    j = k + 1
        end = _stmt_span(toks, j)
        mod.procs.append((clocked or t.text == "initial", toks[j:end], t.line))
        return end
    if t.kind == "id":  # an instance: MOD [#(...)] NAME ( .port(expr), ... );
        j = i + 1
        if toks[j].text == "#":
            j = _match(toks, j + 1) + 1
        j += 1  # instance name
        k = _match(toks, j)
        conns = []
        for part in _split(toks[j + 1:k], ","):
            if len(part) >= 3 and part[0].text == ".":
                conns.append((part[1].text, part[3:-1]))
        mod.insts.append((t.text, conns, t.line))
        return _stmt_end(toks, k + 1) + 1
    return _stmt_end(toks, i) + 1


def _stmt_span(toks: list[Tok], i: int) -> int:
    """Index just after the procedural statement starting at i."""
    t = toks[i]
    for opens, close in ((("begin",), "end"), (("case", "casez", "casex"), "endcase")):
        if t.kind == "kw" and t.text in opens:
            depth = 0
            for k in range(i, len(toks)):
                if toks[k].kind == "kw" and toks[k].text in opens:
                    depth += 1
                elif toks[k].kind == "kw" and toks[k].text == close:
                    depth -= 1
                    if depth == 0:
                        return k + 1
            raise _Unparsed
    if t.kind == "kw" and t.text == "if":
        k = _match(toks, i + 1) + 1
        k = _stmt_span(toks, k)
        if k < len(toks) and toks[k].kind == "kw" and toks[k].text == "else":
            k = _stmt_span(toks, k + 1)
        return k
    return _stmt_end(toks, i) + 1


# --------------------------------------------------------------------------
# Procedural code: targets, reads, cases
# --------------------------------------------------------------------------

def _proc_walk(toks: list[Tok], mod: Module, reads: list, targets: set, cases: list, uncond: set,
               depth: int = 0):
    """Walk a process body: the references it reads (into ``reads``), the signals it assigns
    (``targets``), its case statements (``cases``: (line, signals assigned inside)), and the
    signals assigned unconditionally at its top level before anything else (``uncond``)."""
    i = 0
    n = len(toks)
    top_simple = depth == 0
    while i < n:
        t = toks[i]
        if t.kind == "kw" and t.text in ("begin", "end", "else", "default"):
            i += 1
            continue
        if t.kind == "op" and t.text in (";", ":"):
            i += 1
            continue
        if t.kind == "kw" and t.text == "if":
            k = _match(toks, i + 1)
            reads.extend(Expr(toks[i + 2:k], mod.decls).refs)
            end = _stmt_span(toks, i)
            inner = toks[k + 1:end]
            if not (len(inner) == 2 and inner[0].text == "begin" and inner[1].text == "end"):
                top_simple = False
            _proc_walk(inner, mod, reads, targets, cases, uncond, depth + 1)
            i = end
            continue
        if t.kind == "kw" and t.text in ("case", "casez", "casex"):
            k = _match(toks, i + 1)
            reads.extend(Expr(toks[i + 2:k], mod.decls).refs)
            end = _stmt_span(toks, i)
            inner_targets: set = set()
            body = toks[k + 1:end - 1]
            # labels: constants up to ':' at depth 0, then a statement
            j = 0
            while j < len(body):
                b = body[j]
                if b.kind == "num" or (b.kind == "op" and b.text == ","):
                    j += 1
                    continue
                if b.kind == "op" and b.text == ":":
                    j += 1
                    s_end = _stmt_span(body, j)
                    _proc_walk(body[j:s_end], mod, reads, inner_targets, cases, uncond, depth + 1)
                    j = s_end
                    continue
                if b.kind == "kw" and b.text == "default":
                    j += 1
                    continue
                raise _Unparsed
            targets |= inner_targets
            cases.append((t.line, inner_targets))
            top_simple = False
            i = end
            continue
        # an assignment: lvalue (=|<=) expr ;
        end = _stmt_end(toks, i)
        stmt = toks[i:end]
        eq = next(k for k, x in enumerate(stmt) if x.kind == "op" and x.text in ("=", "<="))
        lhs = stmt[:eq]
        reads.extend(Expr(stmt[eq + 1:], mod.decls).refs)
        name = lhs[0].text
        if len(lhs) > 1 and lhs[1].text == "[":
            k = _match(lhs, 1)
            if _const_select(lhs[2:k]) is None:
                reads.extend(Expr(lhs[2:k], mod.decls).refs)
        targets.add(name)
        if top_simple and depth == 0:
            uncond.add(name)
        i = end + 1


# --------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------

_ANON = re.compile(r"^\$\d+$")


_PORT = ("<port>", 0)  # alias_src's stand-in for a bit a submodule's output port drives


@dataclass
class _Facts:
    """What one module's text says, for the rule: the bits read under each name (as Verilator
    counts them), the copies, the bits logic reads, and each name's driver."""

    read: dict = field(default_factory=dict)  # name -> bits read under the name (any reader)
    logic: dict = field(default_factory=dict)  # name -> bits read by logic (not by a copy)
    alias_src: dict = field(default_factory=dict)  # (name, bit) -> (name, bit) or CONST
    arith: set = field(default_factory=set)  # anonymous results of a widening arithmetic operator
    proc_targets: set = field(default_factory=set)
    # instance connections: (child module, child port, [parent bits] MSB first)
    conns: list = field(default_factory=list)
    port_driven: set = field(default_factory=set)  # (name, bit) driven by a child's output port


def _mark(store: dict, decls: dict, refs):
    for name, bits in refs:
        d = decls.get(name)
        if d is None:
            continue
        store.setdefault(name, set()).update(d.bits() if bits is None else bits)


def _module_facts(mod: Module, mods: dict[str, Module], top: str, out: list[Waiver]) -> _Facts:
    """The module's facts, and the waivers of every kind but the UNUSEDSIGNAL ones (into ``out``)."""
    fx = _Facts()
    decls = mod.decls
    if mod.name.startswith(top + "."):
        out.append(Waiver("DECLFILENAME", mod.line, "submodule-name", mod.name))
    if mod.name == top:  # the design's outputs are read outside (a submodule's, by its parent: a net)
        _mark(fx.logic, decls, [(name, None) for name, direction in mod.ports.items() if direction == "output"])
    for lhs, rhs, line in mod.assigns:
        lx, rx = Expr(lhs, decls), Expr(rhs, decls)
        _mark(fx.read, decls, rx.refs)
        if lx.net_bits is None:
            continue
        if rx.net_bits is not None and len(rx.net_bits) == len(lx.net_bits):
            for tb, sb in zip(lx.net_bits, rx.net_bits):
                fx.alias_src[tb] = sb
            continue
        _mark(fx.logic, decls, rx.refs)
        if len(lhs) != 1:
            continue
        unary_minus = rx.op == "-" and rhs[0].text == "-"
        if rx.op in _WIDENING or unary_minus:
            fx.arith.add(lhs[0].text)
        if rx.op in _TRIMMED or unary_minus:
            out.append(Waiver("WIDTHEXPAND", line, "trimmed-operand", lhs[0].text))
        if rx.op == "!" and len(rhs) >= 2:
            out.append(Waiver("WIDTHTRUNC", line, "zero-test", lhs[0].text))
    for clocked, body, line in mod.procs:
        reads: list = []
        targets: set = set()
        cases: list = []
        uncond: set = set()
        _proc_walk(body, mod, reads, targets, cases, uncond)
        _mark(fx.read, decls, reads)
        _mark(fx.logic, decls, reads)
        fx.proc_targets |= targets
        for cline, assigned in cases:
            if clocked or assigned <= uncond:
                out.append(Waiver("CASEINCOMPLETE", cline, "case-after-default", ""))
    for child, conns, line in mod.insts:
        cm = mods.get(child)
        for port, expr in conns:
            ex = Expr(expr, decls)
            if cm is None:  # not one of the file's modules: count its inputs as read by logic
                _mark(fx.read, decls, ex.refs)
                _mark(fx.logic, decls, ex.refs)
                continue
            if cm.ports.get(port) != "output":
                _mark(fx.read, decls, ex.refs)
            if ex.net_bits is not None and port in cm.decls and cm.decls[port].width == len(ex.net_bits):
                fx.conns.append((child, port, ex.net_bits))
                if cm.ports.get(port) == "output":
                    fx.port_driven |= {b for b in ex.net_bits if b != CONST}
            else:  # an expression on a port: read here
                _mark(fx.logic, decls, ex.refs)
    for (w, b), src in fx.alias_src.items():
        if src != CONST:
            fx.read.setdefault(src[0], set()).add(src[1])
    for name, d in decls.items():
        if d.init and name in fx.proc_targets:
            out.append(Waiver("PROCASSINIT", d.init, "init-value", name))
    return fx


class _Nets:
    """Union-find over (module, name, bit): the bits that are one net, through the copies
    and the ports of instances."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        p = self.parent
        root = x
        while p.get(root, root) != root:
            root = p[root]
        while x != root:
            nxt = p.get(x, x)
            p[x] = root
            x = nxt
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def generator_waivers(text: str, top: str) -> list[Waiver]:
    """The lines of Amaranth's Verilog ``text`` (top module ``top``) where the generator
    writes one of the :data:`KINDS`, sorted by line.

    For UNUSEDSIGNAL the nets are followed across the whole file: the copies
    (``assign w = net;``) and every instance's ports join bits into nets, and a net is read
    when logic (an operator, a process, a top-level output) reads any of its bits, in any
    module."""
    mods = parse_modules(text)
    out: list[Waiver] = []
    facts = {}
    for name, mod in list(mods.items()):
        own: list[Waiver] = []
        try:
            facts[name] = _module_facts(mod, mods, top, own)
        except (_Unparsed, StopIteration, IndexError, KeyError, ValueError):
            del mods[name]  # not understood: no waiver in it
            continue
        out += own
    nets = _Nets()
    for mname, fx in facts.items():
        for (w, b), src in fx.alias_src.items():
            if src != CONST:
                nets.union((mname, w, b), (mname, *src))
        for child, port, bits in fx.conns:
            for pb, cb in zip(bits, mods[child].decls[port].bits()):
                if pb != CONST:
                    nets.union((mname, *pb), (child, port, cb))
    read_nets = {nets.find((mname, name, b)) for mname, fx in facts.items()
                 for name, bits in fx.logic.items() for b in bits}
    for mname, mod in mods.items():
        fx = facts[mname]
        sub = mname.startswith(top + ".")
        for name, d in mod.decls.items():
            if d.kind in ("memory", "output"):
                continue
            unread = [b for b in d.bits() if b not in fx.read.get(name, ())]
            if not unread:
                continue
            # an anonymous copy may hold constants nobody reads (a shift's or an extension's fill,
            # the fill Amaranth pads an operator's operand with to the result's width): the logic
            # reads the nets it needs directly; a named signal's unread constants are the design's
            anon = _ANON.match(name) is not None
            # (a bit driven by a submodule's output port is that port's net, like a copy's)
            srcs = [fx.alias_src.get((name, b), _PORT if (name, b) in fx.port_driven else None) for b in unread]
            net_bits = [b for b, src in zip(unread, srcs) if src not in (None, CONST)]
            if (None not in srcs and (anon or (net_bits and len(net_bits) == len(unread)))
                    and all(nets.find((mname, name, b)) in read_nets for b in net_bits)):
                out.append(Waiver("UNUSEDSIGNAL", d.line, "alias", name))
            elif anon and name in fx.arith and len(unread) < d.width:
                out.append(Waiver("UNUSEDSIGNAL", d.line, "full-width-result", name))
            elif sub and name == "rst" and d.kind == "input" and len(unread) == d.width:
                out.append(Waiver("UNUSEDSIGNAL", d.line, "domain-reset", name))
    return sorted(out, key=lambda w: (w.line, w.code))


def waiver_config(waivers: Iterable[Waiver], verilog_name: str) -> str:
    """A Verilator configuration file (``.vlt``) waiving each of ``waivers`` on its line of
    the file ``verilog_name`` (e.g. ``"eqprop_core.v"``), with the reasons in comments.
    Pass it to Verilator before the Verilog."""
    by_code: dict[str, list[int]] = {}
    for w in waivers:
        by_code.setdefault(w.code, []).append(w.line)
    # (a comment whose first word is "verilator" would be read as a pragma)
    out = [f"// Lint waivers for the lines of {verilog_name} where the Verilog generator (Amaranth) "
           "writes what draws the warning,", "// one entry per line, none file-wide (eqprop.hdl.lint; "
           "docs/rtl.md, \"Lint\"). Each code's reason:"]
    out += [f"//   {code}: {AMARANTH_WAIVERS[code]}" for code in sorted(by_code)]
    out.append("`verilator_config")
    pattern = f"*{verilog_name}"
    for code in sorted(by_code):
        for lo, hi in _ranges(sorted(set(by_code[code]))):
            lines = f"{lo}" if lo == hi else f"{lo}-{hi}"
            out.append(f'lint_off -rule {code} -file "{pattern}" -lines {lines}')
    return "\n".join(out) + "\n"


def _ranges(lines: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in lines:
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def lint_counts(raw_warnings, waivers: Iterable[Waiver]) -> dict:
    """Per code: the raw count (no waivers), the waived count (raw warnings on a waived line
    of their code) and what remains; and the waived warnings per kind (:data:`KINDS`)."""
    kind = {(w.code, w.line): w.kind for w in waivers}
    raw = Counter(w.code for w in raw_warnings)
    off = Counter(w.code for w in raw_warnings if (w.code, w.line) in kind)
    by_kind = Counter(kind[(w.code, w.line)] for w in raw_warnings if (w.code, w.line) in kind)
    return {"raw": dict(sorted(raw.items())), "waived": dict(sorted(off.items())),
            "remaining": {c: raw[c] - off[c] for c in sorted(raw) if raw[c] > off[c]},
            "waived_by_kind": dict(sorted(by_kind.items()))}


def waive_inline(text: str, waivers: Iterable[Waiver]) -> str:
    """``text`` with each waiver as a ``/* verilator lint_off CODE */`` ...
    ``/* verilator lint_on CODE */`` pair around its line, on that line (the line numbers
    stay those of ``text``): the same waivers as :func:`waiver_config`, carried in the Verilog."""
    by_line: dict[int, set] = {}
    for w in waivers:
        by_line.setdefault(w.line, set()).add(w.code)
    lines = text.split("\n")
    for n, codes in by_line.items():
        line = lines[n - 1]
        body = line.lstrip()
        ind = line[:len(line) - len(body)]
        off = " ".join(f"/* verilator lint_off {c} */" for c in sorted(codes))
        on = " ".join(f"/* verilator lint_on {c} */" for c in sorted(codes))
        lines[n - 1] = f"{ind}{off} {body} {on}"
    return "\n".join(lines)


def counts_table(counts: dict) -> str:
    """:func:`lint_counts` (or the manifest's ``lint``) as a small text table."""
    codes = sorted(counts["raw"])
    rows = [f"{'code':<16}{'raw':>8}{'waived':>8}{'remaining':>10}"]
    for c in codes:
        rows.append(f"{c:<16}{counts['raw'][c]:>8}{counts['waived'].get(c, 0):>8}"
                    f"{counts['remaining'].get(c, 0):>10}")
    tot = [sum(counts[k].values()) for k in ("raw", "waived", "remaining")]
    rows.append(f"{'total':<16}{tot[0]:>8}{tot[1]:>8}{tot[2]:>10}")
    return "\n".join(rows)


def module_at(text: str):
    """A function from a line number of ``text`` to the name of the module it lies in (""
    outside every module), e.g. to say which unit a remaining warning is in."""
    import bisect

    starts, names = [0], [""]
    for n, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*module\s+\\?(\S+?)\s*\(", line)
        if m:
            starts.append(n)
            names.append(m.group(1))
    return lambda line: names[bisect.bisect_right(starts, line) - 1]

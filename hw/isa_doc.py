"""Generate docs/isa.md from the ISA module: encodings, semantics and cycle formulas.

The field tables come from the layouts in :mod:`nmsat.hw.isa`, the timing text from the
formulas in :mod:`nmsat.hw.isa_timing`; only the prose (field meanings and the semantics as
loop nests) is written here. ``nmsat isa doc --out docs/isa.md`` regenerates the page and
tests/hw/test_isa_doc.py fails when the committed page is stale (STYLE.md G2, G18).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from . import isa_timing
from .isa import (
    HEADER,
    INSTR_BITS,
    OPCODE_QUEUE,
    PAYLOADS,
    Buffer,
    Dataflow,
    Direction,
    Opcode,
    Queue,
    VecOp,
)

__all__ = ["FIELD_DOCS", "SEMANTICS", "render"]

#: Meaning of every payload field, by name (the same name means the same thing everywhere).
FIELD_DOCS: Mapping[str, str] = {
    "queue": "queue the NOP occupies for one cycle (token plumbing)",
    "buffer": "on-chip buffer read or written",
    "buf_addr": "first buffer element",
    "dram_addr": "external memory byte address of the first element",
    "dram_stride": "elements between the starts of consecutive rows in external memory",
    "rows": "rows of the 2-D block",
    "cols": "columns of the 2-D block",
    "planes": "planes of rows (DMA; default 1)",
    "plane_stride": "elements between the starts of consecutive planes in external memory",
    "blocks": "blocks of planes (DMA; default 1)",
    "block_stride": "elements between the starts of consecutive blocks in external memory",
    "buf_pad": "bits 0, 1, 2: round the buffer's row, plane, block pitch up to odd",
    "n": "N of the N:M pattern (n == m: dense)",
    "m": "M of the N:M pattern, 1, 2, 4, 8 or 16",
    "dataflow": "WS (weight-stationary) or OS (output-stationary); timing only",
    "accumulate": "1: add to ACC; 0: overwrite",
    "b_trans": "1: B is stored transposed, [cols, depth]",
    "interleave": "independent accumulations interleaved (1 = off); timing only",
    "depth": "reduction length K before compression (multiple of m)",
    "a_addr": "A in WGT, row-major [rows, depth*n/m]; its indices at the same IDX address",
    "b_addr": "B in ACT, row-major [depth, cols]",
    "c_addr": "C in ACC, row-major [rows, cols]",
    "a_pad": "1: A's rows start `Kc | 1` elements apart (odd pitch); 0: packed",
    "b_pad": "1: B's rows start `(depth if b_trans else cols) | 1` apart (odd pitch)",
    "c_pad": "1: C's rows start `cols | 1` elements apart (odd pitch); 0: packed",
    "direction": "FF: groups along cols; BP: groups along rows, output transposed",
    "src_addr": "FP32 master weights in VEC, row-major [rows, cols]",
    "dst_addr": "destination element",
    "op": "element-wise operation",
    "length": "elements processed",
    "dst_buf": "destination buffer (FP16 buffers round with to_fp16)",
    "src0_buf": "first source buffer (FP16 sources widen exactly)",
    "src0_addr": "first source element",
    "src1_buf": "second source buffer",
    "src1_addr": "second source element",
    "imm": "FP32 bit pattern of the SCALE factor",
    "w_addr": "FP32 master weights in VEC (updated in place)",
    "v_addr": "FP32 momentum in VEC (updated in place)",
    "g_addr": "FP32 weight gradient in ACC",
    "idx_addr": "FF indices in IDX giving the N:M mask of the SR-STE term",
    "hp_addr": "lr, momentum, weight_decay, srste_lambda: four FP32 words in VEC",
}

_DMA_COMMON = """\
E = element_bytes(buffer)          # ACT, WGT: 2; IDX: 1; ACC, VEC: 4
odd = lambda size, bit: size | 1 if buf_pad >> bit & 1 else size
rp = odd(cols, 0)                  # buffer side: loop order, each level packed, pitches
pp = odd(rows * rp, 1)             # rounded up to odd where buf_pad says
bp = odd(planes * pp, 2)
for k in range(blocks):
    for p in range(planes):
        for r in range(rows):
            for c in range(cols):
                d = dram_addr + (k*block_stride + p*plane_stride + r*dram_stride + c) * E
                b = buf_addr + k*bp + p*pp + r*rp + c
"""

#: Semantics of each opcode as a loop nest (functions from nmsat.hw.numerics).
SEMANTICS: Mapping[Opcode, str] = {
    Opcode.NOP: "pass                               # one cycle on `queue`, then push tokens\n",
    Opcode.LOAD: _DMA_COMMON
    + "                buffer[b] = DRAM[d : d + E]    # bits copied unchanged\n",
    Opcode.STORE: _DMA_COMMON
    + "                DRAM[d : d + E] = buffer[b]    # bits copied unchanged\n",
    Opcode.GEMM: """\
Kc = depth * n // m                # compressed reduction length
pitch = lambda length, pad: length | 1 if pad else length
lda, ldc = pitch(Kc, a_pad), pitch(cols, c_pad)
ldb = pitch(depth if b_trans else cols, b_pad)
for i in range(rows):
    for j in range(cols):
        acc = ACC[c_addr + i*ldc + j] if accumulate else +0.0
        for q in range(Kc):        # increasing k: the one accumulation order
            k = (q // n) * m + IDX[a_addr + i*lda + q] if n < m else q
            b = ACT[b_addr + j*ldb + k] if b_trans else ACT[b_addr + k*ldb + j]
            acc = fp32_add(acc, fp16_mul_fp32(WGT[a_addr + i*lda + q], b))
        ACC[c_addr + i*ldc + j] = acc
""",
    Opcode.PRUNE: """\
# FF: groups of m along a row; BP: groups of m down a column, written transposed
outer, inner = (rows, cols) if direction == FF else (cols, rows)
for o in range(outer):
    for g in range(inner // m):
        def src(u):                # element u of the group, FP32
            r, c = (o, g*m + u) if direction == FF else (g*m + u, o)
            return VEC[src_addr + r*cols + c]
        # n largest |w| (sign-cleared bit patterns as unsigned integers), ties to the
        # lower index, listed in increasing index order
        keep = top_n([src(u) for u in range(m)], n)
        for t, u in enumerate(keep):
            e = dst_addr + o * (inner*n // m) + g*n + t
            WGT[e] = to_fp16(src(u))
            IDX[e] = u
""",
    Opcode.VEC: """\
for e in range(length):
    x0 = read(src0_buf, src0_addr + e)    # FP16 buffers: widened exactly, subnormals -> 0
    x1 = read(src1_buf, src1_addr + e)    # RELU_GRAD and ADD only
    y = {COPY: x0, RELU: relu(x0), RELU_GRAD: relu_grad(x0, x1),
         ADD: fp32_add(x0, x1), SCALE: fp32_mul(imm, x0)}[op]
    write(dst_buf, dst_addr + e, y)       # FP16 buffers: to_fp16(y)
""",
    Opcode.UPDATE: """\
lr, momentum, weight_decay, srste_lambda = VEC[hp_addr : hp_addr + 4]
for g in range(length // m):
    kept = {IDX[idx_addr + g*n + t] for t in range(n)} if n < m else set(range(m))
    for u in range(m):
        e = g*m + u
        VEC[w_addr + e], VEC[v_addr + e] = sgd_update(
            VEC[w_addr + e], ACC[g_addr + e], VEC[v_addr + e], u in kept,
            lr, momentum, weight_decay, srste_lambda)
""",
    Opcode.HALT: "stop fetching; `done` rises when every queue is empty and idle\n",
}

#: Rules of an opcode beyond its fields, rendered after its semantics.
NOTES: Mapping[Opcode, str] = {
    Opcode.GEMM: """\
**Bank conflicts.** The STCE reads one vector of each operand per cycle from the banked
buffers (element `e` of a buffer lives in bank `e % banks`, `banks` from `isa.bank_count`:
`max(R, C) * m_max` for ACT, R for WGT and IDX, C for ACC, each at least `buffer_banks`).
A GEMM is legal only if the distinct elements of every such vector lie in distinct banks
(`isa.gemm_bank_conflict`; the compiler pads the rows it reads across to odd pitches, which
always passes); otherwise it is illegal (`ILLEGAL_FIELD`, after the range checks). The
vectors, with V elements:

- WS, B unless `b_trans`: V = min(depth, groups * m) consecutive k, `ldb` apart, where one
  fold's R compressed positions span groups = ceil((n - gcd(R, n) + R) / n) N:M groups (R
  and m = 1 for dense);
- WS, C: min(C, rows) rows of one output block, `ldc` apart;
- OS, B: min(C, cols) consecutive j (`ldb` apart with `b_trans`) times the m k of one
  group (`ldb` apart without `b_trans`; 1 k for dense);
- OS, A and its indices: min(R, rows) rows of one fold, `lda` apart.

A run of V elements `s` apart hits V distinct banks iff V <= banks / gcd(s, banks); the
OS N:M vector (x consecutive elements times y rows `s` apart) iff no `dy * s` with
0 < dy < y lies within x - 1 of a multiple of `banks`.
""",
}

_TIMING: Mapping[Opcode, list[Callable[..., int]]] = {
    Opcode.LOAD: [isa_timing.dma_cycles],
    Opcode.STORE: [isa_timing.dma_cycles],
    Opcode.GEMM: [isa_timing.gemm_ws_cycles, isa_timing.gemm_os_cycles],
    Opcode.PRUNE: [isa_timing.prune_cycles, isa_timing.sore_pipeline_cycles],
    Opcode.VEC: [isa_timing.vec_cycles, isa_timing.vec_pipeline_cycles],
    Opcode.UPDATE: [isa_timing.update_cycles, isa_timing.update_pipeline_cycles],
}

_INTRO = f"""\
# The nmsat instruction set

<!-- Generated by `nmsat isa doc --out docs/isa.md` from nmsat/hw/isa.py, isa_timing.py and
isa_doc.py. Do not edit: tests/hw/test_isa_doc.py fails when this page is stale. -->

Every instruction is one {INSTR_BITS}-bit word, stored little endian in 32 bytes. Bits
[0, {HEADER.size}) are the header; the payload starts at bit {HEADER.size} and its layout depends
on the opcode. Unused payload bits and the reserved header bits must be zero; an undefined
opcode or enum value, a set unused bit, or a field that breaks its opcode's rules is an
**illegal instruction** (the model and the RTL stop with an error status naming the pc).
Buffer addresses count elements of the buffer's type; external memory addresses count bytes.

Numbers follow [numerics.md](numerics.md): FP16 operands, exact FP16 x FP16 products, FP32
accumulation with round-to-nearest-even in increasing k, subnormals flushed to zero.
Symbols in the formulas: R = `array_rows`, C = `array_cols`, L = `adder_latency`,
Lm = `multiplier_latency`, B = `dram_bytes_per_cycle`, D = `dram_latency_cycles`
(SATParams, `configs/*.yaml`).
"""

_QUEUES = """\
## Queues, tokens and the cycle count

Five queues run concurrently, one unit each: {queues}. Opcode to queue: {mapping}; NOP names
its queue; HALT belongs to the fetch unit. The compiler places every dependency as a token
(offline scheduling); nothing is scheduled dynamically. The rules, binding for the Python
model and the RTL alike (cycle numbers count from 0, the first fetch after `start`):

1. **Fetch.** One instruction per cycle, in program order: instruction i is fetched at
   `f_i >= f_(i-1) + 1`. Fetch stalls while the instruction's queue FIFO already holds
   `queue_depths[queue]` instructions that have not started (a FIFO slot frees in the cycle
   its instruction starts).
2. **Start.** Instruction i starts at the first cycle `s_i >= f_i + 1` at which its unit is
   free (the previous instruction of the queue has completed) and, for every queue q in its
   `pop` mask, a token from q is waiting; it takes those tokens as it starts. LOAD and STORE
   share the one memory port: a DMA instruction also waits until no DMA instruction of the
   other queue is running; when both could start in the same cycle, the LOAD goes first.
3. **Complete.** It completes at `c_i = s_i + cycles_i`, with `cycles_i` from the formulas
   below; at `c_i` its unit is free again and it gives one token to every queue in its `push`
   mask, which an instruction may take in that same cycle.
4. **Tokens.** At most `token_depth` tokens wait between an ordered pair of queues; pushing
   one more is an error. Tokens start at zero and the compiler leaves none behind.
5. **Halt.** HALT at `f_h` stops fetching; `done` rises at `max(f_h + 1, max_i c_i)`, which
   is the program's cycle count.
6. **Errors.** An illegal instruction raises `error` in the cycle after its fetch, with its
   pc (the instruction index) and the cause; a run in which no queue can ever start again
   (a token deadlock) raises `error` with the pc of the oldest waiting instruction.

The external memory of the simulators has a fixed latency D and a fixed bandwidth B (bytes
per cycle) and serves requests in issue order; with rule 2 only one transfer uses it at a
time, so the DMA formula holds exactly. On a real board with DDR4 the counts differ and are
reported separately as measured (DESIGN.md section 9).
"""


def _enum_table(enum_cls: type) -> str:
    values = ", ".join(f"`{member.name}` = {member.value}" for member in enum_cls)  # type: ignore[attr-defined]
    return f"- `{enum_cls.__name__}`: {values}\n"


def _field_type(shape: object) -> str:
    return f"`{shape.__name__}`" if isinstance(shape, type) else "unsigned"


def _timing_text(func: Callable[..., int]) -> str:
    doc = inspect.getdoc(func) or ""
    return f"- `{func.__name__}`: " + " ".join(doc.split()) + "\n"


def render() -> str:
    """Return the Markdown text of docs/isa.md."""
    out = [_INTRO, "\n## Header\n\n| field | bits | type |\n|---|---|---|\n"]
    for name, field in HEADER:
        out.append(
            f"| `{name}` | [{field.offset}, {field.offset + field.width}) "
            f"| {_field_type(field.shape)} |\n"
        )
    out.append(
        "\n`pop` and `push` are masks over the queues: bit q refers to `Queue(q)`.\n"
        "\n## Enumerations\n\n"
    )
    for enum_cls in (Opcode, Queue, Buffer, Dataflow, Direction, VecOp):
        out.append(_enum_table(enum_cls))
    mapping = ", ".join(f"{op.name} -> {q.name.lower()}" for op, q in OPCODE_QUEUE.items())
    out.append("\n" + _QUEUES.format(queues=", ".join(q.name.lower() for q in Queue),
                                     mapping=mapping))  # fmt: skip
    for opcode in Opcode:
        out.append(f"\n## {opcode.name} (opcode {opcode.value})\n\n")
        layout = PAYLOADS.get(opcode)
        if layout is not None:
            out.append("| field | payload bits | type | meaning |\n|---|---|---|---|\n")
            for name, field in layout:
                out.append(
                    f"| `{name}` | [{field.offset}, {field.offset + field.width}) "
                    f"| {_field_type(field.shape)} | {FIELD_DOCS[name]} |\n"
                )
            out.append("\n")
        out.append("Semantics:\n\n```python\n" + SEMANTICS[opcode] + "```\n\n")
        if opcode in NOTES:
            out.append(NOTES[opcode] + "\n")
        timing = _TIMING.get(opcode)
        if timing is None:
            out.append("Cycles: 1.\n")
        else:
            out.append("Cycles:\n\n" + "".join(_timing_text(func) for func in timing))
    return "".join(out)

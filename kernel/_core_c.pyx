"""Conflux's merge core, compiled: the twin of ``_core_py`` written for the machine.

Same names, same record bytes, same return values and the same exceptions (with the same
messages) as the pure-Python reference ``_core_py``, which is the specification: read it for
the *why* of every rule. The byte layouts are in ``FORMAT.md``; the typed contract of the
kernels is ``_core_c.pxd``.

How it is fast:

* Records are read in place: a kernel takes views (pointer + length) into the record's bytes
  and into the operation's strings (``PyUnicode_AsUTF8AndSize``, no encoding copy), and
  writes its result once, into a bytes object of the right size.
* Register merges (lww, max, min, the entity marker) compare the record's header with the
  operation's fields directly; when the record wins, the very same record object comes back
  and no candidate bytes are built.
* Sets are decoded into small C arrays sorted by op id / element bytes (Python bytes order:
  ``memcmp`` then length), merged by walking sorted runs, and encoded in one pass.

Malformed records behave as in the reference: a header that runs past the end raises
``struct.error`` with ``struct``'s own message; a length that runs past the end truncates the
slice, as Python slicing does; a repeated op id or element keeps the last one read, as the
reference's dicts do.
"""

from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy, memset

# _layout's constants as compile-time enums (K_*, T_*, FL_*, TAG_*, V_*, E_*, every size and
# offset: _layout.c_constants()), from the declaration file setup.py generates from it.
from conflux.kernel._layout cimport *

import struct as _struct

import msgpack

from conflux.errors import ClockSkewError, PreconditionFailed, ValidationError
# The same constants under their Python names, exported as the pure-Python twin exports them.
from conflux.kernel._layout import (
    ADD_ELEMENTS, DELETE_ENTITY, ENTITY, F_ABSENT, F_CUTOFF, F_OVERRIDE, FORMAT_VERSION, GROW,
    LWW, MAX, MIN, MOVE_ENTITY, NUM_FLOAT, NUM_INT, NUM_NONE, OP_NAMES, OP_TYPES, ORSET, PLACE,
    PROMOTE, REMOVE_ELEMENTS, RESOLVE, REVIEW, SET_FIELD, STRATEGY_KINDS, UNSET_FIELD, VALUE_BOOL,
    VALUE_DURATION, VALUE_ELEMENTS, VALUE_FLOAT, VALUE_INT, VALUE_KINDS, VALUE_MAP,
    VALUE_OTHER, VALUE_STRING)

cdef extern from "Python.h":
    bint PyBytes_Check(object o)
    bint PyBytes_CheckExact(object o)
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    object PyBytes_FromStringAndSize(const char* v, Py_ssize_t n)
    bint PyUnicode_CheckExact(object o)
    bint PyUnicode_Check(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    bint PyList_Check(object o)
    bint PyTuple_Check(object o)
    bint PyDict_Check(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    const char* _AsUTF8AndSize_noexc "PyUnicode_AsUTF8AndSize" (object o, Py_ssize_t* size)
    bint PyFloat_CheckExact(object o)
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)
    bint PyLong_Check(object o)
    bint PyLong_CheckExact(object o)
    long long PyLong_AsLongLong(object o)
    unsigned long long PyLong_AsUnsignedLongLong(object o)
    double PyFloat_AsDouble(object o)
    bint PyIndex_Check(object o)
    object PyNumber_Index(object o)
    bint PyList_CheckExact(object o)
    bint PyTuple_CheckExact(object o)
    Py_ssize_t PyList_GET_SIZE(object o)


__all__ = [
    "IMPLEMENTATION", "FORMAT_VERSION",
    "LWW", "MAX", "MIN", "REVIEW", "ORSET", "GROW", "ENTITY", "PLACE", "STRATEGY_KINDS",
    "SET_FIELD", "UNSET_FIELD", "ADD_ELEMENTS", "REMOVE_ELEMENTS", "DELETE_ENTITY", "RESOLVE",
    "PROMOTE", "MOVE_ENTITY", "OP_TYPES", "OP_NAMES",
    "hlc_pack", "hlc_unpack", "hlc_format", "hlc_parse", "hlc_tick", "hlc_receive",
    "Op", "merge_op", "merge_ops", "join", "resolve_record", "review_candidates", "tree_replay",
    "compact_record", "record_kind", "encode_entry", "decode_entry",
    "prepare_ops", "stamp_ops", "apply_batch", "encode_chunks", "entity_blobs",
    "value_extent",
]

IMPLEMENTATION = "c"

cdef object _StructError = _struct.error
cdef object _unpackb = msgpack.unpackb
cdef object _Packer = msgpack.Packer

cdef enum:
    U8_MAX = 0xFF
    U16_MAX = 0xFFFF
    COUNTER = 0xFFFF

cdef extern from *:
    """
    #define CFX_U32_MAX ((Py_ssize_t)0xFFFFFFFF)
    #define CFX_MS_LIMIT (((unsigned long long)1) << 48)
    #define CFX_FAST_LIMIT (((unsigned long long)1) << 62)
    #define CFX_INT32_LOW (-2147483647LL - 1)
    """
    const Py_ssize_t U32_MAX "CFX_U32_MAX"
    const unsigned long long MS_LIMIT "CFX_MS_LIMIT"
    const unsigned long long FAST_LIMIT "CFX_FAST_LIMIT"
    const long long INT32_LOW "CFX_INT32_LOW"

cdef const uchar* _EMPTY = <const uchar*>b""


# --------------------------------------------------------------------------------------------
# Raw little-endian access, Python bytes order, and struct's own errors.

cdef inline uint16_t ld16(const uchar* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))


cdef inline uint32_t ld32(const uchar* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | \
        (<uint32_t>p[3] << 24)


cdef inline uint64_t ld64(const uchar* p) noexcept nogil:
    return (<uint64_t>ld32(p)) | ((<uint64_t>ld32(p + 4)) << 32)


cdef inline double ldf64(const uchar* p) noexcept nogil:
    cdef uint64_t u = ld64(p)
    cdef double d
    memcpy(&d, &u, 8)
    return d


cdef inline void st16(uchar* p, uint16_t v) noexcept nogil:
    p[0] = <uchar>v
    p[1] = <uchar>(v >> 8)


cdef inline void st32(uchar* p, uint32_t v) noexcept nogil:
    p[0] = <uchar>v
    p[1] = <uchar>(v >> 8)
    p[2] = <uchar>(v >> 16)
    p[3] = <uchar>(v >> 24)


cdef inline void st64(uchar* p, uint64_t v) noexcept nogil:
    st32(p, <uint32_t>v)
    st32(p + 4, <uint32_t>(v >> 32))


cdef inline void stf64(uchar* p, double d) noexcept nogil:
    cdef uint64_t u
    memcpy(&u, &d, 8)
    st64(p, u)


cdef int bytes_cmp(const uchar* a, Py_ssize_t na, const uchar* b, Py_ssize_t nb) noexcept nogil:
    """Python's bytes order: memcmp over the common prefix, then the shorter first."""
    cdef Py_ssize_t m = na if na < nb else nb
    cdef int c
    if m > 0:
        c = memcmp(a, b, <size_t>m)
        if c != 0:
            return 1 if c > 0 else -1
    return (na > nb) - (na < nb)


cdef inline int u64_cmp(uint64_t a, uint64_t b) noexcept nogil:
    return (a > b) - (a < b)


cdef inline void take(const uchar* base, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t ln,
                      const uchar** out, Py_ssize_t* outn) noexcept nogil:
    """``base[pos:pos + ln]`` with Python's slice clamping (a slice past the end is short)."""
    cdef Py_ssize_t s = pos if pos < n else n
    cdef Py_ssize_t e = pos + ln
    if e > n:
        e = n
    out[0] = base + s
    outn[0] = e - s if e > s else 0


cdef int _short(Py_ssize_t pos, Py_ssize_t size, Py_ssize_t n) except -1:
    raise _StructError(f"unpack_from requires a buffer of at least {pos + size} bytes for "
                       f"unpacking {size} bytes at offset {pos} (actual buffer size is {n})")


cdef inline int need(Py_ssize_t pos, Py_ssize_t size, Py_ssize_t n) except -1:
    if n - pos < size:
        return _short(pos, size, n)
    return 0


cdef int _ubyte_error() except -1:
    raise _StructError("ubyte format requires 0 <= number <= 255")


cdef int _ushort_error() except -1:
    raise _StructError("ushort format requires 0 <= number <= 65535")


cdef int _uint_error() except -1:
    raise _StructError("'I' format requires 0 <= number <= 4294967295")


cdef inline const uchar* bptr(object b) noexcept:
    return <const uchar*>PyBytes_AS_STRING(b)


cdef inline object new_bytes(const uchar* p, Py_ssize_t n):
    return PyBytes_FromStringAndSize(<const char*>p, n)


cdef inline object utf8_str(const uchar* p, Py_ssize_t n):
    return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)


cdef object _buffer(object rec):
    """The record as exact bytes (a copy only when handed another bytes-like object)."""
    if PyBytes_CheckExact(rec):
        return rec
    if PyBytes_Check(rec):
        return bytes(rec)
    return bytes(memoryview(rec))


cdef object utf8_of(object s, const uchar** p, Py_ssize_t* n):
    """View ``s.encode()`` without copying a str; returns the object that keeps it alive."""
    cdef object b
    if PyUnicode_CheckExact(s):
        p[0] = <const uchar*>PyUnicode_AsUTF8AndSize(s, n)
        return s
    b = s.encode()
    if not PyBytes_Check(b):
        raise TypeError(f"encode() returned {type(b).__name__}, not bytes")
    p[0] = bptr(b)
    n[0] = PyBytes_GET_SIZE(b)
    return b


cdef object bytes_of(object v, const uchar** p, Py_ssize_t* n):
    """View a value given as bytes (another bytes-like object is copied, like ``b"" + v``)."""
    if not PyBytes_CheckExact(v):
        v = b"" + v
    p[0] = bptr(v)
    n[0] = PyBytes_GET_SIZE(v)
    return v


cdef inline int _kind_of(object rec) except? -1:
    """``rec[1]``."""
    if PyBytes_CheckExact(rec) and PyBytes_GET_SIZE(rec) >= 2:
        return bptr(rec)[REC_KIND]
    return rec[1]


# --------------------------------------------------------------------------------------------
# Hybrid logical clock. Exact ints in range take a C path; anything else runs the reference's
# arithmetic on Python ints, so odd inputs give the reference's results and errors.

_COUNTER = 0xFFFF
_HLC_MAX = (1 << 64) - 1


cdef bint _u64(object o, uint64_t* out) noexcept:
    """Whether ``o`` is an exact int in [0, 2**64); its value in ``out``."""
    cdef unsigned long long v
    if not PyLong_CheckExact(o):
        return False
    v = PyLong_AsUnsignedLongLong(o)
    if v == <unsigned long long>-1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        return False
    out[0] = v
    return True


def hlc_pack(ms, counter):
    return (ms << 16) | counter


def hlc_unpack(h):
    return h >> 16, h & _COUNTER


def hlc_format(h):
    """``hlc:<wall ms>.<counter, 4 digits>`` (the counter may exceed 4 digits when large)."""
    cdef uint64_t v
    cdef char buf[48]
    cdef int n
    if _u64(h, &v):
        n = snprintf(buf, sizeof(buf), "hlc:%llu.%04u", <unsigned long long>(v >> 16),
                     <unsigned int>(v & COUNTER))
        return PyUnicode_DecodeASCII(buf, n, NULL)
    return f"hlc:{h >> 16}.{h & _COUNTER:04d}"


def hlc_parse(value):
    """Read an HLC given as its text form or as the packed 64-bit integer."""
    if isinstance(value, bool):
        raise ValidationError(f"hlc: expected 'hlc:<ms>.<counter>' or an integer, got {value!r}",
                              field="hlc")
    if isinstance(value, int):
        if 0 <= value <= _HLC_MAX:
            return value
        raise ValidationError(f"hlc: {value} is outside the 64-bit range", field="hlc")
    if isinstance(value, str) and value.startswith("hlc:"):
        ms, dot, counter = value[4:].partition(".")
        if (dot and ms.isascii() and ms.isdigit() and counter.isascii() and counter.isdigit()
                and len(ms) <= 15 and len(counter) <= 5):
            ms_i, c_i = int(ms), int(counter)
            if ms_i < (1 << 48) and c_i <= _COUNTER:
                return (ms_i << 16) | c_i
    raise ValidationError(f"hlc: expected 'hlc:<ms>.<counter>' or an integer, got {value!r}",
                          field="hlc")


def hlc_tick(last, wall_ms):
    """The clock after a local event (stamping an operation)."""
    return _hlc_tick(last, wall_ms)


def hlc_receive(last, remote, wall_ms, max_offset_ms):
    """The clock after receiving an operation stamped ``remote`` elsewhere; a timestamp more
    than ``max_offset_ms`` ahead of our wall clock is refused."""
    return _hlc_receive(last, remote, wall_ms, max_offset_ms)


cdef object _hlc_tick(object last, object wall_ms):
    cdef uint64_t l, w, ms
    if _u64(last, &l) and _u64(wall_ms, &w) and w < MS_LIMIT:
        ms = l >> 16
        if w > ms:
            return w << 16
        if (l & COUNTER) != COUNTER:
            return l + 1
        if ms + 1 < MS_LIMIT:
            # NOTE: counter overflow borrows the next millisecond (see _core_py).
            return (ms + 1) << 16
    ms_o = last >> 16
    if wall_ms > ms_o:
        return wall_ms << 16
    if last & _COUNTER == _COUNTER:
        return (ms_o + 1) << 16
    return last + 1


cdef object _hlc_receive(object last, object remote, object wall_ms, object max_offset_ms):
    cdef uint64_t l, r, w, off, lms, rms, ms, c
    if (_u64(last, &l) and _u64(remote, &r) and _u64(wall_ms, &w) and _u64(max_offset_ms, &off)
            and w < FAST_LIMIT and off < FAST_LIMIT):
        rms = r >> 16
        if rms > w + off:
            _clock_skew(remote, wall_ms, max_offset_ms)
        lms = l >> 16
        ms = lms if lms > rms else rms
        if w > ms:
            ms = w
        if ms == lms and ms == rms:
            c = (l & COUNTER) if (l & COUNTER) > (r & COUNTER) else (r & COUNTER)
            c += 1
        elif ms == lms:
            c = (l & COUNTER) + 1
        elif ms == rms:
            c = (r & COUNTER) + 1
        else:
            c = 0
        if c > COUNTER:
            ms += 1
            c = 0
        if ms < MS_LIMIT:
            return (ms << 16) | c
        return (<object>ms << 16) | c
    rms_o = remote >> 16
    if rms_o > wall_ms + max_offset_ms:
        _clock_skew(remote, wall_ms, max_offset_ms)
    lms_o = last >> 16
    ms_o = max(lms_o, rms_o, wall_ms)
    if ms_o == lms_o and ms_o == rms_o:
        c_o = max(last & _COUNTER, remote & _COUNTER) + 1
    elif ms_o == lms_o:
        c_o = (last & _COUNTER) + 1
    elif ms_o == rms_o:
        c_o = (remote & _COUNTER) + 1
    else:
        c_o = 0
    if c_o > _COUNTER:
        ms_o, c_o = ms_o + 1, 0
    return (ms_o << 16) | c_o


cdef int _clock_skew(object remote, object wall_ms, object max_offset_ms) except -1:
    raise ClockSkewError(
        f"hlc: {hlc_format(remote)} is {(remote >> 16) - wall_ms} ms ahead of this store's "
        f"clock (max_clock_offset is {max_offset_ms} ms)", field="hlc")


# --------------------------------------------------------------------------------------------
# Operations


cdef class Op:
    """One operation as the core sees it: validated, normalised, keyed.

    The engine fills the identity and content; ``merge_op`` fills the bound context
    (``epoch``, ``base``, ``observed``) unless ``bound`` is already true, and ``prev``.
    ``type``, ``kind``, ``num_tag`` are C ints and ``hlc``, ``epoch``, ``entity_epoch`` 64-bit
    unsigned ints, so a value outside those ranges is refused when it is assigned.
    """

    def __cinit__(self):
        self.op_id = ""
        self.type = T_SET_FIELD
        self.env = ""
        self.entity = ""
        self.field = ""
        self.value = None
        self.vbytes = b""
        self.elements = None
        self.ebytes = None
        self.actor = ""
        self.actor_class = ""
        self.intent = ""
        self.hlc = 0
        self.base = None
        self.observed = None
        self.override = False
        self.epoch = 0
        self.bound = False
        self.prev = None
        self.signature = None
        self.key_id = None
        self.children = None
        self.kind = K_LWW
        self.num_tag = TAG_NONE
        self.key = b""
        self.entity_epoch = 0
        self.seq = 0

    def __repr__(self):
        return (f"Op({self.op_id!r}, {OP_NAMES.get(self.type)}, {self.env}:{self.entity}."
                f"{self.field}, hlc={hlc_format(self.hlc)})")


cdef inline Op _as_op(object o):
    if not isinstance(o, Op):
        raise TypeError(f"expected a conflux core Op, got {type(o).__name__}")
    return <Op>o


# --------------------------------------------------------------------------------------------
# Registers: lww, max, min, and the entity delete marker.

cdef int reg_load(Reg* r, const uchar* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t alen, olen, pos = REG_SIZE
    need(0, REG_SIZE, n)
    r.kind = p[REG_KIND]
    r.flags = p[REG_FLAGS]
    r.tag = p[REG_TAG]
    alen = p[REG_ALEN]
    olen = p[REG_OLEN]
    r.epoch = ld64(p + REG_EPOCH)
    r.hlc = ld64(p + REG_HLC)
    r.inum = 0
    r.fnum = 0.0
    if r.tag == TAG_INT:
        r.inum = <int64_t>ld64(p + REG_NUMBER)
    elif r.tag == TAG_FLOAT:
        r.fnum = ldf64(p + REG_NUMBER)
    r.cutoff = 0
    if r.flags & FL_CUTOFF:
        need(REG_SIZE, CUTOFF_SIZE, n)
        r.cutoff = ld64(p + REG_SIZE)
        pos = REG_SIZE + CUTOFF_SIZE
    take(p, n, pos, alen, &r.actor, &r.alen)
    take(p, n, pos + alen, olen, &r.oid, &r.olen)
    take(p, n, pos + alen + olen, n, &r.val, &r.vlen)
    return 0


cdef inline int i64_f64_cmp(int64_t i, double f) noexcept nogil:
    """Python's exact int-vs-float comparison; CMP_UNORDERED against a NaN."""
    cdef int64_t t
    cdef double frac
    if f != f:
        return CMP_UNORDERED
    if f >= 9223372036854775808.0:
        return -1
    if f < -9223372036854775808.0:
        return 1
    t = <int64_t>f
    if i != t:
        return -1 if i < t else 1
    frac = f - <double>t
    if frac > 0.0:
        return -1
    if frac < 0.0:
        return 1
    return 0


cdef inline int num_cmp(const Reg* a, const Reg* b) noexcept nogil:
    """Compare the numbers of two present max/min registers (int, float, or 0 untagged)."""
    cdef int c
    if a.tag == TAG_FLOAT:
        if b.tag == TAG_FLOAT:
            if a.fnum != a.fnum or b.fnum != b.fnum:
                return CMP_UNORDERED
            return (a.fnum > b.fnum) - (a.fnum < b.fnum)
        c = i64_f64_cmp(b.inum, a.fnum)
        return c if c == CMP_UNORDERED else -c
    if b.tag == TAG_FLOAT:
        return i64_f64_cmp(a.inum, b.fnum)
    return (a.inum > b.inum) - (a.inum < b.inum)


cdef int reg_cmp(const Reg* a, const Reg* b) noexcept nogil:
    """The register order of ``_core_py._register_order`` for two registers of one kind (or
    two 4-field kinds): -1, 0, 1, or CMP_UNORDERED when a NaN decides."""
    cdef int c, pa, pb
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    if a.kind == K_MAX or a.kind == K_MIN:
        pa = 0 if a.flags & FL_ABSENT else 1
        pb = 0 if b.flags & FL_ABSENT else 1
        if pa != pb:
            return pa - pb
        if pa:
            c = num_cmp(a, b) if a.kind == K_MAX else num_cmp(b, a)
            if c != 0:
                return c
    if a.hlc != b.hlc:
        return 1 if a.hlc > b.hlc else -1
    c = bytes_cmp(a.actor, a.alen, b.actor, b.alen)
    if c != 0:
        return c
    return bytes_cmp(a.oid, a.olen, b.oid, b.olen)


cdef inline bint _reg_wide(int kind) noexcept nogil:
    return kind == K_MAX or kind == K_MIN


cdef tuple _reg_order_py(const Reg* r):
    """The reference's order tuple, for the rare join of registers of different kinds."""
    cdef object num = 0
    actor = new_bytes(r.actor, r.alen)
    oid = new_bytes(r.oid, r.olen)
    if _reg_wide(r.kind):
        present = 0 if r.flags & FL_ABSENT else 1
        if present:
            if r.tag == TAG_INT:
                num = r.inum
            elif r.tag == TAG_FLOAT:
                num = r.fnum
        return (r.epoch, present, num if r.kind == K_MAX else -num, r.hlc, actor, oid)
    return (r.epoch, r.hlc, actor, oid)


cdef int reg_ge(const Reg* a, const Reg* b) except -1:
    """``_register_order(a) >= _register_order(b)``."""
    cdef int c
    if a.kind == b.kind or not (_reg_wide(a.kind) or _reg_wide(b.kind)):
        c = reg_cmp(a, b)
        return c == 0 or c == 1
    return 1 if _reg_order_py(a) >= _reg_order_py(b) else 0


cdef object reg_pack(const Reg* r):
    cdef Py_ssize_t n = REG_SIZE + (CUTOFF_SIZE if r.cutoff else 0) + r.alen + r.olen + r.vlen
    cdef object out = PyBytes_FromStringAndSize(NULL, n)
    cdef uchar* w = <uchar*>PyBytes_AS_STRING(out)
    w[REG_VERSION] = VERSION
    w[REG_KIND] = <uchar>r.kind
    w[REG_FLAGS] = <uchar>((r.flags | FL_CUTOFF) if r.cutoff else (r.flags & ~FL_CUTOFF))
    w[REG_TAG] = <uchar>r.tag
    w[REG_ALEN] = <uchar>r.alen
    w[REG_OLEN] = <uchar>r.olen
    st16(w + REG_RESERVED, 0)
    st64(w + REG_EPOCH, r.epoch)
    st64(w + REG_HLC, r.hlc)
    if r.tag == TAG_INT:
        st64(w + REG_NUMBER, <uint64_t>r.inum)
    elif r.tag == TAG_FLOAT:
        stf64(w + REG_NUMBER, r.fnum)
    else:
        memset(w + REG_NUMBER, 0, REG_NUMBER_LEN)
    w += REG_SIZE
    if r.cutoff:
        st64(w, r.cutoff)
        w += CUTOFF_SIZE
    if r.alen:
        memcpy(w, r.actor, r.alen)
    w += r.alen
    if r.olen:
        memcpy(w, r.oid, r.olen)
    w += r.olen
    if r.vlen:
        memcpy(w, r.val, r.vlen)
    return out


cdef inline bint reg_visible(const Reg* r, uint64_t d) noexcept nogil:
    """``_core_py._register_visible``: a value stamped after the cutoff and the marker."""
    return (r.flags & FL_ABSENT) == 0 and r.hlc > r.cutoff and r.hlc > d


cdef object reg_join(object a_rec, Reg* a, Reg* b, object b_rec):
    """``_core_py._join_register`` of ``a`` (its bytes ``a_rec``) and ``b`` (its bytes
    ``b_rec``, or None to pack it if it wins): the greater, with the greater cutoff for
    max/min."""
    if reg_ge(a, b):
        if _reg_wide(a.kind) and b.cutoff > a.cutoff:
            a.cutoff = b.cutoff
            return reg_pack(a)
        return a_rec
    if _reg_wide(a.kind) and a.cutoff > b.cutoff:
        b.cutoff = a.cutoff
        return reg_pack(b)
    return b_rec if b_rec is not None else reg_pack(b)


cdef int64_t _i64_of(object v) except? -1:
    """``struct.pack('<q', v)``'s conversion, with its errors."""
    cdef long long x
    if not PyLong_Check(v):
        if not PyIndex_Check(v):
            raise _StructError("required argument is not an integer")
        v = PyNumber_Index(v)
    x = PyLong_AsLongLong(v)
    if x == -1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        raise _StructError("argument out of range")
    return x


cdef double _f64_of(object v) except? -1.0:
    """``struct.pack('<d', v)``'s conversion, with its error."""
    cdef double x = PyFloat_AsDouble(v)
    if x == -1.0 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        raise _StructError("required argument is not a float")
    return x


cdef int _check_base(Op op, object cur_id) except -1:
    expected = [cur_id.decode()] if cur_id is not None else []
    if sorted(op.base) != sorted(expected):
        raise PreconditionFailed(
            f"{op.entity}.{op.field}: base {list(op.base)} does not match the current "
            f"value's op {expected}", field=op.field)
    return 0


cdef object merge_register(object rec, Op op):
    cdef Reg cur
    cdef Reg cand
    cdef object buf, a_keep, o_keep, v_keep
    cdef bint visible = False
    cdef uint64_t d = op.entity_epoch
    cdef uint64_t cur_epoch = 0
    cdef uint64_t e
    if rec is not None:
        buf = _buffer(rec)
        reg_load(&cur, bptr(buf), PyBytes_GET_SIZE(buf))
        cur_epoch = cur.epoch
        visible = reg_visible(&cur, d)
    if not op.bound:
        if op.base is not None:
            _check_base(op, new_bytes(cur.oid, cur.olen) if visible else None)
        e = cur_epoch
        if op.override and op.hlc > e:
            e = op.hlc
        op.epoch = e
        op.bound = True
    op.prev = new_bytes(cur.val, cur.vlen) if visible else None

    # The candidate, as a view over the op's fields (packed only if it wins).
    a_keep = utf8_of(op.actor, &cand.actor, &cand.alen)
    o_keep = utf8_of(op.op_id, &cand.oid, &cand.olen)
    cand.kind = op.kind
    cand.epoch = op.epoch
    cand.hlc = op.hlc
    cand.cutoff = 0
    cand.inum = 0
    cand.fnum = 0.0
    if op.type == T_UNSET_FIELD:
        cand.flags = FL_ABSENT
        cand.tag = TAG_NONE
        cand.val = _EMPTY
        cand.vlen = 0
        if cand.kind != K_LWW:
            cand.cutoff = op.hlc  # a max/min unset raises the cutoff (see the reference)
    else:
        cand.flags = FL_OVERRIDE if op.override else 0
        cand.tag = op.num_tag
        if cand.tag == TAG_INT:
            cand.inum = _i64_of(op.value)
        elif cand.tag == TAG_FLOAT:
            cand.fnum = _f64_of(op.value)
        if cand.tag < 0 or cand.tag > U8_MAX:
            _ubyte_error()
    if cand.alen > U8_MAX or cand.olen > U8_MAX:
        _ubyte_error()
    if op.type != T_UNSET_FIELD:
        v_keep = bytes_of(op.vbytes, &cand.val, &cand.vlen)
    if rec is None:
        return reg_pack(&cand)
    # PERF: reg_join inlined; a write carries no cutoff, so the common case is two compares
    if reg_ge(&cur, &cand):
        if cand.cutoff > cur.cutoff and _reg_wide(cur.kind):
            cur.cutoff = cand.cutoff
            return reg_pack(&cur)
        return rec
    if cur.cutoff > cand.cutoff and _reg_wide(cur.kind):
        cand.cutoff = cur.cutoff
    return reg_pack(&cand)


cdef object merge_entity(object rec, Op op):
    cdef Reg cur
    cdef Reg cand
    cdef object buf, a_keep, o_keep
    op.bound = True
    op.prev = None
    a_keep = utf8_of(op.actor, &cand.actor, &cand.alen)
    o_keep = utf8_of(op.op_id, &cand.oid, &cand.olen)
    if cand.alen > U8_MAX or cand.olen > U8_MAX:
        _ubyte_error()
    cand.kind = K_ENTITY
    cand.flags = FL_ABSENT
    cand.tag = TAG_NONE
    cand.epoch = 0
    cand.cutoff = 0
    cand.hlc = op.hlc
    cand.inum = 0
    cand.fnum = 0.0
    cand.val = _EMPTY
    cand.vlen = 0
    if rec is None:
        return reg_pack(&cand)
    buf = _buffer(rec)
    reg_load(&cur, bptr(buf), PyBytes_GET_SIZE(buf))
    if reg_ge(&cur, &cand):
        return rec
    return reg_pack(&cand)


# --------------------------------------------------------------------------------------------
# Sorting and de-duplication of decoded entries (dict semantics: the last one read wins).

cdef int _cmp_tag_oid(const void* x, const void* y) noexcept nogil:
    cdef const STag* a = <const STag*>x
    cdef const STag* b = <const STag*>y
    cdef int c = bytes_cmp(a.oid, a.olen, b.oid, b.olen)
    if c != 0:
        return c
    return (a.seq > b.seq) - (a.seq < b.seq)


cdef int _cmp_cand_oid(const void* x, const void* y) noexcept nogil:
    cdef const RCand* a = <const RCand*>x
    cdef const RCand* b = <const RCand*>y
    cdef int c = bytes_cmp(a.oid, a.olen, b.oid, b.olen)
    if c != 0:
        return c
    return (a.seq > b.seq) - (a.seq < b.seq)


cdef int _cmp_cand_order(const void* x, const void* y) noexcept nogil:
    """(epoch, hlc, actor, op id): the review encoding order; the winner is the greatest."""
    cdef const RCand* a = <const RCand*>x
    cdef const RCand* b = <const RCand*>y
    cdef int c
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    if a.hlc != b.hlc:
        return 1 if a.hlc > b.hlc else -1
    c = bytes_cmp(a.actor, a.alen, b.actor, b.alen)
    if c != 0:
        return c
    return bytes_cmp(a.oid, a.olen, b.oid, b.olen)


cdef int _cmp_elem(const void* x, const void* y) noexcept nogil:
    cdef const SElem* a = <const SElem*>x
    cdef const SElem* b = <const SElem*>y
    cdef int c = bytes_cmp(a.p, a.n, b.p, b.n)
    if c != 0:
        return c
    return (a.seq > b.seq) - (a.seq < b.seq)


cdef int _cmp_wm(const void* x, const void* y) noexcept nogil:
    cdef const SWm* a = <const SWm*>x
    cdef const SWm* b = <const SWm*>y
    cdef int c = memcmp(a.node, b.node, WM_NODE_LEN)
    if c != 0:
        return c
    return (a.seq > b.seq) - (a.seq < b.seq)


cdef int _cmp_gelem(const void* x, const void* y) noexcept nogil:
    cdef const GElem* a = <const GElem*>x
    cdef const GElem* b = <const GElem*>y
    cdef int c = bytes_cmp(a.p, a.n, b.p, b.n)
    if c != 0:
        return c
    return (a.seq > b.seq) - (a.seq < b.seq)


ctypedef fused _Canon:
    STag
    RCand
    SElem
    GElem
    SWm


cdef inline int _canon_cmp(const _Canon* a, const _Canon* b) noexcept nogil:
    if _Canon is STag or _Canon is RCand:
        return bytes_cmp(a.oid, a.olen, b.oid, b.olen)
    elif _Canon is SWm:
        return memcmp(a.node, b.node, WM_NODE_LEN)
    else:
        return bytes_cmp(a.p, a.n, b.p, b.n)


cdef inline bint _in_order(const _Canon* t, Py_ssize_t n) noexcept nogil:
    """Whether the keys of ``t`` strictly increase (already canonical)."""
    cdef Py_ssize_t i
    for i in range(1, n):
        if _canon_cmp(&t[i - 1], &t[i]) >= 0:
            return False
    return True


cdef Py_ssize_t _canon(_Canon* t, Py_ssize_t n) noexcept nogil:
    """Sort by op id (tags, candidates), node (watermarks) or element bytes (elements),
    keeping one entry per key: the last read, as the reference's dicts do."""
    cdef Py_ssize_t i, w = 0
    if _in_order(t, n):
        return n
    if _Canon is STag:
        qsort(t, <size_t>n, sizeof(STag), _cmp_tag_oid)
    elif _Canon is RCand:
        qsort(t, <size_t>n, sizeof(RCand), _cmp_cand_oid)
    elif _Canon is SElem:
        qsort(t, <size_t>n, sizeof(SElem), _cmp_elem)
    elif _Canon is SWm:
        qsort(t, <size_t>n, sizeof(SWm), _cmp_wm)
    else:
        qsort(t, <size_t>n, sizeof(GElem), _cmp_gelem)
    for i in range(n):
        if i + 1 < n and _canon_cmp(&t[i], &t[i + 1]) == 0:
            continue
        t[w] = t[i]
        w += 1
    return w


cdef inline int mark_cmp(const STag* a, const STag* b) noexcept nogil:
    """(epoch, hlc) of two tags (tombstones have epoch 0: their hlc decides)."""
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    return u64_cmp(a.hlc, b.hlc)


cdef Py_ssize_t tags_union_max(const STag* a, Py_ssize_t na, const STag* b, Py_ssize_t nb,
                               STag* out) noexcept nogil:
    """Union of two op-id-sorted runs; a shared op id keeps the greater (epoch, hlc)."""
    cdef Py_ssize_t i = 0, j = 0, w = 0
    cdef int c
    while i < na or j < nb:
        if j >= nb:
            c = -1
        elif i >= na:
            c = 1
        else:
            c = bytes_cmp(a[i].oid, a[i].olen, b[j].oid, b[j].olen)
        if c < 0:
            out[w] = a[i]
            i += 1
        elif c > 0:
            out[w] = b[j]
            j += 1
        else:
            out[w] = b[j] if mark_cmp(&a[i], &b[j]) <= 0 else a[i]
            i += 1
            j += 1
        w += 1
    return w


cdef inline int _key_cmp(const _Canon* a, const uchar* p, Py_ssize_t n) noexcept nogil:
    if _Canon is STag or _Canon is RCand:
        return bytes_cmp(a.oid, a.olen, p, n)
    elif _Canon is SWm:
        return bytes_cmp(a.node, WM_NODE_LEN, p, n)
    else:
        return bytes_cmp(a.p, a.n, p, n)


cdef Py_ssize_t _bfind(const _Canon* t, Py_ssize_t n, const uchar* p, Py_ssize_t pn,
                       bint* found) noexcept nogil:
    """Binary search in a run sorted by ``_canon``: the index of the op id (tags) or element
    bytes (elements) ``p``, or where it would go."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    cdef int c
    while lo < hi:
        mid = (lo + hi) >> 1
        c = _key_cmp(&t[mid], p, pn)
        if c == 0:
            found[0] = True
            return mid
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    found[0] = False
    return lo


cdef inline void* _alloc(Py_ssize_t count, size_t size) except NULL:
    cdef void* p = PyMem_Malloc((<size_t>count if count > 0 else 1) * size)
    if p == NULL:
        raise MemoryError()
    return p


# --------------------------------------------------------------------------------------------
# Output buffer for the set encoders.

cdef int w_init(Writer* w, Py_ssize_t cap) except -1:
    if cap < 64:
        cap = 64
    w.buf = <uchar*>PyMem_Malloc(<size_t>cap)
    if w.buf == NULL:
        raise MemoryError()
    w.pos = 0
    w.cap = cap
    return 0


cdef int w_grow(Writer* w, Py_ssize_t k) except -1:
    cdef Py_ssize_t cap = w.cap * 2
    cdef uchar* nb
    if cap < w.pos + k:
        cap = w.pos + k
    nb = <uchar*>PyMem_Realloc(w.buf, <size_t>cap)
    if nb == NULL:
        raise MemoryError()
    w.buf = nb
    w.cap = cap
    return 0


cdef inline int w_reserve(Writer* w, Py_ssize_t k) except -1:
    if w.pos + k > w.cap:
        return w_grow(w, k)
    return 0


cdef inline void w_mem(Writer* w, const uchar* p, Py_ssize_t n) noexcept nogil:
    if n:
        memcpy(w.buf + w.pos, p, <size_t>n)
        w.pos += n


# --------------------------------------------------------------------------------------------
# Review: a multi-value register with tombstones of superseded candidates.

cdef void review_free(Review* r) noexcept:
    PyMem_Free(r.cands)
    PyMem_Free(r.tombs)
    r.cands = NULL
    r.tombs = NULL
    r.ncand = 0
    r.ntomb = 0


cdef int review_load(Review* r, const uchar* p, Py_ssize_t n) except -1:
    """Decode into ``r`` (zeroed by the caller, freed with ``review_free`` even on error)."""
    cdef Py_ssize_t ncand, ntomb, cap, pos, i, alen, olen, vlen
    cdef RCand* c
    cdef STag* t
    need(0, REV_SIZE, n)
    ncand = ld16(p + REV_NCAND)
    ntomb = ld16(p + REV_NTOMB)
    cap = (n - REV_SIZE) // CAND_SIZE + 1
    r.cands = <RCand*>_alloc(ncand if ncand < cap else cap, sizeof(RCand))
    cap = n // TOMB_SIZE + 1
    r.tombs = <STag*>_alloc(ntomb if ntomb < cap else cap, sizeof(STag))
    pos = REV_SIZE
    for i in range(ncand):
        need(pos, CAND_SIZE, n)
        c = &r.cands[i]
        c.flags = p[pos + CAND_FLAGS]
        alen = p[pos + CAND_ALEN]
        olen = p[pos + CAND_OLEN]
        vlen = ld32(p + pos + CAND_VLEN)
        c.epoch = ld64(p + pos + CAND_EPOCH)
        c.hlc = ld64(p + pos + CAND_HLC)
        c.seq = i
        pos += CAND_SIZE
        take(p, n, pos, alen, &c.actor, &c.alen)
        pos += alen
        take(p, n, pos, olen, &c.oid, &c.olen)
        pos += olen
        take(p, n, pos, vlen, &c.val, &c.vlen)
        pos += vlen
        r.ncand = i + 1
    for i in range(ntomb):
        need(pos, TOMB_SIZE, n)
        t = &r.tombs[i]
        t.hlc = ld64(p + pos + TOMB_HLC)
        t.epoch = 0
        olen = p[pos + TOMB_OLEN]
        t.seq = i
        pos += TOMB_SIZE
        take(p, n, pos, olen, &t.oid, &t.olen)
        pos += olen
        r.ntomb = i + 1
    r.ncand = _canon(r.cands, r.ncand)
    r.ntomb = _canon(r.tombs, r.ntomb)
    return 0


cdef object review_encode(RCand* cands, Py_ssize_t ncand, STag* tombs, Py_ssize_t ntomb):
    """Encode candidates (one per op id, any order: sorted here) and op-id-sorted tombs."""
    cdef Py_ssize_t size = REV_SIZE, i
    cdef uchar* w
    cdef RCand* c
    cdef STag* t
    if ncand > U16_MAX or ntomb > U16_MAX:
        _ushort_error()
    if ncand > 1:
        qsort(cands, <size_t>ncand, sizeof(RCand), _cmp_cand_order)
    for i in range(ncand):
        c = &cands[i]
        if c.alen > U8_MAX or c.olen > U8_MAX:
            _ubyte_error()
        if c.vlen > U32_MAX:
            _uint_error()
        size += CAND_SIZE + c.alen + c.olen + c.vlen
    for i in range(ntomb):
        if tombs[i].olen > U8_MAX:
            _ubyte_error()
        size += TOMB_SIZE + tombs[i].olen
    out = PyBytes_FromStringAndSize(NULL, size)
    w = <uchar*>PyBytes_AS_STRING(out)
    w[REV_VERSION] = VERSION
    w[REV_KIND] = K_REVIEW
    st16(w + REV_NCAND, <uint16_t>ncand)
    st16(w + REV_NTOMB, <uint16_t>ntomb)
    st16(w + REV_RESERVED, 0)
    w += REV_SIZE
    for i in range(ncand):
        c = &cands[i]
        w[CAND_FLAGS] = <uchar>c.flags
        w[CAND_ALEN] = <uchar>c.alen
        w[CAND_OLEN] = <uchar>c.olen
        w[CAND_RESERVED] = 0
        st32(w + CAND_VLEN, <uint32_t>c.vlen)
        st64(w + CAND_EPOCH, c.epoch)
        st64(w + CAND_HLC, c.hlc)
        w += CAND_SIZE
        if c.alen:
            memcpy(w, c.actor, c.alen)
            w += c.alen
        if c.olen:
            memcpy(w, c.oid, c.olen)
            w += c.olen
        if c.vlen:
            memcpy(w, c.val, c.vlen)
            w += c.vlen
    for i in range(ntomb):
        t = &tombs[i]
        st64(w + TOMB_HLC, t.hlc)
        w[TOMB_OLEN] = <uchar>t.olen
        w += TOMB_SIZE
        if t.olen:
            memcpy(w, t.oid, t.olen)
            w += t.olen
    return out


cdef Py_ssize_t review_best(const RCand* c, Py_ssize_t n, uint64_t d) noexcept nogil:
    """The effective candidate: the greatest (epoch, hlc, actor, op id) stamped after d."""
    cdef Py_ssize_t i, best = -1
    for i in range(n):
        if c[i].hlc <= d:
            continue
        if best < 0 or _cmp_cand_order(&c[i], &c[best]) > 0:
            best = i
    return best


cdef object review_join_encode(const RCand* ca, Py_ssize_t na, const RCand* cb, Py_ssize_t nb,
                               const STag* ta, Py_ssize_t nta, const STag* tb, Py_ssize_t ntb):
    """``_join_review_parts`` then ``_encode_review``: candidates of ``b`` replace those of
    ``a`` with the same op id, tombstones keep the latest hlc, tombstoned candidates go."""
    cdef RCand* cands = NULL
    cdef STag* tombs = NULL
    cdef Py_ssize_t nc, nt, i, j, w
    cdef int c
    try:
        cands = <RCand*>_alloc(na + nb, sizeof(RCand))
        tombs = <STag*>_alloc(nta + ntb, sizeof(STag))
        for i in range(na):
            cands[i] = ca[i]
            cands[i].seq = i
        for i in range(nb):
            cands[na + i] = cb[i]
            cands[na + i].seq = na + i
        nc = _canon(cands, na + nb)
        nt = tags_union_max(ta, nta, tb, ntb, tombs)
        i = j = w = 0
        while i < nc:
            c = -1 if j >= nt else bytes_cmp(cands[i].oid, cands[i].olen, tombs[j].oid,
                                             tombs[j].olen)
            if c < 0:
                cands[w] = cands[i]
                w += 1
                i += 1
            elif c > 0:
                j += 1
            else:
                i += 1
                j += 1
        return review_encode(cands, w, tombs, nt)
    finally:
        PyMem_Free(cands)
        PyMem_Free(tombs)


cdef object merge_review(object rec, Op op):
    cdef Review r
    cdef RCand cand
    cdef STag* nt = NULL
    cdef Py_ssize_t i, nbase, best
    cdef uint64_t d = op.entity_epoch
    cdef object buf, o_keep, a_keep, v_keep, base_t, keep
    memset(&r, 0, sizeof(Review))
    try:
        if rec is not None:
            buf = _buffer(rec)
            review_load(&r, bptr(buf), PyBytes_GET_SIZE(buf))
        if not op.bound:
            if op.base is None:
                op.base = sorted([utf8_str(r.cands[i].oid, r.cands[i].olen)
                                  for i in range(r.ncand)])
            op.epoch = op.hlc if op.override else 0
            op.bound = True
        best = review_best(r.cands, r.ncand, d)
        if best >= 0 and not (r.cands[best].flags & FL_ABSENT):
            op.prev = new_bytes(r.cands[best].val, r.cands[best].vlen)
        else:
            op.prev = None
        o_keep = utf8_of(op.op_id, &cand.oid, &cand.olen)
        a_keep = utf8_of(op.actor, &cand.actor, &cand.alen)
        cand.epoch = op.epoch
        cand.hlc = op.hlc
        cand.seq = 0
        if op.type == T_UNSET_FIELD:
            cand.flags = FL_ABSENT
            cand.val = _EMPTY
            cand.vlen = 0
        else:
            cand.flags = FL_OVERRIDE if op.override else 0
            v_keep = bytes_of(op.vbytes, &cand.val, &cand.vlen)
        base_t = tuple(op.base)
        nbase = len(base_t)
        keep = [None] * nbase
        nt = <STag*>_alloc(nbase, sizeof(STag))
        for i in range(nbase):
            keep[i] = utf8_of(base_t[i], &nt[i].oid, &nt[i].olen)
            nt[i].epoch = 0
            nt[i].hlc = op.hlc
            nt[i].seq = i
        nbase = _canon(nt, nbase)
        return review_join_encode(r.cands, r.ncand, &cand, 1, r.tombs, r.ntomb, nt, nbase)
    finally:
        PyMem_Free(nt)
        review_free(&r)


# --------------------------------------------------------------------------------------------
# Observed-remove set: per element, live add tags, tombstones of killed plain tags and
# watermarks of killed sequenced tags (``_core_py`` says why). Tags and tombstones are sorted by
# op id, watermarks by node; an element's ranges in the record's arrays are in its ``SElem``.

cdef void orset_free(OrSet* s) noexcept:
    PyMem_Free(s.elems)  # one block for all four arrays (``orset_load``)
    s.elems = NULL
    s.tags = NULL
    s.tombs = NULL
    s.wms = NULL
    s.nelem = s.ntag = s.ntomb = s.nwm = 0


cdef int orset_load(OrSet* s, const uchar* p, Py_ssize_t n) except -1:
    """Decode into ``s`` (zeroed by the caller, freed with ``orset_free`` even on error)."""
    cdef Py_ssize_t count, cap, pos, i, k, elen, nlive, ntomb, nwm, olen, ntags, ntombs, start
    cdef bint canonical
    cdef SElem* e
    cdef STag* t
    cdef SWm* m
    need(0, SET_SIZE, n)
    count = ld32(p + SET_COUNT)
    cap = (n - SET_SIZE) // ELEM_SIZE + 1
    if count < cap:
        cap = count
    ntags = n // LIVE_SIZE + 1
    ntombs = n // TOMB_SIZE + 1
    # PERF: one block (all sizes are multiples of 8), and one scratch block in merge_orset:
    # together they took a merge of bench/kernel.py's or-set add case, op already bound, from
    # 0.79 to 0.49 us.
    s.elems = <SElem*>_alloc(1, cap * sizeof(SElem) + (ntags + ntombs) * sizeof(STag)
                             + (n // WM_SIZE + 1) * sizeof(SWm))
    s.tags = <STag*>(<char*>s.elems + cap * sizeof(SElem))
    s.tombs = s.tags + ntags
    s.wms = <SWm*>(s.tombs + ntombs)
    s.base = p
    pos = SET_SIZE
    for i in range(count):
        start = pos
        need(pos, ELEM_SIZE, n)
        elen = ld32(p + pos + ELEM_ELEN)
        nlive = ld16(p + pos + ELEM_NLIVE)
        ntomb = ld16(p + pos + ELEM_NTOMB)
        nwm = ld16(p + pos + ELEM_NWM)
        pos += ELEM_SIZE
        e = &s.elems[i]
        take(p, n, pos, elen, &e.p, &e.n)
        pos += elen
        e.seq = i
        e.live0 = s.ntag
        e.nlive = 0
        e.tomb0 = s.ntomb
        e.ntomb = 0
        e.wm0 = s.nwm
        e.nwm = 0
        s.nelem = i + 1
        for k in range(nlive):
            need(pos, LIVE_SIZE, n)
            t = &s.tags[s.ntag]
            t.epoch = ld64(p + pos + LIVE_EPOCH)
            t.hlc = ld64(p + pos + LIVE_HLC)
            olen = p[pos + LIVE_OLEN]
            t.seq = k
            pos += LIVE_SIZE
            take(p, n, pos, olen, &t.oid, &t.olen)
            pos += olen
            s.ntag += 1
        canonical = _in_order(&s.tags[e.live0], s.ntag - e.live0)
        e.nlive = s.ntag - e.live0 if canonical else _canon(&s.tags[e.live0], s.ntag - e.live0)
        for k in range(ntomb):
            need(pos, TOMB_SIZE, n)
            t = &s.tombs[s.ntomb]
            t.hlc = ld64(p + pos + TOMB_HLC)
            t.epoch = 0
            olen = p[pos + TOMB_OLEN]
            t.seq = k
            pos += TOMB_SIZE
            take(p, n, pos, olen, &t.oid, &t.olen)
            pos += olen
            s.ntomb += 1
        if _in_order(&s.tombs[e.tomb0], s.ntomb - e.tomb0):
            e.ntomb = s.ntomb - e.tomb0
        else:
            e.ntomb = _canon(&s.tombs[e.tomb0], s.ntomb - e.tomb0)
            canonical = False
        for k in range(nwm):
            need(pos, WM_SIZE, n)
            m = &s.wms[s.nwm]
            m.node = p + pos + WM_NODE
            m.upto = ld64(p + pos + WM_SEQ)
            m.hlc = ld64(p + pos + WM_HLC)
            m.seq = k
            pos += WM_SIZE
            s.nwm += 1
        if _in_order(&s.wms[e.wm0], s.nwm - e.wm0):
            e.nwm = s.nwm - e.wm0
        else:
            e.nwm = _canon(&s.wms[e.wm0], s.nwm - e.wm0)
            canonical = False
        # PERF: an element read whole (nothing ran short), in order and not empty is written
        # back as the very bytes it was read from (bench/kernel.py, or-set add: 1.62M to 1.98M
        # merges/s).
        e.raw0 = start
        e.raw1 = pos if (canonical and pos <= n and (nlive or ntomb or nwm)) else -1
    s.nelem = _canon(s.elems, s.nelem)
    return 0


cdef inline int _hex(uchar c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef bint tag_sequenced(const uchar* oid, Py_ssize_t olen, uint64_t* seq) noexcept nogil:
    """Whether ``oid`` is a store-generated op id ``<node>-<seq>`` (``_core_py._sequenced``:
    8 lowercase hex digits, a dash, 1 to 16 lowercase hex digits without a leading zero); its
    seq goes to ``seq``. The node is its first 8 bytes."""
    cdef Py_ssize_t i
    cdef int v
    cdef uint64_t x = 0
    if olen < 10 or olen > 25 or oid[8] != 45 or oid[9] == 48:
        return False
    for i in range(8):
        if _hex(oid[i]) < 0:
            return False
    for i in range(9, olen):
        v = _hex(oid[i])
        if v < 0:
            return False
        x = (x << 4) | <uint64_t>v
    seq[0] = x
    return True


cdef inline bint _under_wm(const STag* t, const SWm* wms, Py_ssize_t nw) noexcept nogil:
    """Whether ``t`` is sequenced and under its node's watermark in ``wms`` (node-sorted)."""
    cdef uint64_t seq
    cdef Py_ssize_t lo = 0, hi = nw, mid
    cdef int c
    if nw == 0 or not tag_sequenced(t.oid, t.olen, &seq):
        return False
    while lo < hi:
        mid = (lo + hi) >> 1
        c = memcmp(wms[mid].node, t.oid, WM_NODE_LEN)
        if c == 0:
            return seq <= wms[mid].upto
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return False


cdef bint tag_dead(const STag* t, const STag* tombs, Py_ssize_t nt, const SWm* wms,
                   Py_ssize_t nw) noexcept nogil:
    """Whether ``t`` is dead on an element: tombstoned, or under its node's watermark."""
    cdef bint found
    _bfind(tombs, nt, t.oid, t.olen, &found)
    return found or _under_wm(t, wms, nw)


cdef Py_ssize_t tags_alive(const STag* a, Py_ssize_t na, const STag* tombs, Py_ssize_t nt,
                           const SWm* wms, Py_ssize_t nw, STag* out) noexcept nogil:
    """The tags of ``a`` (sorted by op id) that are not dead under ``tombs`` (sorted by op
    id) and ``wms`` (sorted by node). ``out`` may be ``a`` itself."""
    cdef Py_ssize_t i = 0, j = 0, w = 0
    cdef int c
    while i < na:
        c = -1 if j >= nt else bytes_cmp(a[i].oid, a[i].olen, tombs[j].oid, tombs[j].olen)
        if c > 0:
            j += 1
            continue
        if c < 0 and not _under_wm(&a[i], wms, nw):
            out[w] = a[i]
            w += 1
        i += 1
    return w


cdef Py_ssize_t wms_union_max(const SWm* a, Py_ssize_t na, const SWm* b, Py_ssize_t nb,
                              SWm* out) noexcept nogil:
    """Union of two node-sorted runs of watermarks; a shared node keeps the greater seq and
    the greater hlc (each on its own: a join)."""
    cdef Py_ssize_t i = 0, j = 0, w = 0
    cdef int c
    while i < na or j < nb:
        if j >= nb:
            c = -1
        elif i >= na:
            c = 1
        else:
            c = memcmp(a[i].node, b[j].node, WM_NODE_LEN)
        if c < 0:
            out[w] = a[i]
            i += 1
        elif c > 0:
            out[w] = b[j]
            j += 1
        else:
            out[w] = a[i]
            if b[j].upto > out[w].upto:
                out[w].upto = b[j].upto
            if b[j].hlc > out[w].hlc:
                out[w].hlc = b[j].hlc
            i += 1
            j += 1
        w += 1
    return w


cdef Py_ssize_t wms_fold(SWm* t, Py_ssize_t n) noexcept nogil:
    """Sort by node and fold each node's entries into one with the greatest seq and hlc."""
    cdef Py_ssize_t i, w = 0
    if n > 1:
        qsort(t, <size_t>n, sizeof(SWm), _cmp_wm)
    for i in range(n):
        if w > 0 and memcmp(t[w - 1].node, t[i].node, WM_NODE_LEN) == 0:
            if t[i].upto > t[w - 1].upto:
                t[w - 1].upto = t[i].upto
            if t[i].hlc > t[w - 1].hlc:
                t[w - 1].hlc = t[i].hlc
        else:
            t[w] = t[i]
            w += 1
    return w


cdef int emit_elem(Writer* w, const uchar* e, Py_ssize_t en, const STag* live, Py_ssize_t nl,
                   const STag* tombs, Py_ssize_t nt, const SWm* wms, Py_ssize_t nw,
                   Py_ssize_t* count) except -1:
    """One or-set element; an element with no live tag, tombstone or watermark is dropped."""
    cdef Py_ssize_t i
    cdef uchar* q
    if nl == 0 and nt == 0 and nw == 0:
        return 0
    if en > U32_MAX:
        _uint_error()
    if nl > U16_MAX or nt > U16_MAX or nw > U16_MAX:
        _ushort_error()
    w_reserve(w, ELEM_SIZE + en)
    q = w.buf + w.pos
    st32(q + ELEM_ELEN, <uint32_t>en)
    st16(q + ELEM_NLIVE, <uint16_t>nl)
    st16(q + ELEM_NTOMB, <uint16_t>nt)
    st16(q + ELEM_NWM, <uint16_t>nw)
    w.pos += ELEM_SIZE
    w_mem(w, e, en)
    for i in range(nl):
        if live[i].olen > U8_MAX:
            _ubyte_error()
        w_reserve(w, LIVE_SIZE + live[i].olen)
        q = w.buf + w.pos
        st64(q + LIVE_EPOCH, live[i].epoch)
        st64(q + LIVE_HLC, live[i].hlc)
        q[LIVE_OLEN] = <uchar>live[i].olen
        w.pos += LIVE_SIZE
        w_mem(w, live[i].oid, live[i].olen)
    for i in range(nt):
        if tombs[i].olen > U8_MAX:
            _ubyte_error()
        w_reserve(w, TOMB_SIZE + tombs[i].olen)
        q = w.buf + w.pos
        st64(q + TOMB_HLC, tombs[i].hlc)
        q[TOMB_OLEN] = <uchar>tombs[i].olen
        w.pos += TOMB_SIZE
        w_mem(w, tombs[i].oid, tombs[i].olen)
    if nw:
        w_reserve(w, nw * WM_SIZE)
        for i in range(nw):
            q = w.buf + w.pos
            memcpy(q + WM_NODE, wms[i].node, WM_NODE_LEN)
            st64(q + WM_SEQ, wms[i].upto)
            st64(q + WM_HLC, wms[i].hlc)
            w.pos += WM_SIZE
    count[0] += 1
    return 0


cdef inline int emit_selem(Writer* w, const OrSet* s, const SElem* e, Py_ssize_t* count) except -1:
    """An element of a decoded record, unchanged."""
    if e.raw1 >= 0:
        w_reserve(w, e.raw1 - e.raw0)
        w_mem(w, s.base + e.raw0, e.raw1 - e.raw0)
        count[0] += 1
        return 0
    return emit_elem(w, e.p, e.n, &s.tags[e.live0], e.nlive, &s.tombs[e.tomb0], e.ntomb,
                     &s.wms[e.wm0], e.nwm, count)


cdef object w_finish_set(Writer* w, int kind, Py_ssize_t count):
    if count > U32_MAX:
        _uint_error()
    w.buf[SET_VERSION] = VERSION
    w.buf[SET_KIND] = <uchar>kind
    st16(w.buf + SET_RESERVED, 0)
    st32(w.buf + SET_COUNT, <uint32_t>count)
    return new_bytes(w.buf, w.pos)


cdef Py_ssize_t _find_op_elem(const OrSet* s, object x) except -2:
    """The record's element ``x`` (bytes), or -1 (``x in elems`` of the reference: anything
    else must at least be hashable)."""
    cdef bint found
    cdef Py_ssize_t k
    if PyBytes_Check(x):
        k = _bfind(s.elems, s.nelem, bptr(x), PyBytes_GET_SIZE(x), &found)
        return k if found else -1
    hash(x)
    return -1


cdef inline bint _same_oid(const STag* t, const uchar* oid, Py_ssize_t olen) noexcept nogil:
    return oid != NULL and t.olen == olen and memcmp(t.oid, oid, <size_t>olen) == 0


cdef list _live_tags(const OrSet* s, Py_ssize_t k, const uchar* own, Py_ssize_t ownlen):
    """The live tags of element ``k`` of ``s`` (none for -1), in order, but ``own``."""
    cdef list row = []
    cdef Py_ssize_t m
    cdef const STag* t
    cdef const SElem* e
    if k >= 0:
        e = &s.elems[k]
        for m in range(e.nlive):
            t = &s.tags[e.live0 + m]
            if not _same_oid(t, own, ownlen):
                row.append(utf8_str(t.oid, t.olen))
    return row


cdef object _bind_observed(const OrSet* s, object ebytes, object supplied, const uchar* own,
                           Py_ssize_t ownlen):
    """``_core_py._bind_observed``: per element of ``ebytes``, its live tags in this record
    (sorted), never ``own`` (an add's own tag; NULL for other ops); or, from a ``supplied``
    list per element, its plain tags and those of its sequenced tags live here."""
    cdef list out = []
    cdef list row
    cdef Py_ssize_t k, m
    cdef uint64_t sq
    cdef const STag* t
    cdef const SElem* e
    if supplied is None:
        # PERF: the common case (every add, most removes) without the reference's zip
        len(ebytes)
        for x in ebytes:
            out.append(_live_tags(s, _find_op_elem(s, x), own, ownlen))
        return out
    for x, names in zip(ebytes, supplied):
        k = _find_op_elem(s, x)
        if names is None:
            row = _live_tags(s, k, own, ownlen)
        else:
            # A client's list: its plain tags as named, its sequenced ones if live here
            # (see the reference). Rare, so plain Python.
            live = set()
            if k >= 0:
                e = &s.elems[k]
                for m in range(e.nlive):
                    t = &s.tags[e.live0 + m]
                    live.add(new_bytes(t.oid, t.olen))
            seen = set()
            for name in names:
                tb = name.encode()
                if own != NULL and PyBytes_GET_SIZE(tb) == ownlen and \
                        memcmp(bptr(tb), own, <size_t>ownlen) == 0:
                    continue
                if tb in live or not tag_sequenced(bptr(tb), PyBytes_GET_SIZE(tb), &sq):
                    seen.add(tb)
            row = [y.decode() for y in sorted(seen)]
        out.append(row)
    return out


cdef object merge_orset(object rec, Op op):
    cdef OrSet s
    cdef SElem* ops = NULL      # one entry per element the op touches; then one per element
    cdef char* scratch = NULL   # one block for the arrays below
    cdef STag* otags            # the tags each entry observed
    cdef STag* gtags            # per element: the plain tags it kills (sorted, one per op id)
    cdef SWm* gwms              # per element: the watermarks it raises (sorted, one per node)
    cdef STag* live
    cdef STag* tombs
    cdef SWm* wms
    cdef Writer w
    cdef STag own
    cdef const uchar* tag
    cdef Py_ssize_t taglen, i, j, k, m, nitems, npairs, nops, ntot, ng, nm, nl, nt, nw
    cdef Py_ssize_t count = 0
    cdef bint found, adding, fresh = False
    cdef int c
    cdef uint64_t sq
    cdef SElem* e
    cdef STag* t
    cdef object buf, tag_keep, items, obs
    cdef list rows, keep
    memset(&s, 0, sizeof(OrSet))
    w.buf = NULL
    try:
        if rec is not None:
            buf = _buffer(rec)
            orset_load(&s, bptr(buf), PyBytes_GET_SIZE(buf))
        op.prev = None
        tag_keep = utf8_of(op.op_id, &tag, &taglen)
        adding = op.type == T_ADD_ELEMENTS
        if not op.bound:
            if adding:
                op.epoch = 0
            elif op.type == T_UNSET_FIELD:
                eb = [new_bytes(s.elems[i].p, s.elems[i].n) for i in range(s.nelem)
                      if s.elems[i].nlive]
                op.ebytes = eb
                op.elements = [_unpackb(x) for x in eb]
                op.observed = None
            fresh = op.observed is None
            if adding:
                op.observed = _bind_observed(&s, op.ebytes, op.observed, tag, taglen)
            else:
                op.observed = _bind_observed(&s, op.ebytes, op.observed, NULL, 0)
            op.bound = True
        # The entries: (element, observed) pairs, then (an add) its other elements, unobserved.
        # PERF: just bound without a client's list, an element observed exactly its live tags
        # here (but the add's own), so they are read from the record, not from op.observed.
        items = tuple(op.ebytes)
        nitems = len(items)
        if fresh:
            npairs = nitems
        elif op.observed:
            obs = op.observed
            # PERF: a list (as logged and as the engine builds it) is read in place
            rows = obs if PyList_CheckExact(obs) else [r for _, r in zip(items, obs)]
            npairs = min(nitems, PyList_GET_SIZE(rows))
        else:
            npairs = 0
        nops = nitems if adding else npairs
        ops = <SElem*>_alloc(nops, sizeof(SElem))
        keep = []
        ntot = 0
        for i in range(nops):
            x = items[i]
            if not PyBytes_Check(x):
                raise TypeError(f"element bytes expected, got {type(x).__name__}")
            ops[i].p = bptr(x)
            ops[i].n = PyBytes_GET_SIZE(x)
            ops[i].seq = i
            ops[i].live0 = ntot
            ops[i].nlive = 0
            if i >= npairs:
                continue
            if fresh:
                k = _bfind(s.elems, s.nelem, ops[i].p, ops[i].n, &found)
                ops[i].tomb0 = k if found else -1   # the record's element, for now
                if found:
                    ops[i].nlive = s.elems[k].nlive
            else:
                obs = rows[i]
                if not PyList_CheckExact(obs) and not PyTuple_CheckExact(obs):
                    obs = tuple(obs)
                keep.append(obs)
                ops[i].nlive = len(obs)
            ntot += ops[i].nlive
        # PERF: one allocation for all the scratch arrays (see orset_load)
        scratch = <char*>_alloc(1, 3 * ntot * sizeof(STag) + 2 * ntot * sizeof(SWm)
                                + (s.ntag + 1 + s.ntomb) * sizeof(STag) + s.nwm * sizeof(SWm))
        otags = <STag*>scratch
        gtags = otags + ntot
        tombs = gtags + ntot
        live = tombs + s.ntomb + ntot
        gwms = <SWm*>(live + s.ntag + 1)
        wms = gwms + ntot
        for i in range(min(nops, npairs)):
            m = 0
            if fresh:
                if ops[i].tomb0 >= 0:
                    e = &s.elems[ops[i].tomb0]
                    for j in range(e.nlive):
                        t = &s.tags[e.live0 + j]
                        if adding and _same_oid(t, tag, taglen):
                            continue
                        otags[ops[i].live0 + m] = t[0]
                        m += 1
            else:
                obs = keep[i]
                for j in range(ops[i].nlive):
                    t = &otags[ops[i].live0 + j]
                    keep.append(utf8_of(obs[j], &t.oid, &t.olen))
                m = ops[i].nlive
            for j in range(m):
                t = &otags[ops[i].live0 + j]
                t.epoch = 0
                t.hlc = op.hlc
                t.seq = j
            ops[i].nlive = m
        # Group the entries by element: the plain tags they kill and the watermarks they raise.
        if nops > 1:
            qsort(ops, <size_t>nops, sizeof(SElem), _cmp_elem)
        k = 0   # groups written
        ng = 0  # gtags used
        nm = 0  # gwms used
        i = 0
        while i < nops:
            j = i
            ops[k].p = ops[i].p
            ops[k].n = ops[i].n
            ops[k].tomb0 = ng
            ops[k].wm0 = nm
            while j < nops and bytes_cmp(ops[j].p, ops[j].n, ops[i].p, ops[i].n) == 0:
                for m in range(ops[j].live0, ops[j].live0 + ops[j].nlive):
                    t = &otags[m]
                    if tag_sequenced(t.oid, t.olen, &sq):
                        gwms[nm].node = t.oid
                        gwms[nm].upto = sq
                        gwms[nm].hlc = t.hlc
                        gwms[nm].seq = m
                        nm += 1
                    else:
                        gtags[ng] = t[0]
                        ng += 1
                j += 1
            ops[k].ntomb = _canon(&gtags[ops[k].tomb0], ng - ops[k].tomb0)
            ops[k].nwm = wms_fold(&gwms[ops[k].wm0], nm - ops[k].wm0)
            k += 1
            i = j
        nops = k
        own.oid = tag
        own.olen = taglen
        own.epoch = op.epoch
        own.hlc = op.hlc
        own.seq = 0
        w_init(&w, (PyBytes_GET_SIZE(buf) if rec is not None else SET_SIZE) +
               nops * (ELEM_SIZE + LIVE_SIZE + taglen) + ntot * (TOMB_SIZE + 16) + 64)
        w.pos = SET_SIZE
        i = j = 0
        while i < s.nelem or j < nops:
            if j >= nops:
                c = -1
            elif i >= s.nelem:
                c = 1
            else:
                c = bytes_cmp(s.elems[i].p, s.elems[i].n, ops[j].p, ops[j].n)
            if c < 0:
                emit_selem(&w, &s, &s.elems[i], &count)
                i += 1
                continue
            if c > 0:  # an element the record does not have
                nl = 0
                if adding and not tag_dead(&own, &gtags[ops[j].tomb0], ops[j].ntomb,
                                           &gwms[ops[j].wm0], ops[j].nwm):
                    live[0] = own
                    nl = 1
                emit_elem(&w, ops[j].p, ops[j].n, live, nl, &gtags[ops[j].tomb0],
                          ops[j].ntomb, &gwms[ops[j].wm0], ops[j].nwm, &count)
                j += 1
                continue
            e = &s.elems[i]
            nt = tags_union_max(&s.tombs[e.tomb0], e.ntomb, &gtags[ops[j].tomb0], ops[j].ntomb,
                                tombs)
            nw = wms_union_max(&s.wms[e.wm0], e.nwm, &gwms[ops[j].wm0], ops[j].nwm, wms)
            if adding:
                k = _bfind(&s.tags[e.live0], e.nlive, tag, taglen, &found)
                memcpy(live, &s.tags[e.live0], <size_t>k * sizeof(STag))
                live[k] = own
                m = k + 1 if found else k
                memcpy(&live[k + 1], &s.tags[e.live0 + m], <size_t>(e.nlive - m) * sizeof(STag))
                nl = tags_alive(live, k + 1 + e.nlive - m, tombs, nt, wms, nw, live)
            else:
                nl = tags_alive(&s.tags[e.live0], e.nlive, tombs, nt, wms, nw, live)
            emit_elem(&w, e.p, e.n, live, nl, tombs, nt, wms, nw, &count)
            i += 1
            j += 1
        return w_finish_set(&w, K_ORSET, count)
    finally:
        PyMem_Free(w.buf)
        PyMem_Free(ops)
        PyMem_Free(scratch)
        orset_free(&s)


cdef object orset_join(object a, object b):
    cdef OrSet sa, sb
    cdef Writer w
    cdef STag* live = NULL
    cdef STag* live2 = NULL
    cdef STag* tombs = NULL
    cdef SWm* wms = NULL
    cdef Py_ssize_t i = 0, j = 0, nl, nt, nw, count = 0
    cdef SElem* ea
    cdef SElem* eb
    cdef int c
    memset(&sa, 0, sizeof(OrSet))
    memset(&sb, 0, sizeof(OrSet))
    w.buf = NULL
    try:
        orset_load(&sa, bptr(a), PyBytes_GET_SIZE(a))
        orset_load(&sb, bptr(b), PyBytes_GET_SIZE(b))
        live = <STag*>_alloc(sa.ntag + sb.ntag, sizeof(STag))
        live2 = <STag*>_alloc(sa.ntag + sb.ntag, sizeof(STag))
        tombs = <STag*>_alloc(sa.ntomb + sb.ntomb, sizeof(STag))
        wms = <SWm*>_alloc(sa.nwm + sb.nwm, sizeof(SWm))
        w_init(&w, PyBytes_GET_SIZE(a) + PyBytes_GET_SIZE(b))
        w.pos = SET_SIZE
        while i < sa.nelem or j < sb.nelem:
            if j >= sb.nelem:
                c = -1
            elif i >= sa.nelem:
                c = 1
            else:
                c = bytes_cmp(sa.elems[i].p, sa.elems[i].n, sb.elems[j].p, sb.elems[j].n)
            if c < 0:
                emit_selem(&w, &sa, &sa.elems[i], &count)
                i += 1
                continue
            eb = &sb.elems[j]
            if c > 0:
                nl = tags_alive(&sb.tags[eb.live0], eb.nlive, &sb.tombs[eb.tomb0], eb.ntomb,
                                &sb.wms[eb.wm0], eb.nwm, live)
                emit_elem(&w, eb.p, eb.n, live, nl, &sb.tombs[eb.tomb0], eb.ntomb,
                          &sb.wms[eb.wm0], eb.nwm, &count)
                j += 1
                continue
            ea = &sa.elems[i]
            nt = tags_union_max(&sa.tombs[ea.tomb0], ea.ntomb, &sb.tombs[eb.tomb0], eb.ntomb,
                                tombs)
            nw = wms_union_max(&sa.wms[ea.wm0], ea.nwm, &sb.wms[eb.wm0], eb.nwm, wms)
            nl = tags_union_max(&sa.tags[ea.live0], ea.nlive, &sb.tags[eb.live0], eb.nlive,
                                live2)
            nl = tags_alive(live2, nl, tombs, nt, wms, nw, live)
            emit_elem(&w, ea.p, ea.n, live, nl, tombs, nt, wms, nw, &count)
            i += 1
            j += 1
        return w_finish_set(&w, K_ORSET, count)
    finally:
        PyMem_Free(w.buf)
        PyMem_Free(live)
        PyMem_Free(live2)
        PyMem_Free(tombs)
        PyMem_Free(wms)
        orset_free(&sa)
        orset_free(&sb)


# --------------------------------------------------------------------------------------------
# Grow-only set: per element, the greatest (epoch, hlc, op id) among its adds.

cdef int grow_load(Grow* g, const uchar* p, Py_ssize_t n) except -1:
    """Decode into ``g`` (zeroed by the caller, its ``elems`` freed even on error)."""
    cdef Py_ssize_t count, cap, pos, i, elen, olen
    cdef GElem* e
    need(0, SET_SIZE, n)
    count = ld32(p + SET_COUNT)
    cap = (n - SET_SIZE) // GROW_SIZE + 1
    g.elems = <GElem*>_alloc(count if count < cap else cap, sizeof(GElem))
    pos = SET_SIZE
    for i in range(count):
        need(pos, GROW_SIZE, n)
        e = &g.elems[i]
        elen = ld32(p + pos + GROW_ELEN)
        e.epoch = ld64(p + pos + GROW_EPOCH)
        e.hlc = ld64(p + pos + GROW_HLC)
        olen = p[pos + GROW_OLEN]
        e.seq = i
        pos += GROW_SIZE
        take(p, n, pos, olen, &e.oid, &e.olen)
        pos += olen
        take(p, n, pos, elen, &e.p, &e.n)
        pos += elen
        g.nelem = i + 1
    g.nelem = _canon(g.elems, g.nelem)
    return 0


cdef inline int gmark_cmp(const GElem* a, const GElem* b) noexcept nogil:
    """(epoch, hlc, op id)."""
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    if a.hlc != b.hlc:
        return 1 if a.hlc > b.hlc else -1
    return bytes_cmp(a.oid, a.olen, b.oid, b.olen)


cdef object grow_encode(GElem* elems, Py_ssize_t n):
    """Encode element-sorted, one-per-element grow entries."""
    cdef Py_ssize_t size = SET_SIZE, i
    cdef uchar* w
    cdef GElem* e
    if n > U32_MAX:
        _uint_error()
    for i in range(n):
        if elems[i].n > U32_MAX:
            _uint_error()
        if elems[i].olen > U8_MAX:
            _ubyte_error()
        size += GROW_SIZE + elems[i].olen + elems[i].n
    out = PyBytes_FromStringAndSize(NULL, size)
    w = <uchar*>PyBytes_AS_STRING(out)
    w[SET_VERSION] = VERSION
    w[SET_KIND] = K_GROW
    st16(w + SET_RESERVED, 0)
    st32(w + SET_COUNT, <uint32_t>n)
    w += SET_SIZE
    for i in range(n):
        e = &elems[i]
        st32(w + GROW_ELEN, <uint32_t>e.n)
        st64(w + GROW_EPOCH, e.epoch)
        st64(w + GROW_HLC, e.hlc)
        w[GROW_OLEN] = <uchar>e.olen
        w += GROW_SIZE
        if e.olen:
            memcpy(w, e.oid, e.olen)
            w += e.olen
        if e.n:
            memcpy(w, e.p, e.n)
            w += e.n
    return out


cdef Py_ssize_t grow_union(const GElem* a, Py_ssize_t na, const GElem* b, Py_ssize_t nb,
                           GElem* out) noexcept nogil:
    """Union of two element-sorted runs; a shared element keeps the greater mark (``a`` on a
    tie, as ``if ea[elem] < mark`` does)."""
    cdef Py_ssize_t i = 0, j = 0, w = 0
    cdef int c
    while i < na or j < nb:
        if j >= nb:
            c = -1
        elif i >= na:
            c = 1
        else:
            c = bytes_cmp(a[i].p, a[i].n, b[j].p, b[j].n)
        if c < 0:
            out[w] = a[i]
            i += 1
        elif c > 0:
            out[w] = b[j]
            j += 1
        else:
            out[w] = b[j] if gmark_cmp(&a[i], &b[j]) < 0 else a[i]
            i += 1
            j += 1
        w += 1
    return w


cdef object merge_grow(object rec, Op op):
    cdef Grow g
    cdef GElem* ops = NULL
    cdef GElem* out = NULL
    cdef Py_ssize_t i, n, nops
    cdef const uchar* oid
    cdef Py_ssize_t olen
    cdef object buf, o_keep, items, x
    g.elems = NULL
    g.nelem = 0
    try:
        if rec is not None:
            buf = _buffer(rec)
            grow_load(&g, bptr(buf), PyBytes_GET_SIZE(buf))
        if not op.bound:
            op.epoch = 0
            op.bound = True
        op.prev = None
        o_keep = utf8_of(op.op_id, &oid, &olen)
        items = tuple(op.ebytes)
        nops = len(items)
        ops = <GElem*>_alloc(nops, sizeof(GElem))
        for i in range(nops):
            x = items[i]
            if not PyBytes_Check(x):
                raise TypeError(f"element bytes expected, got {type(x).__name__}")
            ops[i].p = bptr(x)
            ops[i].n = PyBytes_GET_SIZE(x)
            ops[i].oid = oid
            ops[i].olen = olen
            ops[i].epoch = op.epoch
            ops[i].hlc = op.hlc
            ops[i].seq = i
        nops = _canon(ops, nops)
        out = <GElem*>_alloc(g.nelem + nops, sizeof(GElem))
        n = grow_union(g.elems, g.nelem, ops, nops, out)
        return grow_encode(out, n)
    finally:
        PyMem_Free(ops)
        PyMem_Free(out)
        PyMem_Free(g.elems)


# --------------------------------------------------------------------------------------------
# Place: an entity's moves in the entity tree, every one kept, by op id. Moves are rare
# (structure, not traffic): the record is read into a dict of Python objects.

cdef dict place_load(object rec):
    """``{op id: (hlc, actor, value)}`` as bytes (a repeated op id keeps the last one read)."""
    cdef dict moves = {}
    cdef const uchar* p
    cdef Py_ssize_t n, pos, i, count, alen, olen, vlen
    cdef const uchar* a
    cdef const uchar* o
    cdef const uchar* v
    cdef Py_ssize_t an, on, vn
    cdef uint64_t hlc
    if rec is None:
        return moves
    buf = _buffer(rec)
    p = bptr(buf)
    n = PyBytes_GET_SIZE(buf)
    need(0, PLACE_SIZE, n)
    count = ld32(p + PLACE_COUNT)
    pos = PLACE_SIZE
    for i in range(count):
        need(pos, MOVE_SIZE, n)
        hlc = ld64(p + pos + MOVE_HLC)
        alen = p[pos + MOVE_ALEN]
        olen = p[pos + MOVE_OLEN]
        vlen = ld32(p + pos + MOVE_VLEN)
        pos += MOVE_SIZE
        take(p, n, pos, alen, &a, &an)
        take(p, n, pos + alen, olen, &o, &on)
        pos += alen + olen
        take(p, n, pos, vlen, &v, &vn)
        pos += vlen
        moves[new_bytes(o, on)] = (hlc, new_bytes(a, an), new_bytes(v, vn))
    return moves


cdef int place_keep(dict moves, object op_id, tuple move) except -1:
    """Two moves of one op id keep the greater (hlc, actor, value)."""
    held = moves.get(op_id)
    if held is None or held < move:
        moves[op_id] = move
    return 0


def _place_order(item):
    return (item[1][0], item[1][1], item[0])


cdef object place_encode(dict moves):
    cdef list items = sorted(moves.items(), key=_place_order)
    cdef Py_ssize_t size = PLACE_SIZE, i, n = len(items)
    cdef uchar* w
    cdef bytes op_id, actor, value
    if n > U32_MAX:
        _uint_error()
    for op_id, (_, actor, value) in items:
        if PyBytes_GET_SIZE(actor) > U8_MAX or PyBytes_GET_SIZE(op_id) > U8_MAX:
            _ubyte_error()
        if PyBytes_GET_SIZE(value) > U32_MAX:
            _uint_error()
        size += MOVE_SIZE + PyBytes_GET_SIZE(actor) + PyBytes_GET_SIZE(op_id) \
            + PyBytes_GET_SIZE(value)
    out = PyBytes_FromStringAndSize(NULL, size)
    w = <uchar*>PyBytes_AS_STRING(out)
    w[PLACE_VERSION] = VERSION
    w[PLACE_KIND] = K_PLACE
    st16(w + PLACE_RESERVED, 0)
    st32(w + PLACE_COUNT, <uint32_t>n)
    w += PLACE_SIZE
    for op_id, (hlc, actor, value) in items:
        st64(w + MOVE_HLC, <uint64_t>hlc)
        w[MOVE_ALEN] = <uchar>PyBytes_GET_SIZE(actor)
        w[MOVE_OLEN] = <uchar>PyBytes_GET_SIZE(op_id)
        st32(w + MOVE_VLEN, <uint32_t>PyBytes_GET_SIZE(value))
        w += MOVE_SIZE
        for part in (actor, op_id, value):
            memcpy(w, bptr(part), PyBytes_GET_SIZE(part))
            w += PyBytes_GET_SIZE(part)
    return out


cdef object merge_place(object rec, Op op):
    cdef dict moves = place_load(rec)
    op.epoch = 0
    op.bound = True
    op.prev = max(moves.items(), key=_place_order)[1][2] if moves else None
    place_keep(moves, op.op_id.encode(), (op.hlc, op.actor.encode(), b"" + op.vbytes))
    return place_encode(moves)


def tree_replay(places):
    """The entity tree a set of place records make (Kleppmann et al. 2021): every move in
    (hlc, actor, op id) order, a move under the entity itself or a descendant skipped;
    ``(placed, skipped)`` as in ``_core_py.tree_replay``."""
    cdef list moves = []
    cdef dict placed = {}
    cdef set skipped = set()
    cdef dict held
    for entity, rec in places:
        held = place_load(rec)
        for op_id, (hlc, actor, value) in held.items():
            moves.append((hlc, actor, op_id, entity, value))
    moves.sort()
    for hlc, actor, op_id, child, value in moves:
        parent, position = _unpackb(value, raw=False)
        up = parent
        while up is not None and up != child:
            found = placed.get(up)
            up = None if found is None else (<tuple>found)[0]
        if up is not None:
            skipped.add(op_id.decode())
            continue
        placed[child] = (parent, position, hlc, op_id.decode())
    return placed, skipped


# --------------------------------------------------------------------------------------------
# The kernel entry points.

def record_kind(rec):
    return _kind_of(rec)


cdef object merge_one(object rec, Op op):
    cdef int kind = op.kind
    if kind == K_LWW or kind == K_MAX or kind == K_MIN:
        return merge_register(rec, op)
    if kind == K_REVIEW:
        return merge_review(rec, op)
    if kind == K_ORSET:
        return merge_orset(rec, op)
    if kind == K_GROW:
        return merge_grow(rec, op)
    if kind == K_ENTITY:
        return merge_entity(rec, op)
    if kind == K_PLACE:
        return merge_place(rec, op)
    raise ValueError(f"unknown record kind {kind}")


def merge_op(rec, Op op not None):
    """Apply one operation to one record: bind its context, set ``op.prev``, return the new
    record (for a register the record itself when it still wins)."""
    return merge_one(rec, op)


cdef inline bint _same_bytes(object a, object b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(a)
    return n == PyBytes_GET_SIZE(b) and memcmp(bptr(a), bptr(b), <size_t>n) == 0


cdef inline object _changed(object new, object rec):
    if new is rec:
        return None
    if PyBytes_CheckExact(new) and PyBytes_CheckExact(rec):
        return None if _same_bytes(new, rec) else new
    return None if new == rec else new


def merge_ops(records, groups):
    """The batch loop: ``groups[i]`` is the list of ops (in batch order) for the key whose
    current record is ``records[i]`` (or None). Returns the new records, None where the
    record did not change."""
    cdef list out = []
    cdef Py_ssize_t i, n
    cdef object rec, new, ops, op
    if PyList_CheckExact(records) and PyList_CheckExact(groups):
        n = min(PyList_GET_SIZE(records), PyList_GET_SIZE(groups))
        for i in range(n):
            rec = (<list>records)[i]
            ops = (<list>groups)[i]
            new = rec
            if PyList_CheckExact(ops):
                for op in <list>ops:
                    new = merge_one(new, _as_op(op))
            else:
                for op in ops:
                    new = merge_one(new, _as_op(op))
            out.append(_changed(new, rec))
        return out
    for rec, ops in zip(records, groups):
        new = rec
        for op in ops:
            new = merge_one(new, _as_op(op))
        out.append(_changed(new, rec))
    return out


def join(a, b):
    """The least upper bound of two records of the same kind (None is the bottom)."""
    cdef Reg ra, rb
    cdef Review va, vb
    cdef Grow ga, gb
    cdef GElem* out = NULL
    cdef Py_ssize_t n
    cdef int kind
    if a is None:
        return b
    if b is None:
        return a
    kind = _kind_of(a)
    if kind != _kind_of(b):
        raise ValueError(f"cannot join records of kinds {kind} and {b[1]}")
    ba = _buffer(a)
    bb = _buffer(b)
    if kind == K_LWW or kind == K_MAX or kind == K_MIN or kind == K_ENTITY:
        reg_load(&ra, bptr(ba), PyBytes_GET_SIZE(ba))
        reg_load(&rb, bptr(bb), PyBytes_GET_SIZE(bb))
        return reg_join(a, &ra, &rb, b)
    if kind == K_REVIEW:
        memset(&va, 0, sizeof(Review))
        memset(&vb, 0, sizeof(Review))
        try:
            review_load(&va, bptr(ba), PyBytes_GET_SIZE(ba))
            review_load(&vb, bptr(bb), PyBytes_GET_SIZE(bb))
            return review_join_encode(va.cands, va.ncand, vb.cands, vb.ncand,
                                      va.tombs, va.ntomb, vb.tombs, vb.ntomb)
        finally:
            review_free(&va)
            review_free(&vb)
    if kind == K_ORSET:
        return orset_join(ba, bb)
    if kind == K_GROW:
        ga.elems = gb.elems = NULL
        ga.nelem = gb.nelem = 0
        try:
            grow_load(&ga, bptr(ba), PyBytes_GET_SIZE(ba))
            grow_load(&gb, bptr(bb), PyBytes_GET_SIZE(bb))
            out = <GElem*>_alloc(ga.nelem + gb.nelem, sizeof(GElem))
            n = grow_union(ga.elems, ga.nelem, gb.elems, gb.nelem, out)
            return grow_encode(out, n)
        finally:
            PyMem_Free(out)
            PyMem_Free(ga.elems)
            PyMem_Free(gb.elems)
    if kind == K_PLACE:
        moves = place_load(ba)
        for op_id, move in place_load(bb).items():
            place_keep(moves, op_id, move)
        return place_encode(moves)
    raise ValueError(f"unknown record kind {kind}")


# --------------------------------------------------------------------------------------------
# Reading

def resolve_record(rec, uint64_t d):
    """The record's own value as seen through an entity delete marker at hlc ``d``:
    ``(present, value, winner)`` as in ``_core_py.resolve_record``."""
    cdef Reg r
    cdef Review v
    cdef OrSet s
    cdef Grow g
    cdef Py_ssize_t i, k, best, top
    cdef const STag* t
    cdef const STag* latest = NULL
    cdef const GElem* gl = NULL
    cdef SElem* e
    cdef RCand* c
    cdef int kind = _kind_of(rec)
    buf = _buffer(rec)
    if kind == K_LWW or kind == K_MAX or kind == K_MIN or kind == K_ENTITY:
        reg_load(&r, bptr(buf), PyBytes_GET_SIZE(buf))
        if not reg_visible(&r, d):
            return False, None, None
        return True, new_bytes(r.val, r.vlen), (r.hlc, utf8_str(r.actor, r.alen),
                                                utf8_str(r.oid, r.olen),
                                                bool(r.flags & FL_OVERRIDE))
    if kind == K_REVIEW:
        memset(&v, 0, sizeof(Review))
        try:
            review_load(&v, bptr(buf), PyBytes_GET_SIZE(buf))
            best = review_best(v.cands, v.ncand, d)
            if best < 0 or v.cands[best].flags & FL_ABSENT:
                return False, None, None
            c = &v.cands[best]
            return True, new_bytes(c.val, c.vlen), (c.hlc, utf8_str(c.actor, c.alen),
                                                    utf8_str(c.oid, c.olen),
                                                    bool(c.flags & FL_OVERRIDE))
        finally:
            review_free(&v)
    if kind == K_ORSET:
        memset(&s, 0, sizeof(OrSet))
        try:
            orset_load(&s, bptr(buf), PyBytes_GET_SIZE(buf))
            out = []
            for i in range(s.nelem):
                e = &s.elems[i]
                top = -1
                for k in range(e.nlive):
                    t = &s.tags[e.live0 + k]
                    if t.hlc <= d:
                        continue
                    if top < 0 or _hlc_oid_cmp(t, &s.tags[e.live0 + top]) > 0:
                        top = k
                if top >= 0:
                    out.append(new_bytes(e.p, e.n))
                    t = &s.tags[e.live0 + top]
                    if latest == NULL or _hlc_oid_cmp(t, latest) > 0:
                        latest = t
            if not out:
                return False, None, None
            return True, out, (latest.hlc, None, utf8_str(latest.oid, latest.olen), False)
        finally:
            orset_free(&s)
    if kind == K_GROW:
        g.elems = NULL
        g.nelem = 0
        try:
            grow_load(&g, bptr(buf), PyBytes_GET_SIZE(buf))
            out = []
            for i in range(g.nelem):
                if g.elems[i].hlc <= d:
                    continue
                out.append(new_bytes(g.elems[i].p, g.elems[i].n))
                if gl == NULL or g.elems[i].hlc > gl.hlc or (
                        g.elems[i].hlc == gl.hlc and bytes_cmp(g.elems[i].oid, g.elems[i].olen,
                                                              gl.oid, gl.olen) > 0):
                    gl = &g.elems[i]
            if not out:
                return False, None, None
            return True, out, (gl.hlc, None, utf8_str(gl.oid, gl.olen), False)
        finally:
            PyMem_Free(g.elems)
    if kind == K_PLACE:
        seen = [item for item in place_load(buf).items() if item[1][0] > d]
        if not seen:
            return False, None, None
        op_id, (hlc, actor, value) = max(seen, key=_place_order)
        return True, value, (hlc, actor.decode(), op_id.decode(), False)
    raise ValueError(f"unknown record kind {kind}")


cdef inline int _hlc_oid_cmp(const STag* a, const STag* b) noexcept nogil:
    """(hlc, op id)."""
    if a.hlc != b.hlc:
        return 1 if a.hlc > b.hlc else -1
    return bytes_cmp(a.oid, a.olen, b.oid, b.olen)


def review_candidates(rec, uint64_t d):
    """The visible candidates of a review record, effective one last:
    a list of ``(hlc, actor, op id, present, value bytes)``."""
    cdef Review v
    cdef Py_ssize_t i
    cdef RCand* c
    buf = _buffer(rec)
    memset(&v, 0, sizeof(Review))
    try:
        review_load(&v, bptr(buf), PyBytes_GET_SIZE(buf))
        if v.ncand > 1:
            qsort(v.cands, <size_t>v.ncand, sizeof(RCand), _cmp_cand_order)
        out = []
        for i in range(v.ncand):
            c = &v.cands[i]
            if c.hlc > d:
                out.append((c.hlc, utf8_str(c.actor, c.alen), utf8_str(c.oid, c.olen),
                            not (c.flags & FL_ABSENT), new_bytes(c.val, c.vlen)))
        return out
    finally:
        review_free(&v)


def compact_record(rec, uint64_t horizon, uint64_t d):
    """Drop what is causally stable (older than ``horizon``) and cannot change the resolved
    state any more. Returns the new record, or None to delete it."""
    cdef Reg r
    cdef Review v
    cdef OrSet s
    cdef Grow g
    cdef Writer w
    cdef STag* live = NULL
    cdef STag* tombs = NULL
    cdef SWm* wms = NULL
    cdef Py_ssize_t i, k, nc, nt, nl, nw, count = 0
    cdef SElem* e
    cdef int kind = _kind_of(rec)
    cdef uint64_t hidden_below = d if 0 < d < horizon else 0
    buf = _buffer(rec)
    if kind == K_LWW or kind == K_MAX or kind == K_MIN:
        reg_load(&r, bptr(buf), PyBytes_GET_SIZE(buf))
        if r.flags & FL_ABSENT and r.hlc < horizon:
            return None
        if kind == K_LWW:
            return None if r.hlc <= hidden_below else rec
        if r.cutoff and r.cutoff < horizon and r.hlc > r.cutoff:
            r.cutoff = 0
            return reg_pack(&r)
        return rec
    if kind == K_ENTITY or kind == K_PLACE:
        return rec  # markers go with what is behind them; every move stays
    if kind == K_REVIEW:
        memset(&v, 0, sizeof(Review))
        try:
            review_load(&v, bptr(buf), PyBytes_GET_SIZE(buf))
            nc = 0
            for i in range(v.ncand):
                if v.cands[i].hlc > hidden_below:
                    v.cands[nc] = v.cands[i]
                    nc += 1
            nt = 0
            for i in range(v.ntomb):
                if v.tombs[i].hlc >= horizon:
                    v.tombs[nt] = v.tombs[i]
                    nt += 1
            return review_encode(v.cands, nc, v.tombs, nt) if nc or nt else None
        finally:
            review_free(&v)
    if kind == K_ORSET:
        memset(&s, 0, sizeof(OrSet))
        w.buf = NULL
        try:
            orset_load(&s, bptr(buf), PyBytes_GET_SIZE(buf))
            live = <STag*>_alloc(s.ntag, sizeof(STag))
            tombs = <STag*>_alloc(s.ntomb, sizeof(STag))
            wms = <SWm*>_alloc(s.nwm, sizeof(SWm))
            w_init(&w, PyBytes_GET_SIZE(buf))
            w.pos = SET_SIZE
            for i in range(s.nelem):
                e = &s.elems[i]
                nl = 0
                for k in range(e.nlive):
                    if s.tags[e.live0 + k].hlc > hidden_below:
                        live[nl] = s.tags[e.live0 + k]
                        nl += 1
                nt = 0
                for k in range(e.ntomb):
                    if s.tombs[e.tomb0 + k].hlc >= horizon:
                        tombs[nt] = s.tombs[e.tomb0 + k]
                        nt += 1
                nw = 0
                for k in range(e.nwm):
                    if s.wms[e.wm0 + k].hlc >= horizon:
                        wms[nw] = s.wms[e.wm0 + k]
                        nw += 1
                emit_elem(&w, e.p, e.n, live, nl, tombs, nt, wms, nw, &count)
            out = w_finish_set(&w, K_ORSET, count)
            return out if count else None
        finally:
            PyMem_Free(w.buf)
            PyMem_Free(live)
            PyMem_Free(tombs)
            PyMem_Free(wms)
            orset_free(&s)
    if kind == K_GROW:
        g.elems = NULL
        g.nelem = 0
        try:
            grow_load(&g, bptr(buf), PyBytes_GET_SIZE(buf))
            nc = 0
            for i in range(g.nelem):
                if g.elems[i].hlc > hidden_below:
                    g.elems[nc] = g.elems[i]
                    nc += 1
            return grow_encode(g.elems, nc) if nc else None
        finally:
            PyMem_Free(g.elems)
    raise ValueError(f"unknown record kind {kind}")


# --------------------------------------------------------------------------------------------
# Op log entries: one msgpack array per operation, with its bound context.

# PERF: msgpack.packb builds a Packer (and its buffer) per call; one shared Packer halves the
# cost of an entry. The flag hands a re-entrant call (a finaliser running mid-pack) its own.
cdef object _packer = _Packer(use_bin_type=True)
cdef bint _packer_busy = False


cdef object _pack_any(object o):
    """``msgpack.packb(o, use_bin_type=True)`` through the shared Packer."""
    global _packer_busy
    if _packer_busy:
        return _Packer(use_bin_type=True).pack(o)
    _packer_busy = True
    try:
        return _packer.pack(o)
    finally:
        _packer_busy = False


# PERF: an entry is a fixed array of mostly strings, ints and None. Writing those directly,
# and handing anything else (a map value, a subclass, an int msgpack refuses) to msgpack's
# Packer one item at a time, gives the same bytes (an array's bytes are its items' bytes
# concatenated) at a third of the cost of building the list and packing it (measured: ~376
# -> ~120 ns for a scalar set_field entry). NOTE: a value handed over restarts msgpack's
# nesting limit (511), so only a value nested ~500 deep could pack here and not there.

cdef inline void _be16(uchar* q, uint16_t v) noexcept nogil:
    q[0] = <uchar>(v >> 8)
    q[1] = <uchar>v


cdef inline void _be32(uchar* q, uint32_t v) noexcept nogil:
    q[0] = <uchar>(v >> 24)
    q[1] = <uchar>(v >> 16)
    q[2] = <uchar>(v >> 8)
    q[3] = <uchar>v


cdef inline void _be64(uchar* q, uint64_t v) noexcept nogil:
    _be32(q, <uint32_t>(v >> 32))
    _be32(q + 4, <uint32_t>v)


cdef int mp_uint(Writer* w, uint64_t d) except -1:
    """msgpack's ``pack_unsigned_long_long``."""
    cdef uchar* q
    w_reserve(w, 9)
    q = w.buf + w.pos
    if d < 128:
        q[0] = <uchar>d
        w.pos += 1
    elif d < 256:
        q[0] = 0xcc
        q[1] = <uchar>d
        w.pos += 2
    elif d < 65536:
        q[0] = 0xcd
        _be16(q + 1, <uint16_t>d)
        w.pos += 3
    elif d <= U32_MAX:
        q[0] = 0xce
        _be32(q + 1, <uint32_t>d)
        w.pos += 5
    else:
        q[0] = 0xcf
        _be64(q + 1, d)
        w.pos += 9
    return 0


cdef int mp_int(Writer* w, int64_t d) except -1:
    """msgpack's ``pack_long_long`` (a non-negative int as ``mp_uint``)."""
    cdef uchar* q
    if d >= 0:
        return mp_uint(w, <uint64_t>d)
    w_reserve(w, 9)
    q = w.buf + w.pos
    if d >= -32:
        q[0] = <uchar>(<uint64_t>d & 0xFF)
        w.pos += 1
    elif d >= -128:
        q[0] = 0xd0
        q[1] = <uchar>(<uint64_t>d & 0xFF)
        w.pos += 2
    elif d >= -32768:
        q[0] = 0xd1
        _be16(q + 1, <uint16_t>(<uint64_t>d & 0xFFFF))
        w.pos += 3
    elif d >= INT32_LOW:
        q[0] = 0xd2
        _be32(q + 1, <uint32_t>(<uint64_t>d & 0xFFFFFFFF))
        w.pos += 5
    else:
        q[0] = 0xd3
        _be64(q + 1, <uint64_t>d)
        w.pos += 9
    return 0


cdef int mp_len(Writer* w, Py_ssize_t n, int fix, Py_ssize_t fixmax, int t8, int t16,
                int t32) except -1:
    """A str / bin / array header: the fix form below ``fixmax``, then 8 bits (when ``t8``),
    16 bits, 32 bits."""
    cdef uchar* q
    w_reserve(w, 5)
    q = w.buf + w.pos
    if n < fixmax:
        q[0] = <uchar>(fix | n)
        w.pos += 1
    elif t8 and n < 256:
        q[0] = <uchar>t8
        q[1] = <uchar>n
        w.pos += 2
    elif n < 65536:
        q[0] = <uchar>t16
        _be16(q + 1, <uint16_t>n)
        w.pos += 3
    else:
        q[0] = <uchar>t32
        _be32(q + 1, <uint32_t>n)
        w.pos += 5
    return 0


cdef const char* _utf8_or_null(object s, Py_ssize_t* n) noexcept:
    """The UTF-8 of a str, or NULL (error cleared) when it has none (lone surrogates)."""
    cdef const char* u = _AsUTF8AndSize_noexc(s, n)
    if u == NULL:
        PyErr_Clear()
    return u


cdef int mp_obj(Writer* w, object o, int depth) except -1:
    """One value as ``msgpack.packb(o, use_bin_type=True)`` writes it."""
    cdef long long ll
    cdef unsigned long long ull
    cdef double f
    cdef const char* u
    cdef Py_ssize_t n, i
    cdef uchar* q
    if o is None:
        w_reserve(w, 1)
        w.buf[w.pos] = 0xc0
        w.pos += 1
        return 0
    if o is True or o is False:
        w_reserve(w, 1)
        w.buf[w.pos] = 0xc3 if o is True else 0xc2
        w.pos += 1
        return 0
    if PyLong_CheckExact(o):
        if o > 0:
            ull = PyLong_AsUnsignedLongLong(o)
            if not (ull == <unsigned long long>-1 and PyErr_Occurred() != NULL):
                return mp_uint(w, ull)
        else:
            ll = PyLong_AsLongLong(o)
            if not (ll == -1 and PyErr_Occurred() != NULL):
                return mp_int(w, ll)
        PyErr_Clear()  # out of range: msgpack says how, below
    elif PyFloat_CheckExact(o):
        f = <double>o
        w_reserve(w, 9)
        q = w.buf + w.pos
        q[0] = 0xcb
        memcpy(&ull, &f, 8)
        _be64(q + 1, ull)
        w.pos += 9
        return 0
    elif PyUnicode_CheckExact(o):
        u = _utf8_or_null(o, &n)
        if u != NULL and n <= U32_MAX:
            mp_len(w, n, 0xa0, 32, 0xd9, 0xda, 0xdb)
            w_reserve(w, n)
            w_mem(w, <const uchar*>u, n)
            return 0
    elif PyBytes_CheckExact(o):
        n = PyBytes_GET_SIZE(o)
        if n <= U32_MAX:
            mp_len(w, n, 0, 0, 0xc4, 0xc5, 0xc6)
            w_reserve(w, n)
            w_mem(w, bptr(o), n)
            return 0
    elif PyList_CheckExact(o) and depth < 8:
        n = PyList_GET_SIZE(o)
        if n <= U32_MAX:
            mp_len(w, n, 0x90, 16, 0, 0xdc, 0xdd)
            for i in range(n):
                mp_obj(w, (<list>o)[i], depth + 1)
            return 0
    b = _pack_any(o)
    n = PyBytes_GET_SIZE(b)
    w_reserve(w, n)
    w_mem(w, bptr(b), n)
    return 0


cdef int mp_entry(Writer* w, Op op) except -1:
    """One op-log entry: ``msgpack.packb(_entry_fields(op), use_bin_type=True)``."""
    cdef uchar* q
    cdef list kids
    w_reserve(w, 4)
    q = w.buf + w.pos
    q[0] = 0xdc  # array 16 (of ENTRY_FIELDS items, in the order of _layout.ENTRY)
    _be16(q + 1, ENTRY_FIELDS)
    q[3] = ENTRY_VERSION
    w.pos += 4
    mp_obj(w, op.op_id, 0)
    mp_int(w, op.type)
    mp_obj(w, op.env, 0)
    mp_obj(w, op.entity, 0)
    mp_obj(w, op.field, 0)
    mp_obj(w, op.value, 0)
    mp_obj(w, op.elements, 0)
    mp_obj(w, op.actor, 0)
    mp_obj(w, op.actor_class, 0)
    mp_obj(w, op.intent, 0)
    mp_uint(w, op.hlc)
    mp_obj(w, op.base, 0)
    mp_obj(w, op.observed, 0)
    mp_uint(w, op.epoch)
    w_reserve(w, 1)
    w.buf[w.pos] = 0xc3 if op.override else 0xc2
    w.pos += 1
    mp_obj(w, op.prev, 0)
    mp_obj(w, op.signature, 0)
    mp_obj(w, op.key_id, 0)
    if op.children is None:
        mp_obj(w, None, 0)
    else:
        kids = [_as_op(c) for c in op.children]
        mp_len(w, len(kids), 0x90, 16, 0, 0xdc, 0xdd)
        for c in kids:
            mp_entry(w, <Op>c)
    mp_int(w, op.kind)
    return 0


def encode_entry(Op op not None):
    return _encode_entry(op)


cdef object _encode_entry(Op op):
    cdef Writer w
    w.buf = NULL
    try:
        w_init(&w, 256)
        mp_entry(&w, op)
        return new_bytes(w.buf, w.pos)
    finally:
        PyMem_Free(w.buf)


cdef list _unpack_fields(object f):
    """``f`` as a list of exactly 21 items, or the error tuple unpacking would raise."""
    if PyList_CheckExact(f) and PyList_GET_SIZE(f) == ENTRY_FIELDS:
        return <list>f
    try:
        it = iter(f)
    except TypeError:
        raise TypeError(f"cannot unpack non-iterable {type(f).__name__} object") from None
    items = []
    for x in it:
        if len(items) == ENTRY_FIELDS:
            raise ValueError(f"too many values to unpack (expected {ENTRY_FIELDS})")
        items.append(x)
    if len(items) < ENTRY_FIELDS:
        raise ValueError(f"not enough values to unpack (expected {ENTRY_FIELDS}, "
                         f"got {len(items)})")
    return items


cdef Op _op_from_fields(object f):
    cdef Op op = Op.__new__(Op)
    cdef list v = _unpack_fields(f)
    op.op_id = v[E_OP_ID]
    op.type = v[E_TYPE]
    op.env = v[E_ENV]
    op.entity = v[E_ENTITY]
    op.field = v[E_FIELD]
    op.value = v[E_VALUE]
    op.elements = v[E_ELEMENTS]
    op.actor = v[E_ACTOR]
    op.actor_class = v[E_ACTOR_CLASS]
    op.intent = v[E_INTENT]
    op.hlc = v[E_HLC]
    op.base = v[E_BASE]
    op.observed = v[E_OBSERVED]
    op.epoch = v[E_EPOCH]
    op.override = v[E_OVERRIDE]
    op.prev = v[E_PREV]
    op.signature = v[E_SIGNATURE]
    op.key_id = v[E_KEY_ID]
    children = v[E_CHILDREN]
    op.kind = v[E_KIND]
    if children is not None:
        op.children = [_op_from_fields(c) for c in children]
    op.bound = True
    return op


def decode_entry(data):
    return _op_from_fields(_unpackb(data, raw=False, strict_map_key=False))


# --------------------------------------------------------------------------------------------
# The batch path around the merge: building ops, stamping them, logging them.

def prepare_ops(raws, table, actor, actor_class, slow):
    """Client operation dicts -> ``Op`` objects, in order, written by ``actor``.

    PERF: the common shapes, a ``set_field`` of an int, float, string, bool, duration or
    plain JSON map, or an ``add_elements`` of such scalars, with nothing but ``env`` and
    ``intent`` besides, are checked and built here against ``table`` (see
    ``Engine._fast_table``) without Python code, their field's own constraints (min, max,
    one_of, pattern) included; anything else, anything doubtful and any value breaking a
    constraint goes to ``slow``, the engine's full validator and the source of every error
    message (and refusal). Both paths give equal ops (tested).
    """
    cdef list out = []
    cdef Py_ssize_t i = 0
    cdef tuple t = table
    for raw in raws:
        op = _fast_op(raw, t, actor, actor_class)
        out.append(slow(raw, i) if op is None else op)
        i += 1
    return out


cdef extern from "Python.h":
    bint PyDict_CheckExact(object o)
    Py_ssize_t PyDict_Size(object o)
    object PyDict_GetItem_borrowed "PyDict_GetItemWithError" (object d, object k)

cdef extern from "math.h":
    bint isfinite(double x) nogil

cdef int _MAX_INTENT = 4096
cdef Py_ssize_t _MAX_ENTITY_NAME = 200  # schema._ENTITY_NAME_RE (store keys hold <= 511 bytes)


cdef inline bint _name_char(uchar c, bint first) noexcept nogil:
    if (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122):
        return True
    return not first and (c == 95 or c == 46 or c == 45)  # _ . -


cdef int _parse_duration(const uchar* p, Py_ssize_t n, long long* out) noexcept:
    """``parse_duration`` for plain ASCII text ("1h30m", "250ms", "0"): units d, h, m, s, ms,
    largest first, each at most once. -1 for anything else (the validator decides)."""
    cdef long long total = 0, num, factor
    cdef Py_ssize_t i = 0, start
    cdef int rank, last = 0  # 1 d, 2 h, 3 m, 4 s, 5 ms: each unit must outrank the last
    if n == 1 and p[0] == 48:
        out[0] = 0
        return 0
    if n == 0:
        return -1
    while i < n:
        start = i
        num = 0
        while i < n and 48 <= p[i] <= 57:
            if i - start >= 15:
                return -1
            num = num * 10 + (p[i] - 48)
            i += 1
        if i == start or i == n:
            return -1
        if p[i] == 100:
            rank, factor = 1, 86_400_000
        elif p[i] == 104:
            rank, factor = 2, 3_600_000
        elif p[i] == 109 and i + 1 < n and p[i + 1] == 115:
            rank, factor = 5, 1
            i += 1
        elif p[i] == 109:
            rank, factor = 3, 60_000
        elif p[i] == 115:
            rank, factor = 4, 1_000
        else:
            return -1
        i += 1
        if rank <= last or num > (9_223_372_036_854_775_807 - total) // factor:
            return -1
        last = rank
        total += num * factor
    out[0] = total
    return 0


cdef object _DOUBT = object()


cdef object _fast_scalar(object value, int vkind):
    """A scalar of value kind ``vkind`` (V_INT, V_FLOAT, V_STRING, V_BOOL, V_DURATION) as the
    validator would normalise it, or ``_DOUBT`` for anything it should judge itself."""
    cdef long long ll
    cdef const char* u
    cdef Py_ssize_t un
    if vkind == V_INT:
        if PyLong_CheckExact(value):
            ll = PyLong_AsLongLong(value)
            if not (ll == -1 and PyErr_Occurred() != NULL):
                return value
            PyErr_Clear()
    elif vkind == V_FLOAT:
        if PyFloat_CheckExact(value) and isfinite(<double>value):
            return value
    elif vkind == V_STRING:
        if PyUnicode_CheckExact(value) and _utf8_or_null(value, &un) != NULL:
            return value
    elif vkind == V_BOOL:
        if value is True or value is False:
            return value
    elif vkind == V_DURATION:
        if PyLong_CheckExact(value):
            ll = PyLong_AsLongLong(value)
            if not (ll == -1 and PyErr_Occurred() != NULL) and ll >= 0:
                return value
            PyErr_Clear()
        elif PyUnicode_CheckExact(value):
            u = _utf8_or_null(value, &un)
            if u != NULL and _parse_duration(<const uchar*>u, un, &ll) == 0:
                return ll
    return _DOUBT


cdef int _MAX_MAP_DEPTH = 64  # schema._MAX_MAP_DEPTH


cdef int _json_pack(Writer* w, object o, int depth) except -1:
    """``msgpack.packb(o, use_bin_type=True)`` of a plain JSON value that the validator keeps
    as it is (str keys, int64 ints, finite floats, exact lists and dicts, not too deep);
    1 (part written) for anything else, for the validator to judge."""
    cdef Py_ssize_t n
    cdef long long ll
    if depth > _MAX_MAP_DEPTH:
        return 1
    if o is None or o is True or o is False:
        return mp_obj(w, o, 0)
    if PyLong_CheckExact(o):
        ll = PyLong_AsLongLong(o)
        if ll == -1 and PyErr_Occurred() != NULL:
            PyErr_Clear()
            return 1
        return mp_obj(w, o, 0)
    if PyFloat_CheckExact(o):
        return mp_obj(w, o, 0) if isfinite(<double>o) else 1
    if PyUnicode_CheckExact(o):
        return mp_obj(w, o, 0) if _utf8_or_null(o, &n) != NULL else 1
    if PyList_CheckExact(o):
        mp_len(w, PyList_GET_SIZE(o), 0x90, 16, 0, 0xdc, 0xdd)
        for item in <list>o:
            if _json_pack(w, item, depth + 1):
                return 1
        return 0
    if PyDict_CheckExact(o):
        mp_len(w, PyDict_Size(o), 0x80, 16, 0, 0xde, 0xdf)
        for key, item in (<dict>o).items():
            if not PyUnicode_CheckExact(key) or _utf8_or_null(key, &n) == NULL:
                return 1
            mp_obj(w, key, 0)
            if _json_pack(w, item, depth + 1):
                return 1
        return 0
    return 1


cdef bint _breaks(object value, tuple limits) except -1:
    """Whether a normalised value breaks its field's own constraints, ``limits`` being
    ``(min, max, allowed values, pattern's search)`` (``Engine._fast_table``)."""
    low, high, allowed, search = limits
    if low is not None and value < low:
        return True
    if high is not None and value > high:
        return True
    if allowed is not None and value not in allowed:
        return True
    return search is not None and search(value) is None


cdef int _MAX_OP_ID = 128  # engine.ops._MAX_OP_ID


cdef bint _plain_op_id(object op_id):
    """A client op id the validator would take as it is: printable ASCII, 1 to _MAX_OP_ID
    bytes, and not of the form the stores generate (``<8 hex>-<hex>``: anything with a dash
    at index 8 goes to the validator, which decides)."""
    cdef Py_ssize_t n, i
    cdef const char* u
    if not PyUnicode_CheckExact(op_id):
        return False
    u = _utf8_or_null(op_id, &n)
    if u == NULL or n == 0 or n > _MAX_OP_ID or (n > 8 and u[8] == 45):
        return False
    for i in range(n):
        if <uchar>u[i] < 32 or <uchar>u[i] > 126:
            return False
    return True


cdef object _fast_op(object raw, tuple table, object actor, object actor_class):
    """The ``Op`` of a common ``set_field``, or None for the full validator to judge."""
    cdef Py_ssize_t n, tn, i, dot, nlen
    cdef const char* ent
    cdef const char* u
    cdef Py_ssize_t un
    cdef long long ll
    cdef double f
    cdef int vkind
    cdef Writer w
    cdef uchar* q
    cdef Op op
    if not PyDict_CheckExact(raw):
        return None
    n = PyDict_Size(raw)
    if n < 4 or n > 7:
        return None
    typ = raw.get("type")
    entity = raw.get("entity_id")
    field = raw.get("field")
    if not PyUnicode_CheckExact(typ):
        return None
    adding = typ == "add_elements"
    value = raw.get("elements") if adding else raw.get("value")
    if entity is None or field is None or value is None:
        return None
    extra = 0
    env = None
    intent = ""
    if "env" in raw:
        extra += 1
        env = raw["env"]
    if "intent" in raw:
        extra += 1
        intent = raw["intent"]
    op_id = None
    if "op_id" in raw:
        extra += 1
        op_id = raw["op_id"]
        if not _plain_op_id(op_id):
            return None
    if n != 4 + extra:  # some other key: let the validator name it
        return None
    if not ((adding or typ == "set_field") and PyUnicode_CheckExact(entity)
            and PyUnicode_CheckExact(field)):
        return None
    envs, base, types, max_value = table
    if env is None or (PyUnicode_CheckExact(env) and len(env) == 0):
        env = base
    elif not PyUnicode_CheckExact(env):
        return None
    env_id = (<dict>envs).get(env)
    if env_id is None:
        return None
    if intent is None:
        intent = ""
    elif not PyUnicode_CheckExact(intent) or len(intent) > _MAX_INTENT:
        return None
    elif _utf8_or_null(intent, &un) == NULL:
        return None
    ent = _utf8_or_null(entity, &tn)
    if ent == NULL:
        return None
    dot = -1
    for i in range(tn):
        if ent[i] == 46:
            dot = i
            break
    if dot <= 0 or dot == tn - 1:
        return None
    nlen = tn - dot - 1
    if nlen > _MAX_ENTITY_NAME:
        return None
    if not _name_char(<uchar>ent[dot + 1], True):
        return None
    for i in range(dot + 2, tn):
        if not _name_char(<uchar>ent[i], False):
            return None
    tinfo = (<dict>types).get(PyUnicode_DecodeUTF8(ent, dot, NULL))
    if tinfo is None:
        return None
    type_id, fields = <tuple>tinfo
    finfo = (<dict>fields).get(field)
    if finfo is None:
        return None
    field_id, kind, num_tag, vk, limits = <tuple>finfo
    vkind = vk
    op = Op.__new__(Op)
    if adding:
        # the elements of a set or grow field (value kind V_ELEMENTS + the item's kind)
        if vkind <= V_ELEMENTS or not PyList_CheckExact(value) or PyList_GET_SIZE(value) == 0:
            return None
        by_bytes = {}
        w_init(&w, 64)
        try:
            for item in <list>value:
                item = _fast_scalar(item, vkind - V_ELEMENTS)
                if item is _DOUBT or (limits is not None and _breaks(item, <tuple>limits)):
                    return None  # the validator names what is wrong
                w.pos = 0
                mp_obj(&w, item, 0)
                by_bytes[PyBytes_FromStringAndSize(<char*>w.buf, w.pos)] = item
        finally:
            PyMem_Free(w.buf)
        op.ebytes = sorted(by_bytes)
        if sum([PyBytes_GET_SIZE(b) for b in op.ebytes]) > <Py_ssize_t>max_value:
            return None
        op.elements = [by_bytes[b] for b in op.ebytes]
        op.type = T_ADD_ELEMENTS
    else:
        if vkind == V_MAP:  # a map: plain JSON, packed as msgpack would
            if not PyDict_CheckExact(value):
                return None
            w_init(&w, 128)
            try:
                if _json_pack(&w, value, 0):
                    return None
                op.vbytes = PyBytes_FromStringAndSize(<char*>w.buf, w.pos)
            finally:
                PyMem_Free(w.buf)
        else:
            value = _fast_scalar(value, vkind)
            if value is _DOUBT or (limits is not None and _breaks(value, <tuple>limits)):
                return None  # the validator names what is wrong
            w_init(&w, 16)
            try:
                mp_obj(&w, value, 0)
                op.vbytes = PyBytes_FromStringAndSize(<char*>w.buf, w.pos)
            finally:
                PyMem_Free(w.buf)
        if PyBytes_GET_SIZE(op.vbytes) > <Py_ssize_t>max_value:
            return None
        op.value = value
        op.type = T_SET_FIELD
    if op_id is not None:
        op.op_id = op_id
    op.env = env
    op.entity = entity
    op.field = field
    op.kind = kind
    op.num_tag = num_tag
    op.actor = actor
    op.actor_class = actor_class
    op.intent = intent
    key = PyBytes_FromStringAndSize(NULL, nlen + 7)
    q = <uchar*>PyBytes_AS_STRING(key)
    _be16(q, <uint16_t>env_id)
    _be16(q + 2, <uint16_t>type_id)
    memcpy(q + 4, ent + dot + 1, <size_t>nlen)
    q[4 + nlen] = 0
    _be16(q + 5 + nlen, <uint16_t>field_id)
    op.key = key
    return op


def stamp_ops(ops, clock, wall_ms, max_offset_ms, prefix, horizon, first_seq):
    """Give each op its sequence number, its HLC and, if the client sent none, its op id;
    return the clock after the batch (see ``_core_py.stamp_ops``)."""
    cdef Op op
    seq = first_seq
    for o in ops:
        op = _as_op(o)
        if op.hlc:
            if op.hlc < horizon:
                raise ValidationError(
                    f"hlc {hlc_format(op.hlc)} is older than this store's compaction horizon "
                    f"{hlc_format(horizon)}", field="hlc")
            clock = _hlc_receive(clock, op.hlc, wall_ms, max_offset_ms)
        else:
            clock = _hlc_tick(clock, wall_ms)
            op.hlc = clock
        op.seq = seq
        if not op.op_id:
            op.op_id = f"{prefix}{seq:x}"
        seq += 1
    return clock


cdef object _marker_hlc(object rec):
    """The hlc of an entity marker record (``_REG.unpack_from(rec)[8]``)."""
    cdef object buf = _buffer(rec)
    need(0, REG_SIZE, PyBytes_GET_SIZE(buf))
    return ld64(bptr(buf) + REG_HLC)


def apply_batch(leaves, cursor):
    """Merge a batch of (field and entity) ops into the state table through an LMDB cursor
    of it: one read and at most one write per distinct key, keys in order. Returns
    ``(keys, groups, changed, markers)`` (see ``_core_py.apply_batch``)."""
    cdef Op op
    cdef dict markers = {}
    cdef dict groups = {}
    cdef dict changed = {}
    cdef Py_ssize_t n
    cursor_get = cursor.get
    for o in leaves:
        op = _as_op(o)
        key = op.key
        n = len(key)
        ekey = key[:n - 2 if n > 2 else 0] + b"\x00\x00"  # key[:-2], without wraparound
        d = markers.get(ekey)
        if d is None:
            rec = cursor_get(ekey)
            d = markers[ekey] = 0 if rec is None else _marker_hlc(rec)
        op.entity_epoch = d
        if op.type == T_DELETE_ENTITY and op.hlc > d:
            markers[ekey] = op.hlc
        found = groups.get(key)
        if found is None:
            groups[key] = [op]
        else:
            (<list>found).append(op)
    keys = sorted(groups)
    for key in keys:
        rec = cursor_get(key)
        new = rec
        for o in <list>groups[key]:
            new = merge_one(new, <Op>o)
        if _changed(new, rec) is not None:
            changed[key] = new
    if changed:
        cursor.putmulti(list(changed.items()))
    return keys, groups, changed, markers


def entity_blobs(ops, limit):
    """The values of the store's entity index for ``ops`` (see ``_core_py``)."""
    cdef Op op
    cdef set names = set()
    cdef list out = [], part = []
    cdef Py_ssize_t size = 0, lim = limit, n
    for o in ops:
        op = _as_op(o)
        if op.children:
            for child in op.children:
                names.add((<Op>_as_op(child)).entity)
        else:
            names.add(op.entity)
    for name in names:
        data = (<str>name).encode()
        n = PyBytes_GET_SIZE(data)
        if part and size + 1 + n > lim:
            out.append(b"\n".join(part))
            part, size = [], -1
        part.append(data)
        size += 1 + n
    if part:
        out.append(b"\n".join(part))
    return out


def encode_chunks(ops, clock, limit):
    """The op-log chunks of one commit, ``[(first seq, chunk bytes)]``: each chunk is
    ``count (u32) · clock (u64) · offsets (u32 each) · entries`` (``conflux.store.LogChunk``)
    and, unless one entry alone is larger, at most ``limit`` bytes (see ``_core_py``)."""
    cdef list todo = [_as_op(op) for op in ops]
    cdef Py_ssize_t n = len(todo), i, a, k, size, start
    cdef uint64_t c = clock
    cdef Py_ssize_t lim = limit
    cdef Py_ssize_t* ends = NULL
    cdef Writer w
    cdef list out = []
    cdef uchar* q
    w.buf = NULL
    try:
        ends = <Py_ssize_t*>_alloc(n + 1, sizeof(Py_ssize_t))
        w_init(&w, 128 * n)
        ends[0] = 0
        for i in range(n):  # every entry, back to back; ends[i + 1] is where entry i stops
            mp_entry(&w, <Op>todo[i])
            ends[i + 1] = w.pos
        a = 0
        while a < n:
            k = 1  # entries in this chunk: as many as fit, at least one
            while a + k < n and (CHUNK_HEAD_SIZE + CHUNK_OFFSET_SIZE * (k + 1)
                                 + ends[a + k + 1] - ends[a] <= lim):
                k += 1
            size = ends[a + k] - ends[a]
            if k > U32_MAX or size > U32_MAX:
                _uint_error()
            chunk = PyBytes_FromStringAndSize(NULL, CHUNK_HEAD_SIZE + CHUNK_OFFSET_SIZE * k + size)
            q = <uchar*>PyBytes_AS_STRING(chunk)
            st32(q + CHUNK_HEAD_COUNT, <uint32_t>k)
            st64(q + CHUNK_HEAD_CLOCK, c)
            start = ends[a]
            q += CHUNK_HEAD_SIZE
            for i in range(k):
                st32(q + CHUNK_OFFSET_SIZE * i, <uint32_t>(ends[a + i] - start))
            memcpy(q + CHUNK_OFFSET_SIZE * k, w.buf + start, <size_t>size)
            out.append(((<Op>todo[a]).seq, chunk))
            a += k
        return out
    finally:
        PyMem_Free(w.buf)
        PyMem_Free(ends)


# ---------------------------------------------------------------------------------------------
# Parsed input: how deep and how big, before anything encodes it


def value_extent(value, int max_depth, Py_ssize_t budget):
    """``_core_py.value_extent``: the size (a lower bound of the msgpack encoding, shared parts
    counted each time they are reached), -1 past ``max_depth`` levels, -2 past ``budget``."""
    return _extent(value, 1, max_depth, budget, 0)


cdef Py_ssize_t _extent(object value, int depth, int max_depth, Py_ssize_t budget,
                        Py_ssize_t size) except -3:
    if PyUnicode_Check(value):
        size += PyUnicode_GET_LENGTH(value) + 1
    elif PyBytes_Check(value):
        size += PyBytes_GET_SIZE(value) + 1
    elif PyList_Check(value) or PyTuple_Check(value):
        if depth > max_depth:
            return -1
        size += 1
        if size > budget:
            return -2
        for item in value:
            size = _extent(item, depth + 1, max_depth, budget, size)
            if size < 0:
                return size
        return size
    elif PyDict_Check(value):
        if depth > max_depth:
            return -1
        size += 1
        if size > budget:
            return -2
        for key, item in (<dict>value).items():
            size += PyUnicode_GET_LENGTH(key) + 1 if PyUnicode_Check(key) else 1
            if size > budget:
                return -2
            size = _extent(item, depth + 1, max_depth, budget, size)
            if size < 0:
                return size
        return size
    else:
        size += 1
    return -2 if size > budget else size

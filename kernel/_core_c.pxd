# The typed contract of Conflux's compiled merge core (``_core_c.pyx``).
#
# Everything here works on raw record buffers: views (pointer + length) into the bytes of a
# record or of an operation's fields, never copies. The reference semantics, and the reason
# for every rule, are in ``_core_py.py``; the byte layouts are in ``FORMAT.md``.
#
# Exception specs: ``noexcept`` where a function cannot fail (pure C over views), ``except -1``
# for int-returning functions that raise (short buffers, struct limits), ``object`` returns
# propagate exceptions as NULL. Functions marked ``nogil`` touch no Python object.

from libc.stdint cimport int64_t, uint64_t

ctypedef unsigned char uchar

# The record kinds, op types, register flags, number tags and layouts (K_*, T_*, FL_*, TAG_*,
# sizes and offsets) are not declared here: the .pyx cimports them from the declaration file
# setup.py generates from ``_layout.py``, their one definition.

cdef enum:
    CMP_UNORDERED = 2        # a NaN in the numeric position: neither >= holds


cdef class Op:
    # Identity and content, filled by the engine.
    cdef public object op_id
    cdef public int type
    cdef public object env
    cdef public object entity
    cdef public object field
    cdef public object value
    cdef public object vbytes
    cdef public object elements
    cdef public object ebytes
    cdef public object actor
    cdef public object actor_class
    cdef public object intent
    cdef public uint64_t hlc
    # Bound context (merge_op fills it unless ``bound``), and ``prev``.
    cdef public object base
    cdef public object observed
    cdef public bint override
    cdef public uint64_t epoch
    cdef public bint bound
    cdef public object prev
    cdef public object signature
    cdef public object key_id
    cdef public object children
    # Keying, filled by the engine before the merge.
    cdef public int kind
    cdef public int num_tag
    cdef public object key
    cdef public uint64_t entity_epoch
    cdef public object seq


# -- views ---------------------------------------------------------------------------------

# A register record (or an operation's candidate register, never packed unless it wins).
ctypedef struct Reg:
    int kind
    int flags
    int tag
    uint64_t epoch
    uint64_t hlc
    uint64_t cutoff          # 0 unless FL_CUTOFF
    int64_t inum
    double fnum
    const uchar* actor
    Py_ssize_t alen
    const uchar* oid
    Py_ssize_t olen
    const uchar* val
    Py_ssize_t vlen

# A review candidate.
ctypedef struct RCand:
    const uchar* oid
    Py_ssize_t olen
    const uchar* actor
    Py_ssize_t alen
    const uchar* val
    Py_ssize_t vlen
    uint64_t epoch
    uint64_t hlc
    Py_ssize_t seq
    int flags

# An or-set live tag (epoch, hlc) or a tombstone (epoch 0, hlc of the latest remover); also a
# review tombstone.
ctypedef struct STag:
    const uchar* oid
    Py_ssize_t olen
    uint64_t epoch
    uint64_t hlc
    Py_ssize_t seq

# An or-set watermark: every sequenced tag ``<node>-<seq>`` with seq <= ``upto`` is dead.
ctypedef struct SWm:
    const uchar* node        # 8 bytes
    uint64_t upto
    uint64_t hlc
    Py_ssize_t seq           # read order (the last one read wins, as in a dict)

# An or-set element: its bytes and its ranges in the tag, tombstone and watermark arrays.
ctypedef struct SElem:
    const uchar* p
    Py_ssize_t n
    Py_ssize_t seq
    Py_ssize_t live0
    Py_ssize_t nlive
    Py_ssize_t tomb0
    Py_ssize_t ntomb
    Py_ssize_t wm0
    Py_ssize_t nwm
    Py_ssize_t raw0          # its bytes in the record, [raw0, raw1), when already canonical
    Py_ssize_t raw1          # (else -1): written back by copying them

# A grow-set element with its greatest mark (epoch, hlc, op id).
ctypedef struct GElem:
    const uchar* p
    Py_ssize_t n
    const uchar* oid
    Py_ssize_t olen
    uint64_t epoch
    uint64_t hlc
    Py_ssize_t seq

# A decoded review record (candidates and tombstones sorted by op id, one per op id).
ctypedef struct Review:
    RCand* cands
    Py_ssize_t ncand
    STag* tombs
    Py_ssize_t ntomb

# A decoded or-set record (elements sorted, one per element; tags sorted by op id,
# watermarks by node).
ctypedef struct OrSet:
    const uchar* base        # the record's bytes
    SElem* elems
    Py_ssize_t nelem
    STag* tags
    Py_ssize_t ntag
    STag* tombs
    Py_ssize_t ntomb
    SWm* wms
    Py_ssize_t nwm

# A decoded grow-set record (elements sorted, one per element).
ctypedef struct Grow:
    GElem* elems
    Py_ssize_t nelem

# A growable output buffer for the set encoders.
ctypedef struct Writer:
    uchar* buf
    Py_ssize_t pos
    Py_ssize_t cap


# -- kernels -------------------------------------------------------------------------------

cdef int bytes_cmp(const uchar* a, Py_ssize_t na, const uchar* b, Py_ssize_t nb) noexcept nogil

cdef int reg_load(Reg* r, const uchar* p, Py_ssize_t n) except -1
cdef int reg_cmp(const Reg* a, const Reg* b) noexcept nogil
cdef int reg_ge(const Reg* a, const Reg* b) except -1
cdef object reg_pack(const Reg* r)

cdef int review_load(Review* r, const uchar* p, Py_ssize_t n) except -1
cdef void review_free(Review* r) noexcept
cdef object review_encode(RCand* cands, Py_ssize_t ncand, STag* tombs, Py_ssize_t ntomb)

cdef int orset_load(OrSet* s, const uchar* p, Py_ssize_t n) except -1
cdef void orset_free(OrSet* s) noexcept
cdef bint tag_sequenced(const uchar* oid, Py_ssize_t olen, uint64_t* seq) noexcept nogil
cdef bint tag_dead(const STag* t, const STag* tombs, Py_ssize_t nt, const SWm* wms,
                   Py_ssize_t nw) noexcept nogil
cdef Py_ssize_t tags_alive(const STag* a, Py_ssize_t na, const STag* tombs, Py_ssize_t nt,
                           const SWm* wms, Py_ssize_t nw, STag* out) noexcept nogil
cdef Py_ssize_t wms_union_max(const SWm* a, Py_ssize_t na, const SWm* b, Py_ssize_t nb,
                              SWm* out) noexcept nogil

cdef int grow_load(Grow* g, const uchar* p, Py_ssize_t n) except -1
cdef object grow_encode(GElem* elems, Py_ssize_t n)

cdef object merge_register(object rec, Op op)
cdef object merge_entity(object rec, Op op)
cdef object merge_review(object rec, Op op)
cdef object merge_orset(object rec, Op op)
cdef object merge_grow(object rec, Op op)
cdef object merge_one(object rec, Op op)

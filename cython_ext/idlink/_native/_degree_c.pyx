# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Connection counting for the cluster cap: the compiled twin of `_degree_py`.

Same names, signatures and results as the twin, which is the specification.
Pairs live in a C++ `unordered_set<uint64_t>` keyed `min << 32 | max`, degrees
in a `vector<uint32_t>` indexed by id (ids are dense contact ids). An id far
beyond the ids seen so far goes to a small hash map instead, so that one
stray large id cannot allocate gigabytes.
"""

from cpython cimport array
from cpython.number cimport PyNumber_AsSsize_t
from cython.operator cimport dereference as deref, preincrement as inc
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libcpp.algorithm cimport sort, unique
from libcpp.unordered_map cimport unordered_map
from libcpp.unordered_set cimport unordered_set
from libcpp.vector cimport vector

import array as _array_module

include "_buffers.pxi"

cdef Py_ssize_t _MAX_ID = 0xFFFFFFFF
cdef size_t _DENSE_SLACK = 1 << 20  # ids this far past the vector still grow it
cdef array.array _UINT_TEMPLATE = _array_module.array("I")


cdef inline uint64_t _key(uint32_t a, uint32_t b) noexcept nogil:
    if a < b:
        return (<uint64_t>a << 32) | b
    return (<uint64_t>b << 32) | a


cdef inline uint32_t _id(object x) except? 0xFFFFFFFF:
    cdef Py_ssize_t value = PyNumber_AsSsize_t(x, ValueError)
    if value < 0 or value > _MAX_ID:
        raise ValueError(f"contact id {x} out of range 0..2**32-1")
    return <uint32_t>value


cdef Py_ssize_t _clique(
    unordered_set[uint64_t]& pairs, uint32_t* degree, const uint32_t* ids, size_t k
) except -1 nogil:
    """Connect every two of k distinct ids; return how many pairs were new."""
    cdef size_t i, j
    cdef Py_ssize_t new = 0
    cdef uint32_t a, b
    for i in range(k):
        a = ids[i]
        for j in range(i + 1, k):
            b = ids[j]
            if pairs.insert(_key(a, b)).second:
                degree[a] += 1
                degree[b] += 1
                new += 1
    return new


cdef size_t _distinct(vector[uint32_t]& ids) noexcept nogil:
    sort(ids.begin(), ids.end())
    return unique(ids.begin(), ids.end()) - ids.begin()


cdef class ConnectionCounter:
    # The first lines give the class an inspectable signature (__text_signature__).
    """ConnectionCounter()
--

Distinct-neighbour counts over records of dense contact ids."""

    cdef unordered_set[uint64_t] _pairs
    cdef vector[uint32_t] _degree  # by id, for the dense ids
    cdef unordered_map[uint32_t, uint32_t] _sparse  # ids far past the dense ones

    def __init__(self):
        pass

    cdef int _cover(self, uint32_t x) except -1:
        """Grow the vector over x when x is near the dense ids."""
        cdef size_t size = self._degree.size(), grown
        if x < size or x >= 2 * size + _DENSE_SLACK:
            return 0
        grown = 2 * size if 2 * size > x else <size_t>x + 1
        self._degree.resize(grown, 0)
        # Ids the vector now covers move over from the map.
        it = self._sparse.begin()
        while it != self._sparse.end():
            if deref(it).first < grown:
                self._degree[deref(it).first] = deref(it).second
                it = self._sparse.erase(it)
            else:
                inc(it)
        return 0

    cdef int _bump(self, uint32_t x) except -1:
        self._cover(x)
        if x < self._degree.size():
            self._degree[x] += 1
        else:
            self._sparse[x] += 1
        return 0

    cdef uint32_t _get(self, uint32_t x) noexcept:
        if x < self._degree.size():
            return self._degree[x]
        it = self._sparse.find(x)
        if it == self._sparse.end():
            return 0
        return deref(it).second

    cdef bint _connect(self, uint32_t a, uint32_t b) except -1:
        if a == b or not self._pairs.insert(_key(a, b)).second:
            return False
        self._bump(a)
        self._bump(b)
        return True

    def add_record(self, ids):
        """Connect every two distinct ids of one record; return how many pairs are new."""
        cdef vector[uint32_t] distinct
        for x in ids:  # all checked before anything changes
            distinct.push_back(_id(x))
        cdef size_t k = _distinct(distinct)
        cdef size_t i, j
        cdef Py_ssize_t new = 0
        if k < 2:
            return 0
        self._cover(distinct[k - 1])
        if distinct[k - 1] < self._degree.size():  # the common case: the loop without the GIL
            with nogil:
                new = _clique(self._pairs, self._degree.data(), distinct.data(), k)
            return new
        for i in range(k):
            for j in range(i + 1, k):
                new += self._connect(distinct[i], distinct[j])
        return new

    def connect(self, a, b):
        """Connect two ids; return True if the pair is new."""
        cdef uint32_t ca = _id(a)
        cdef uint32_t cb = _id(b)
        return self._connect(ca, cb)

    def connected(self, a, b):
        """Return whether a and b share a record (False for a == b)."""
        cdef uint32_t ca = _id(a)
        cdef uint32_t cb = _id(b)
        return ca != cb and self._pairs.count(_key(ca, cb)) > 0

    def degree(self, x):
        """Return how many distinct other ids x shares a record with (0 if unknown)."""
        return self._get(_id(x))

    def pairs(self):
        """Return the number of distinct connected pairs."""
        return self._pairs.size()


cdef bint _copy_typed(const index_t* kind, object values, vector[int64_t]& out) except -1:
    """Copy values into out if it is a buffer of kind's type; False if it is not."""
    cdef const index_t[:] view = _typed_view(kind, values)
    cdef Py_ssize_t i, m
    if view is None:
        return False
    m = view.shape[0]
    out.resize(m)
    with nogil:
        for i in range(m):
            out[i] = <int64_t>view[i]
    return True


cdef vector[int64_t] _as_indexes(object values, object overflow) except *:
    """Copy a typed integer buffer or a sequence of ints into a vector."""
    cdef vector[int64_t] out
    # uint64 is not among them: such ids go through the sequence path, which
    # refuses values above 2**63 - 1 with `overflow` rather than wrapping them.
    if (
        _copy_typed(<const uint32_t*>NULL, values, out)
        or _copy_typed(<const int64_t*>NULL, values, out)
        or _copy_typed(<const int32_t*>NULL, values, out)
    ):
        return out
    for value in values:
        out.push_back(PyNumber_AsSsize_t(value, overflow))
    return out


def count_connections(n, offsets, members):
    """Degrees of nodes 0..n-1 over records given in CSR form.

    Record r has members[offsets[r]:offsets[r+1]]; offsets must be
    non-decreasing and within members (an empty offsets means no records).
    Members must be below n. Returns an array('I') of n degrees.
    """
    cdef Py_ssize_t nodes = PyNumber_AsSsize_t(n, ValueError)
    if nodes < 0 or nodes > _MAX_ID + 1:
        raise ValueError(f"n must be in 0..2**32, not {n}")
    cdef vector[int64_t] bounds = _as_indexes(offsets, ValueError)
    cdef vector[int64_t] nodes_of = _as_indexes(members, IndexError)
    cdef int64_t size = <int64_t>nodes_of.size()
    cdef size_t r, records = bounds.size()
    cdef Py_ssize_t i
    for r in range(records):
        if bounds[r] < 0 or bounds[r] > size or (r + 1 < records and bounds[r] > bounds[r + 1]):
            raise ValueError("offsets must be non-decreasing and within members")
    for i in range(size):
        if nodes_of[i] < 0 or nodes_of[i] >= nodes:
            raise IndexError(f"member {nodes_of[i]} out of range 0..{nodes - 1}")
    cdef array.array degrees = array.clone(_UINT_TEMPLATE, nodes, True)
    cdef uint32_t* degree = degrees.data.as_uints
    cdef unordered_set[uint64_t] pairs
    cdef vector[uint32_t] record
    cdef int64_t j
    cdef size_t k
    with nogil:
        for r in range(1, records):
            record.clear()
            for j in range(bounds[r - 1], bounds[r]):
                record.push_back(<uint32_t>nodes_of[j])
            k = _distinct(record)
            if k >= 2:
                _clique(pairs, degree, record.data(), k)
    return degrees

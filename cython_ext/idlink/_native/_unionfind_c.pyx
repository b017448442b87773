# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Union-find over dense integer ids: the compiled twin of `_unionfind_py`.

Same names, signatures and results as the twin, which is the specification.
`UnionFind` keeps `vector[uint32_t]` parents and sizes (union by size, path
halving; root rule: the larger component's root wins, on a tie the smaller
id). `connected_components` reads typed buffers directly and runs its union
loop without the GIL.
"""

from cpython cimport array
from cpython.number cimport PyNumber_AsSsize_t
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libcpp.vector cimport vector

import array as _array_module

cdef Py_ssize_t _MAX_ELEMENTS = <Py_ssize_t>1 << 32
cdef array.array _UINT_TEMPLATE = _array_module.array("I")

include "_buffers.pxi"


cdef Py_ssize_t _count(object n) except -1:
    cdef Py_ssize_t value = PyNumber_AsSsize_t(n, ValueError)
    if value < 0 or value > _MAX_ELEMENTS:
        raise ValueError(f"the number of elements must be in 0..2**32, not {n}")
    return value


cdef inline uint32_t _find(uint32_t* parent, uint32_t x) noexcept nogil:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


cdef class UnionFind:
    # The first lines give the class an inspectable signature (__text_signature__).
    """UnionFind(n=0)
--

Union-find over dense int ids 0..n-1: union by size, path halving."""

    cdef vector[uint32_t] _parent
    cdef vector[uint32_t] _size

    def __init__(self, n=0):
        self.grow(n)

    def __len__(self):
        return self._parent.size()

    cdef inline uint32_t _check(self, object x) except? 0xFFFFFFFF:
        cdef Py_ssize_t value = PyNumber_AsSsize_t(x, IndexError)
        if value < 0 or <size_t>value >= self._parent.size():
            raise IndexError(f"element {x} out of range")
        return <uint32_t>value

    def add(self):
        """Append a new singleton and return its id."""
        cdef size_t x = self._parent.size()
        if <Py_ssize_t>x >= _MAX_ELEMENTS:
            raise ValueError("a union-find holds at most 2**32 elements")
        self._parent.push_back(<uint32_t>x)
        self._size.push_back(1)
        return x

    def grow(self, n):
        """Ensure at least n elements; the new ones are singletons."""
        cdef size_t target = <size_t>_count(n)
        cdef size_t x = self._parent.size()
        if target <= x:
            return
        self._parent.resize(target)
        self._size.resize(target, 1)
        cdef uint32_t* parent = self._parent.data()
        with nogil:
            while x < target:
                parent[x] = <uint32_t>x
                x += 1

    def find(self, x):
        """Return the root of x's component."""
        return _find(self._parent.data(), self._check(x))

    def union(self, a, b):
        """Join the components of a and b; return the root after the union."""
        cdef uint32_t* parent = self._parent.data()
        cdef uint32_t* size = self._size.data()
        cdef uint32_t ra = _find(parent, self._check(a))
        cdef uint32_t rb = _find(parent, self._check(b))
        cdef uint32_t t
        if ra == rb:
            return ra
        # Root rule: the larger component's root wins; on a tie the smaller id.
        if size[ra] < size[rb] or (size[ra] == size[rb] and rb < ra):
            t = ra
            ra = rb
            rb = t
        parent[rb] = ra
        size[ra] += size[rb]
        return ra

    def size(self, x):
        """Return the size of x's component."""
        return self._size[_find(self._parent.data(), self._check(x))]

    def same(self, a, b):
        """Return whether a and b are in one component."""
        cdef uint32_t ca = self._check(a)
        cdef uint32_t cb = self._check(b)
        cdef uint32_t* parent = self._parent.data()
        return _find(parent, ca) == _find(parent, cb)

    def roots(self):
        """Return the root of every element (index = element)."""
        cdef size_t x, n = self._parent.size()
        cdef uint32_t* parent = self._parent.data()
        return [_find(parent, <uint32_t>x) for x in range(n)]


cdef inline void _link(uint32_t* p, uint32_t x, uint32_t y) noexcept nogil:
    # Rem's algorithm with splicing, every parent no greater than its child:
    # each root is the smallest node of its component, which is exactly the
    # order connected_components numbers components in.
    cdef uint32_t z
    while p[x] != p[y]:
        if p[x] > p[y]:
            if p[x] == x:
                p[x] = p[y]
                return
            z = p[x]
            p[x] = p[y]
            x = z
        else:
            if p[y] == y:
                p[y] = p[x]
                return
            z = p[y]
            p[y] = p[x]
            y = z


cdef Py_ssize_t _link_all(
    uint32_t* p, uint64_t n, const index_t[:] src, const index_t[:] dst
) noexcept nogil:
    """Link every edge; return the index of the first edge out of range, or -1."""
    cdef Py_ssize_t i, m = src.shape[0]
    cdef uint64_t a, b
    for i in range(m):
        # A negative id wraps to a huge one and fails the same test.
        a = <uint64_t>src[i]
        b = <uint64_t>dst[i]
        if a >= n or b >= n:
            return i
        _link(p, <uint32_t>a, <uint32_t>b)
    return -1


cdef Py_ssize_t _link_typed(
    const index_t* kind, uint32_t* p, uint64_t n, object src, object dst
) except -2:
    """Link the edges if src and dst are both buffers of kind's type; -3 if they are not."""
    cdef const index_t[:] s = _typed_view(kind, src)
    cdef const index_t[:] d = _typed_view(kind, dst)
    cdef Py_ssize_t bad
    if s is None or d is None:
        return -3
    if s.shape[0] != d.shape[0]:
        raise ValueError("src and dst must have the same length")
    with nogil:
        bad = _link_all(p, n, s, d)
    return bad


cdef Py_ssize_t _link_buffers(uint32_t* p, uint64_t n, object src, object dst) except -2:
    """Link the edges if src and dst are buffers of one integer type; -3 if they are not."""
    # The types are tried in this order; the first that both src and dst are wins.
    cdef Py_ssize_t bad = _link_typed(<const uint32_t*>NULL, p, n, src, dst)
    if bad == -3:
        bad = _link_typed(<const int64_t*>NULL, p, n, src, dst)
    if bad == -3:
        bad = _link_typed(<const int32_t*>NULL, p, n, src, dst)
    if bad == -3:
        bad = _link_typed(<const uint64_t*>NULL, p, n, src, dst)
    return bad


def connected_components(n, src, dst):
    """Label the components of the graph on n nodes with edges src[i]-dst[i].

    `src` and `dst` are buffers of uint32 (array('I'), memoryview, numpy) or
    sequences of ints, of equal length. Returns (number of components,
    labels) where labels is an array('I') and labels[i] is the component of
    node i; components are numbered 0, 1, 2, ... in the order of their
    smallest node, so node 0 is always in component 0.
    """
    cdef Py_ssize_t nodes = _count(n)
    # The labels are built in place of the parent array.
    cdef array.array labels = array.clone(_UINT_TEMPLATE, nodes, False)
    cdef uint32_t* p = labels.data.as_uints
    cdef Py_ssize_t i, bad, m
    cdef Py_ssize_t a, b
    cdef uint64_t count = 0
    with nogil:
        for i in range(nodes):
            p[i] = <uint32_t>i
    bad = _link_buffers(p, <uint64_t>nodes, src, dst)
    if bad == -3:  # not typed buffers: sequences of Python ints
        sources = list(src)
        targets = list(dst)
        m = len(sources)
        if m != len(targets):
            raise ValueError("src and dst must have the same length")
        for i in range(m):
            a = PyNumber_AsSsize_t(sources[i], IndexError)
            b = PyNumber_AsSsize_t(targets[i], IndexError)
            if a < 0 or a >= nodes:
                raise IndexError(f"element {a} out of range")
            if b < 0 or b >= nodes:
                raise IndexError(f"element {b} out of range")
            _link(p, <uint32_t>a, <uint32_t>b)
    elif bad >= 0:
        raise IndexError(f"edge {bad} names a node out of range 0..{nodes - 1}")
    with nogil:
        for i in range(nodes):
            # Parents precede their children, so p[p[i]] already holds a label.
            if p[i] == <uint32_t>i:
                p[i] = <uint32_t>count
                count += 1
            else:
                p[i] = p[p[i]]
    return count, labels

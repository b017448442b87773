# Typed integer buffers, read in place: the one buffer dispatch of the kernels
# that take node ids (_unionfind_c, _degree_c). Included, not cimported, so
# that each extension stays a single module; it needs
# `from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t`.

ctypedef fused index_t:
    uint32_t
    int32_t
    int64_t
    uint64_t


cdef inline const index_t[:] _typed_view(const index_t* kind, object values):
    """Return values as a memoryview of kind's type, or None if it is not such a buffer.

    `kind` only selects the type (pass a cast NULL, e.g. `<const uint32_t*>NULL`):
    Cython picks the specialisation from it, so one body serves every type.
    """
    cdef const index_t[:] view
    try:
        view = values
    except (TypeError, ValueError, BufferError):
        return None
    return view

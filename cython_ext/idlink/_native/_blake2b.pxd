# The keyed BLAKE2b of _blake2b.h, declared once for every module that hashes
# (_contacts_c: contact PIDs; _bulk_c: a load's record hashes).
from libc.stdint cimport uint8_t


cdef extern from "_blake2b.h":
    ctypedef struct idl_blake2b:
        pass
    void idl_b2b_init_key(
        idl_blake2b* s, size_t outlen, const uint8_t* key, size_t keylen,
        const uint8_t* person, size_t personlen
    ) noexcept nogil
    void idl_b2b_update(idl_blake2b* s, const uint8_t* data, size_t n) noexcept nogil
    void idl_b2b_final(idl_blake2b* s, uint8_t* out, size_t outlen) noexcept nogil

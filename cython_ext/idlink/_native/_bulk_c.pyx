# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: libraries = crypto
"""Rows of a bulk load, encoded and sealed in batches: the compiled twin of `_bulk_py`.

Same names, signatures and results as the twin, which is the specification:
the proto3 wire format of ContactState and RecordState written straight into
one bytes object per row (the size worked out first), and AES-GCM through
OpenSSL's EVP interface with one context per batch (the key schedule set
once, the nonce per row), outside the GIL.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy
from libcpp.vector cimport vector


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)
    const EVP_CIPHER* EVP_aes_128_gcm()
    const EVP_CIPHER* EVP_aes_192_gcm()
    const EVP_CIPHER* EVP_aes_256_gcm()
    int EVP_EncryptInit_ex(
        EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, ENGINE* impl,
        const unsigned char* key, const unsigned char* iv
    )
    int EVP_EncryptUpdate(
        EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl, const unsigned char* data, int inl
    )
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)
    int EVP_CTRL_GCM_SET_IVLEN
    int EVP_CTRL_GCM_GET_TAG


DEF NONCE_BYTES = 12
DEF TAG_BYTES = 16

cdef uint64_t _MAX_U32 = 0xFFFFFFFF


# -- the wire format ---------------------------------------------------------------------------


cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


cdef inline char* _put_varint(char* at, uint64_t value) noexcept nogil:
    while value > 0x7F:
        at[0] = <char>((value & 0x7F) | 0x80)
        at += 1
        value >>= 7
    at[0] = <char>value
    return at + 1


cdef inline Py_ssize_t _len_field_size(Py_ssize_t length) noexcept nogil:
    """A length-delimited field of a one-byte tag (field numbers below 16)."""
    if length == 0:
        return 0
    return 1 + _varint_size(<uint64_t>length) + length


cdef inline Py_ssize_t _int_field_size(uint64_t value) noexcept nogil:
    if value == 0:
        return 0
    return 1 + _varint_size(value)


cdef inline char* _put_len_field(
    char* at, int number, const char* data, Py_ssize_t length
) noexcept nogil:
    if length == 0:
        return at
    at[0] = <char>(number << 3 | 2)
    at = _put_varint(at + 1, <uint64_t>length)
    memcpy(at, data, length)
    return at + length


cdef inline char* _put_int_field(char* at, int number, uint64_t value) noexcept nogil:
    if value == 0:
        return at
    at[0] = <char>(number << 3)
    return _put_varint(at + 1, value)


cdef inline const char* _text(object value, Py_ssize_t* size) except NULL:
    if not PyUnicode_Check(value):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return PyUnicode_AsUTF8AndSize(value, size)


cdef inline const char* _bytes(object value, Py_ssize_t* size) except NULL:
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    size[0] = PyBytes_GET_SIZE(value)
    return PyBytes_AS_STRING(value)


cdef inline uint64_t _unsigned(object value, uint64_t most, str name) except? 0xFFFFFFFFFFFFFFFF:
    if value < 0 or value > most:
        raise ValueError(f"{name} {value} is out of range for uint{64 if most >> 32 else 32}")
    return <uint64_t>value


cdef inline uint64_t _signed(object value, str name) except? 0xFFFFFFFFFFFFFFFF:
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"{name} {value} is out of range for int64")
    return <uint64_t>(<int64_t>value)


def contact_states(
    types, sources, values, reasons, first_seen, customers, connections, created_at_us,
    first_keys, first_positions,
):
    """``ContactState(...).SerializeToString()`` per row (isolation fields unset), in one call."""
    cdef Py_ssize_t count = len(types), i, size
    cdef Py_ssize_t n1, n2, n3, n4, n6, n14
    cdef const char* p1
    cdef const char* p2
    cdef const char* p3
    cdef const char* p4
    cdef const char* p6
    cdef const char* p14
    cdef uint64_t v5, v7, v12, v15
    cdef char* at
    cdef bytes row
    for column in (
        sources, values, reasons, first_seen, customers, connections, created_at_us,
        first_keys, first_positions,
    ):
        if len(column) != count:
            raise ValueError("contact_states: the columns differ in length")
    out = []
    for i in range(count):
        v5 = _unsigned(first_seen[i], 0xFFFFFFFFFFFFFFFF, "first_seen")
        v7 = _unsigned(connections[i], _MAX_U32, "connections")
        v12 = _signed(created_at_us[i], "created_at_us")
        v15 = _unsigned(first_positions[i], _MAX_U32, "first_position")
        p1 = _text(types[i], &n1)
        p2 = _text(sources[i], &n2)
        p3 = _text(values[i], &n3)
        p4 = _text(reasons[i], &n4)
        p6 = _bytes(customers[i], &n6)
        p14 = _bytes(first_keys[i], &n14)
        size = (
            _len_field_size(n1) + _len_field_size(n2) + _len_field_size(n3)
            + _len_field_size(n4) + _int_field_size(v5) + _len_field_size(n6)
            + _int_field_size(v7) + _int_field_size(v12) + _len_field_size(n14)
            + _int_field_size(v15)
        )
        row = PyBytes_FromStringAndSize(NULL, size)
        at = PyBytes_AS_STRING(row)
        at = _put_len_field(at, 1, p1, n1)
        at = _put_len_field(at, 2, p2, n2)
        at = _put_len_field(at, 3, p3, n3)
        at = _put_len_field(at, 4, p4, n4)
        at = _put_int_field(at, 5, v5)
        at = _put_len_field(at, 6, p6, n6)
        at = _put_int_field(at, 7, v7)
        at = _put_int_field(at, 12, v12)
        at = _put_len_field(at, 14, p14, n14)
        at = _put_int_field(at, 15, v15)
        out.append(row)
    return out


cdef inline Py_ssize_t _repeated_size(list pids, Py_ssize_t lo, Py_ssize_t hi) except -1:
    cdef Py_ssize_t size = 0, n, j
    for j in range(lo, hi):
        _bytes(pids[j], &n)
        size += 1 + _varint_size(<uint64_t>n) + n
    return size


cdef inline char* _put_repeated(
    char* at, int number, list pids, Py_ssize_t lo, Py_ssize_t hi
) except NULL:
    cdef Py_ssize_t n, j
    cdef const char* p
    for j in range(lo, hi):
        p = _bytes(pids[j], &n)
        at[0] = <char>(number << 3 | 2)
        at = _put_varint(at + 1, <uint64_t>n)
        memcpy(at, p, n)
        at += n
    return at


def record_states(
    sources, record_ids, observed_at_us, contact_pids, contact_offsets, group_pids,
    group_offsets, outcome, authors, stored_at_us,
):
    """``RecordState(...).SerializeToString()`` per row, without conflict PIDs, in one call."""
    cdef Py_ssize_t count = len(sources), i, size
    cdef Py_ssize_t n1, n2, n8, lo, hi, glo, ghi
    cdef const char* p1
    cdef const char* p2
    cdef const char* p8
    cdef uint64_t v3, v6, v9
    cdef char* at
    cdef bytes row
    cdef list contacts = contact_pids if type(contact_pids) is list else list(contact_pids)
    cdef list groups = group_pids if type(group_pids) is list else list(group_pids)
    for column in (record_ids, observed_at_us, authors, stored_at_us):
        if len(column) != count:
            raise ValueError("record_states: the columns differ in length")
    if len(contact_offsets) != count + 1 or len(group_offsets) != count + 1:
        raise ValueError("record_states: the offsets need one more entry than the rows")
    if count and (
        contact_offsets[count] > len(contacts) or group_offsets[count] > len(groups)
    ):
        raise ValueError("record_states: an offset is past the end of its PIDs")
    if not -(1 << 31) <= outcome < (1 << 31):
        raise ValueError(f"outcome {outcome} is out of range for int32")
    v6 = <uint64_t>(<int64_t>outcome)
    out = []
    for i in range(count):
        lo = contact_offsets[i]
        hi = contact_offsets[i + 1]
        glo = group_offsets[i]
        ghi = group_offsets[i + 1]
        if not (0 <= lo <= hi and 0 <= glo <= ghi):
            raise ValueError("record_states: the offsets must not decrease")
        v3 = _signed(observed_at_us[i], "observed_at_us")
        v9 = _signed(stored_at_us[i], "stored_at_us")
        p1 = _text(sources[i], &n1)
        p2 = _text(record_ids[i], &n2)
        p8 = _text(authors[i], &n8)
        size = (
            _len_field_size(n1) + _len_field_size(n2) + _int_field_size(v3)
            + _repeated_size(contacts, lo, hi) + _repeated_size(groups, glo, ghi)
            + _int_field_size(v6) + _len_field_size(n8) + _int_field_size(v9)
        )
        row = PyBytes_FromStringAndSize(NULL, size)
        at = PyBytes_AS_STRING(row)
        at = _put_len_field(at, 1, p1, n1)
        at = _put_len_field(at, 2, p2, n2)
        at = _put_int_field(at, 3, v3)
        at = _put_repeated(at, 4, contacts, lo, hi)
        at = _put_repeated(at, 5, groups, glo, ghi)
        at = _put_int_field(at, 6, v6)
        at = _put_len_field(at, 8, p8, n8)
        at = _put_int_field(at, 9, v9)
        out.append(row)
    return out


# -- sealing -----------------------------------------------------------------------------------


def seal_rows(bytes key, bytes head, bytes randomness, rows):
    """``(lmdb_key, head + nonce + AES-GCM(clear, aad=lmdb_key))`` per ``(lmdb_key, clear)`` row."""
    cdef Py_ssize_t count = len(rows), i, n_key, n_clear, n_head = len(head)
    cdef const EVP_CIPHER* kind
    cdef EVP_CIPHER_CTX* ctx
    cdef vector[const unsigned char*] aads, clears
    cdef vector[int] aad_sizes, clear_sizes
    cdef vector[unsigned char*] outs
    cdef const unsigned char* nonces
    cdef const unsigned char* key_bytes
    cdef unsigned char* dest
    cdef int written, ok = 1, failed_at = -1
    cdef bytes sealed
    if len(key) == 16:
        kind = EVP_aes_128_gcm()
    elif len(key) == 24:
        kind = EVP_aes_192_gcm()
    elif len(key) == 32:
        kind = EVP_aes_256_gcm()
    else:
        raise ValueError("AESGCM key must be 128, 192, or 256 bits.")
    if len(randomness) < NONCE_BYTES * count:
        raise ValueError("seal_rows: the randomness holds fewer nonces than there are rows")
    nonces = <const unsigned char*>PyBytes_AS_STRING(randomness)
    key_bytes = <const unsigned char*>PyBytes_AS_STRING(key)
    keep = []  # the rows' objects stay alive while the GIL is released
    out = []
    aads.reserve(count)
    clears.reserve(count)
    aad_sizes.reserve(count)
    clear_sizes.reserve(count)
    outs.reserve(count)
    for i in range(count):
        lmdb_key, clear = rows[i]
        aads.push_back(<const unsigned char*>_bytes(lmdb_key, &n_key))
        clears.push_back(<const unsigned char*>_bytes(clear, &n_clear))
        if n_key > 0x7FFFFFFF or n_clear > 0x7FFFFFFF - n_head - NONCE_BYTES - TAG_BYTES:
            raise ValueError("seal_rows: a row is too large to seal")
        aad_sizes.push_back(<int>n_key)
        clear_sizes.push_back(<int>n_clear)
        sealed = PyBytes_FromStringAndSize(NULL, n_head + NONCE_BYTES + n_clear + TAG_BYTES)
        dest = <unsigned char*>PyBytes_AS_STRING(sealed)
        memcpy(dest, PyBytes_AS_STRING(head), n_head)
        memcpy(dest + n_head, nonces + NONCE_BYTES * i, NONCE_BYTES)
        outs.push_back(dest + n_head + NONCE_BYTES)
        keep.append(lmdb_key)
        keep.append(clear)
        out.append((lmdb_key, sealed))
    ctx = EVP_CIPHER_CTX_new()
    if ctx == NULL:
        raise MemoryError("seal_rows: no cipher context")
    try:
        with nogil:
            ok = EVP_EncryptInit_ex(ctx, kind, NULL, NULL, NULL)
            if ok == 1:
                ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL)
            if ok == 1:
                ok = EVP_EncryptInit_ex(ctx, NULL, NULL, key_bytes, NULL)
            i = 0
            while ok == 1 and i < count:
                ok = EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonces + NONCE_BYTES * i)
                if ok == 1 and aad_sizes[i]:
                    ok = EVP_EncryptUpdate(ctx, NULL, &written, aads[i], aad_sizes[i])
                if ok == 1 and clear_sizes[i]:
                    ok = EVP_EncryptUpdate(ctx, outs[i], &written, clears[i], clear_sizes[i])
                if ok == 1:
                    ok = EVP_EncryptFinal_ex(ctx, outs[i] + clear_sizes[i], &written)
                if ok == 1:
                    ok = EVP_CIPHER_CTX_ctrl(
                        ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, outs[i] + clear_sizes[i]
                    )
                if ok != 1:
                    failed_at = <int>i
                i += 1
    finally:
        EVP_CIPHER_CTX_free(ctx)
    if ok != 1:
        raise RuntimeError(f"seal_rows: OpenSSL refused to seal row {failed_at}")
    del keep
    return out


# -- customers ---------------------------------------------------------------------------------


def customer_states(
    contact_pids, contact_offsets, created_seq, created_at_us, watermarks, split_from,
    updated_at_us,
):
    """``CustomerState(...).SerializeToString()`` per row (no profile), in one call."""
    cdef Py_ssize_t count = len(created_seq), i, size, lo, hi, n4, n5
    cdef const char* p4
    cdef const char* p5
    cdef uint64_t v2, v3, v7
    cdef char* at
    cdef bytes row
    cdef list contacts = contact_pids if type(contact_pids) is list else list(contact_pids)
    for column in (created_at_us, watermarks, split_from, updated_at_us):
        if len(column) != count:
            raise ValueError("customer_states: the columns differ in length")
    if len(contact_offsets) != count + 1:
        raise ValueError("customer_states: the offsets need one more entry than the rows")
    if count and contact_offsets[count] > len(contacts):
        raise ValueError("customer_states: an offset is past the end of its PIDs")
    out = []
    for i in range(count):
        lo = contact_offsets[i]
        hi = contact_offsets[i + 1]
        if not 0 <= lo <= hi:
            raise ValueError("customer_states: the offsets must not decrease")
        v2 = _unsigned(created_seq[i], 0xFFFFFFFFFFFFFFFF, "created_seq")
        v3 = _signed(created_at_us[i], "created_at_us")
        v7 = _signed(updated_at_us[i], "updated_at_us")
        p4 = _bytes(watermarks[i], &n4)
        p5 = _bytes(split_from[i], &n5)
        size = (
            _repeated_size(contacts, lo, hi) + _int_field_size(v2) + _int_field_size(v3)
            + _len_field_size(n4) + _len_field_size(n5) + _int_field_size(v7)
        )
        row = PyBytes_FromStringAndSize(NULL, size)
        at = PyBytes_AS_STRING(row)
        at = _put_repeated(at, 1, contacts, lo, hi)
        at = _put_int_field(at, 2, v2)
        at = _put_int_field(at, 3, v3)
        at = _put_len_field(at, 4, p4, n4)
        at = _put_len_field(at, 5, p5, n5)
        at = _put_int_field(at, 7, v7)
        out.append(row)
    return out


# -- keyed hashes ------------------------------------------------------------------------------


from idlink._native._blake2b cimport (
    idl_b2b_final,
    idl_b2b_init_key,
    idl_b2b_update,
    idl_blake2b,
)


def keyed_blake2b_many(bytes key, int digest_size, bytes prefix, items):
    """``hashlib.blake2b(prefix + item, key=key, digest_size=digest_size).digest()`` per item."""
    cdef idl_blake2b keyed, state
    cdef uint8_t digest[64]
    cdef Py_ssize_t n
    cdef const char* p
    if not 1 <= len(key) <= 64:
        raise ValueError("keyed_blake2b_many: the key must be 1 to 64 bytes")
    if not 1 <= digest_size <= 64:
        raise ValueError("keyed_blake2b_many: the digest size must be 1 to 64 bytes")
    if not len(prefix):
        raise ValueError("keyed_blake2b_many: the prefix must not be empty")
    idl_b2b_init_key(
        &keyed, <size_t>digest_size, <const uint8_t*>PyBytes_AS_STRING(key),
        <size_t>PyBytes_GET_SIZE(key), NULL, 0,
    )
    idl_b2b_update(
        &keyed, <const uint8_t*>PyBytes_AS_STRING(prefix), <size_t>PyBytes_GET_SIZE(prefix)
    )
    out = []
    for item in items:
        p = _bytes(item, &n)
        state = keyed
        idl_b2b_update(&state, <const uint8_t*>p, <size_t>n)
        idl_b2b_final(&state, digest, <size_t>digest_size)
        out.append(PyBytes_FromStringAndSize(<char*>digest, digest_size))
    return out


cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_MD_CTX:
        pass
    ctypedef struct EVP_MD:
        pass
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* ctx)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX* out, const EVP_MD_CTX* ctx)
    const EVP_MD* EVP_sha256()
    int EVP_DigestInit_ex(EVP_MD_CTX* ctx, const EVP_MD* kind, ENGINE* impl)
    int EVP_DigestUpdate(EVP_MD_CTX* ctx, const void* data, size_t n)
    int EVP_DigestFinal_ex(EVP_MD_CTX* ctx, unsigned char* md, unsigned int* size)


DEF SHA256_BLOCK = 64
DEF SHA256_BYTES = 32


def hmac_sha256_many(bytes key, bytes prefix, texts, int size):
    """``hmac.digest(key, prefix + text.encode(), "sha256")[:size]`` per text, in one call.

    The inner and outer pad states are hashed once per call and copied per text.
    """
    cdef unsigned char block[SHA256_BLOCK]
    cdef unsigned char pad[SHA256_BLOCK]
    cdef unsigned char inner_digest[SHA256_BYTES]
    cdef unsigned char digest[SHA256_BYTES]
    cdef unsigned int length
    cdef Py_ssize_t n, i
    cdef const char* p
    cdef int ok = 1
    cdef EVP_MD_CTX* inner = NULL
    cdef EVP_MD_CTX* outer = NULL
    cdef EVP_MD_CTX* work = NULL
    if not 0 <= size <= SHA256_BYTES:
        raise ValueError("hmac_sha256_many: size must be 0 to 32")
    for i in range(SHA256_BLOCK):
        block[i] = 0
    if len(key) > SHA256_BLOCK:
        import hashlib
        short = hashlib.sha256(key).digest()
        memcpy(block, PyBytes_AS_STRING(short), SHA256_BYTES)
    else:
        memcpy(block, PyBytes_AS_STRING(key), len(key))
    inner = EVP_MD_CTX_new()
    outer = EVP_MD_CTX_new()
    work = EVP_MD_CTX_new()
    out = []
    try:
        if inner == NULL or outer == NULL or work == NULL:
            raise MemoryError("hmac_sha256_many: no digest context")
        for i in range(SHA256_BLOCK):
            pad[i] = block[i] ^ 0x36
        ok &= EVP_DigestInit_ex(inner, EVP_sha256(), NULL)
        ok &= EVP_DigestUpdate(inner, pad, SHA256_BLOCK)
        ok &= EVP_DigestUpdate(inner, PyBytes_AS_STRING(prefix), len(prefix))
        for i in range(SHA256_BLOCK):
            pad[i] = block[i] ^ 0x5C
        ok &= EVP_DigestInit_ex(outer, EVP_sha256(), NULL)
        ok &= EVP_DigestUpdate(outer, pad, SHA256_BLOCK)
        if ok != 1:
            raise RuntimeError("hmac_sha256_many: OpenSSL refused SHA-256")
        for text in texts:
            p = _text(text, &n)
            ok &= EVP_MD_CTX_copy_ex(work, inner)
            ok &= EVP_DigestUpdate(work, p, <size_t>n)
            ok &= EVP_DigestFinal_ex(work, inner_digest, &length)
            ok &= EVP_MD_CTX_copy_ex(work, outer)
            ok &= EVP_DigestUpdate(work, inner_digest, SHA256_BYTES)
            ok &= EVP_DigestFinal_ex(work, digest, &length)
            if ok != 1:
                raise RuntimeError("hmac_sha256_many: OpenSSL refused SHA-256")
            out.append(PyBytes_FromStringAndSize(<char*>digest, size))
    finally:
        EVP_MD_CTX_free(inner)
        EVP_MD_CTX_free(outer)
        EVP_MD_CTX_free(work)
    return out

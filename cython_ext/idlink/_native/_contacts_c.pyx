# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Contact clean-up, validation and PIDs: the compiled twin of `_contacts_py`.

Same names, signatures and results as the twin, which is the specification.
The difference is the phone check: a `+digits` number is judged from the
calling-code table of `phone_table` (lengths and national-prefix first
digits, copied into C arrays on first use) instead of a `phonenumbers.parse`
per number; where a national prefix could be stripped, `phone_table` replays
the library's rule, and asks the library itself where that is not provable.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.number cimport PyNumber_AsSsize_t
from cpython.unicode cimport (
    Py_UNICODE_ISSPACE,
    Py_UNICODE_TODECIMAL,
    PyUnicode_AsUTF8AndSize,
    PyUnicode_DATA,
    PyUnicode_DecodeASCII,
    PyUnicode_GET_LENGTH,
    PyUnicode_KIND,
    PyUnicode_READ,
    PyUnicode_Substring,
)
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libcpp.string cimport string

from idlink._native import phone_table

NORMALIZER_TRIM = 1
NORMALIZER_PHONE = 2
NORMALIZER_EMAIL = 3

cdef enum:
    _TRIM = 1
    _PHONE = 2
    _EMAIL = 3
    _MAX_VALUE_BYTES = 512
    _MAX_EMAIL_CHARS = 254
    _MIN_PHONE_DIGITS = 7
    _MAX_PHONE_DIGITS = 15
    _SECRET_BYTES = 32
    _PID_BYTES = 16

cdef str _EMPTY = "EMPTY"
cdef str _TOO_LONG = "TOO_LONG"
cdef str _CONTROL_CHARACTER = "CONTROL_CHARACTER"
cdef str _PHONE_LENGTH = "PHONE_LENGTH"
cdef str _PHONE_NOT_POSSIBLE = "PHONE_NOT_POSSIBLE"
cdef str _EMAIL_TOO_LONG = "EMAIL_TOO_LONG"
cdef str _EMAIL_FORMAT = "EMAIL_FORMAT"
cdef str _VALID = ""
cdef bytes _PID_PERSON = b"idlink-contact"


# --- arguments ------------------------------------------------------------------

cdef int _normalizer(object normalizer) except -1:
    cdef Py_ssize_t value = PyNumber_AsSsize_t(normalizer, ValueError)
    if value != _TRIM and value != _PHONE and value != _EMAIL:
        raise ValueError(f"unknown normalizer {normalizer!r}")
    return <int>value


cdef inline int _text(object value) except -1:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return 0


# --- clean-up (SPEC 2.1) ----------------------------------------------------------

cdef inline bint _blank(Py_UCS4 c) noexcept:
    # White space (str.isspace) and the zero-width characters it does not cover.
    return (
        Py_UNICODE_ISSPACE(c)
        or c == 0x200B or c == 0x200C or c == 0x200D or c == 0x2060 or c == 0xFEFF
    )


cdef str _clean(int normalizer, str value):
    cdef int kind = PyUnicode_KIND(value)
    cdef void* data = PyUnicode_DATA(value)
    cdef Py_ssize_t start = 0, end = PyUnicode_GET_LENGTH(value), i
    cdef Py_UCS4 c
    cdef int digit
    cdef string out
    while start < end and _blank(PyUnicode_READ(kind, data, start)):
        start += 1
    while end > start and _blank(PyUnicode_READ(kind, data, end - 1)):
        end -= 1
    if normalizer == _PHONE:
        out.reserve(end - start + 1)
        for i in range(start, end):
            c = PyUnicode_READ(kind, data, i)
            if 0x30 <= c <= 0x39:
                out.push_back(<char>c)
            elif c == 0x2B or c == 0xFF0B:  # "+" and full-width plus
                if out.empty():  # a plus before every digit; only the first
                    out.push_back(b"+")
            elif c >= 0x80:
                digit = Py_UNICODE_TODECIMAL(c)  # category Nd: any script's digits
                if digit >= 0:
                    out.push_back(<char>(0x30 + digit))
        if out.size() >= 2 and out[0] == b"0" and out[1] == b"0":
            out[1] = b"+"
            return PyUnicode_DecodeASCII(out.data() + 1, out.size() - 1, NULL)
        return PyUnicode_DecodeASCII(out.data(), out.size(), NULL)
    cdef str stripped = value
    if start != 0 or end != PyUnicode_GET_LENGTH(value):
        stripped = PyUnicode_Substring(value, start, end)
    if normalizer == _EMAIL:
        return stripped.lower()
    return stripped


def clean(normalizer, value):
    """Clean a raw value the way its key type's normalizer says (SPEC 2.1)."""
    cdef int which = _normalizer(normalizer)
    _text(value)
    return _clean(which, value)


# --- the calling-code table (see phone_table) -----------------------------------

cdef enum:
    _KNOWN = 1  # a country calling code
    _EXACT = 2  # the length mask stands in for phonenumbers' length test

cdef uint32_t _LENGTH_MASK[1000]
cdef uint16_t _PREFIX_FIRST[1000]
cdef uint8_t _FLAGS[1000]
cdef bint _table_ready = False
cdef object _possible_number = phone_table.possible_number


cdef int _load_table() except -1:
    # The arrays start zeroed and are only ever set to the same values, so two
    # threads loading at once do no harm.
    global _table_ready
    cdef int code
    for code, entry in phone_table.table().items():
        if not 0 < code < 1000:
            raise ValueError(f"unexpected country calling code {code}")
        _LENGTH_MASK[code] = <uint32_t>entry.length_mask
        _PREFIX_FIRST[code] = <uint16_t>entry.prefix_first_digits
        _FLAGS[code] = _KNOWN | (_EXACT if entry.exact else 0)
    _table_ready = True
    return 0


cdef bint _possible(str cleaned, int kind, void* data, Py_ssize_t length) except -1:
    """Return is_possible_number(parse(cleaned)) for a "+" number with 7-15 digits."""
    cdef Py_ssize_t i, size, rest
    cdef int code = 0, first
    cdef Py_UCS4 c
    # Anything but "+digits" is for phonenumbers itself (phone_table asks it).
    for i in range(1, length):
        c = PyUnicode_READ(kind, data, i)
        if not 0x30 <= c <= 0x39:
            return _possible_number(cleaned)
    if not _table_ready:
        _load_table()
    # The country calling code is the shortest known 1-3 digit prefix; never 0...
    if PyUnicode_READ(kind, data, 1) == 0x30:
        return False
    for size in range(1, 4):
        if size >= length:
            return False
        code = code * 10 + (<int>PyUnicode_READ(kind, data, size) - 0x30)
        if _FLAGS[code] & _KNOWN:
            break
    else:
        return False
    rest = length - 1 - size
    if rest < phone_table.MIN_LENGTH_FOR_NSN:
        return False
    first = <int>PyUnicode_READ(kind, data, size + 1) - 0x30
    if not _FLAGS[code] & _EXACT or (_PREFIX_FIRST[code] >> first) & 1:
        # A national prefix might be stripped: replay the library's rule.
        return _possible_number(cleaned)
    return (_LENGTH_MASK[code] >> rest) & 1


# --- validation (SPEC 2.2) --------------------------------------------------------

cdef str _invalid_reason(int normalizer, str cleaned):
    cdef int kind = PyUnicode_KIND(cleaned)
    cdef void* data = PyUnicode_DATA(cleaned)
    cdef Py_ssize_t length = PyUnicode_GET_LENGTH(cleaned), i, utf8 = 0
    cdef Py_ssize_t digits = 0, ats = 0, first_at = -1
    cdef bint space = False, dot = False
    cdef Py_UCS4 c
    if length == 0:
        return _EMPTY
    if kind == 1 and length <= _MAX_VALUE_BYTES // 2:
        pass  # Latin-1: at most 2 bytes each
    elif length > _MAX_VALUE_BYTES:
        return _TOO_LONG
    else:
        for i in range(length):
            c = PyUnicode_READ(kind, data, i)
            # UTF-8 length; a lone surrogate counts 3 bytes ("surrogatepass")
            utf8 += 1 if c < 0x80 else 2 if c < 0x800 else 3 if c < 0x10000 else 4
        if utf8 > _MAX_VALUE_BYTES:
            return _TOO_LONG
    for i in range(length):
        c = PyUnicode_READ(kind, data, i)
        if c < 0x20 or 0x7F <= c <= 0x9F:  # category Cc
            return _CONTROL_CHARACTER
        if normalizer == _PHONE:
            if 0x30 <= c <= 0x39:
                digits += 1
        elif normalizer == _EMAIL:
            if c == 0x40:
                ats += 1
                if first_at < 0:
                    first_at = i
            elif c == 0x2E:
                if first_at >= 0:
                    dot = True
            elif Py_UNICODE_ISSPACE(c):
                space = True
    if normalizer == _PHONE:
        if digits < _MIN_PHONE_DIGITS or digits > _MAX_PHONE_DIGITS:
            return _PHONE_LENGTH
        if PyUnicode_READ(kind, data, 0) == 0x2B and not _possible(cleaned, kind, data, length):
            return _PHONE_NOT_POSSIBLE
    elif normalizer == _EMAIL:
        if length > _MAX_EMAIL_CHARS:
            return _EMAIL_TOO_LONG
        if ats != 1 or first_at == 0 or not dot or space:
            return _EMAIL_FORMAT
    return _VALID


def invalid_reason(normalizer, cleaned):
    """Return why a cleaned value is invalid, or "" when it is valid (SPEC 2.2)."""
    cdef int which = _normalizer(normalizer)
    _text(cleaned)
    return _invalid_reason(which, cleaned)


# --- contact PID (SPEC 2.3) -------------------------------------------------------

# BLAKE2b as RFC 7693 specifies it, with the key and personalisation of
# hashlib.blake2b; the tests check it against hashlib byte for byte. Keyed
# hashing with hashlib costs two compressions and several Python calls per
# value; here the key block is compressed once per secret.
from idlink._native._blake2b cimport (
    idl_b2b_final,
    idl_b2b_init_key,
    idl_b2b_update,
    idl_blake2b,
)


cdef bytes _keyed_secret = None  # the secret _keyed belongs to
cdef idl_blake2b _keyed


cdef bytes _pid(bytes secret, str type_name, str source, str cleaned):
    global _keyed_secret
    cdef Py_ssize_t n_type, n_source, n_cleaned
    # UTF-8 of each part; a lone surrogate raises UnicodeEncodeError, as str.encode() does.
    cdef const char* p_type = PyUnicode_AsUTF8AndSize(type_name, &n_type)
    cdef const char* p_source = PyUnicode_AsUTF8AndSize(source, &n_source)
    cdef const char* p_cleaned = PyUnicode_AsUTF8AndSize(cleaned, &n_cleaned)
    cdef uint8_t zero = 0
    cdef idl_blake2b state
    cdef uint8_t b[_PID_BYTES]
    if secret is not _keyed_secret:
        idl_b2b_init_key(
            &_keyed, _PID_BYTES, <const uint8_t*>PyBytes_AS_STRING(secret),
            <size_t>PyBytes_GET_SIZE(secret), <const uint8_t*>PyBytes_AS_STRING(_PID_PERSON),
            <size_t>PyBytes_GET_SIZE(_PID_PERSON),
        )
        _keyed_secret = secret
    state = _keyed
    idl_b2b_update(&state, <const uint8_t*>p_type, <size_t>n_type)
    idl_b2b_update(&state, &zero, 1)
    idl_b2b_update(&state, <const uint8_t*>p_source, <size_t>n_source)
    idl_b2b_update(&state, &zero, 1)
    idl_b2b_update(&state, <const uint8_t*>p_cleaned, <size_t>n_cleaned)
    idl_b2b_final(&state, b, _PID_BYTES)
    b[6] = (b[6] & 0x0F) | 0x80  # version 8
    b[8] = (b[8] & 0x3F) | 0x80  # variant 0b10
    return PyBytes_FromStringAndSize(<char*>b, _PID_BYTES)


cdef inline int _check_secret(object secret) except -1:
    if not isinstance(secret, bytes):
        raise TypeError(f"the account secret must be bytes, got {type(secret).__name__}")
    if PyBytes_GET_SIZE(secret) != _SECRET_BYTES:
        raise ValueError(f"the account secret must be {_SECRET_BYTES} bytes")
    return 0


def contact_pid(secret, type_name, source, cleaned):
    """Return the contact PID: keyed BLAKE2b-128 made an RFC 9562 UUIDv8 (SPEC 2.3)."""
    _check_secret(secret)
    _text(type_name)
    _text(source)
    _text(cleaned)
    return _pid(secret, type_name, source, cleaned)


# --- the hot path -----------------------------------------------------------------

cdef tuple _prepare(bytes secret, int normalizer, str type_name, str source, object value):
    _text(value)
    cdef str cleaned = _clean(normalizer, value)
    return (cleaned, _invalid_reason(normalizer, cleaned), _pid(secret, type_name, source, cleaned))


def prepare(secret, normalizer, type_name, source, value):
    """Clean, validate and hash one raw value: (cleaned, invalid_reason, pid)."""
    cdef int which = _normalizer(normalizer)
    _text(value)
    cdef str cleaned = _clean(which, value)
    cdef str reason = _invalid_reason(which, cleaned)
    _check_secret(secret)
    _text(type_name)
    _text(source)
    return (cleaned, reason, _pid(secret, type_name, source, cleaned))


def prepare_many(secret, normalizer, type_name, source, values):
    """Prepare many raw values of one key type and source (arguments checked once first)."""
    cdef int which = _normalizer(normalizer)
    _check_secret(secret)
    _text(type_name)
    _text(source)
    return [_prepare(secret, which, type_name, source, value) for value in values]

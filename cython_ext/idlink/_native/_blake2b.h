/* BLAKE2b as RFC 7693 specifies it, keyed, with hashlib.blake2b's parameter block
   (digest size, key length, personalisation). Only what _contacts_c.pyx needs for
   the contact PID (SPEC 2.3); tests/_native checks it against hashlib byte for byte. */
#ifndef IDLINK_BLAKE2B_H
#define IDLINK_BLAKE2B_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint64_t h[8];
    uint64_t t;  /* bytes compressed so far (values are far below 2**64) */
    uint8_t b[128];
    size_t c;  /* bytes in b */
} idl_blake2b;

static const uint64_t idl_b2b_iv[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL,
    0xA54FF53A5F1D36F1ULL, 0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL,
    0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL};

static const uint8_t idl_b2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t idl_load64(const uint8_t *p) {
    uint64_t r = 0;
    for (int i = 7; i >= 0; i--) r = (r << 8) | p[i];
    return r;
}

#define IDL_ROTR64(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
#define IDL_B2B_G(a, b, c, d, x, y)                  \
    v[a] = v[a] + v[b] + (x);                        \
    v[d] = IDL_ROTR64(v[d] ^ v[a], 32);              \
    v[c] = v[c] + v[d];                              \
    v[b] = IDL_ROTR64(v[b] ^ v[c], 24);              \
    v[a] = v[a] + v[b] + (y);                        \
    v[d] = IDL_ROTR64(v[d] ^ v[a], 16);              \
    v[c] = v[c] + v[d];                              \
    v[b] = IDL_ROTR64(v[b] ^ v[c], 63);

static void idl_b2b_compress(idl_blake2b *s, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = idl_b2b_iv[i];
    }
    v[12] ^= s->t;
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = idl_load64(s->b + 8 * i);
    for (int i = 0; i < 12; i++) {
        const uint8_t *z = idl_b2b_sigma[i];
        IDL_B2B_G(0, 4, 8, 12, m[z[0]], m[z[1]]);
        IDL_B2B_G(1, 5, 9, 13, m[z[2]], m[z[3]]);
        IDL_B2B_G(2, 6, 10, 14, m[z[4]], m[z[5]]);
        IDL_B2B_G(3, 7, 11, 15, m[z[6]], m[z[7]]);
        IDL_B2B_G(0, 5, 10, 15, m[z[8]], m[z[9]]);
        IDL_B2B_G(1, 6, 11, 12, m[z[10]], m[z[11]]);
        IDL_B2B_G(2, 7, 8, 13, m[z[12]], m[z[13]]);
        IDL_B2B_G(3, 4, 9, 14, m[z[14]], m[z[15]]);
    }
    for (int i = 0; i < 8; i++) s->h[i] ^= v[i] ^ v[i + 8];
}

/* The state after the key block: key and personalisation as hashlib.blake2b
   takes them (digest_size=outlen, key=key, person=person). keylen is 1..64,
   personlen 0..16. The key block is compressed at once, so at least one
   byte of data must follow before idl_b2b_final. */
static void idl_b2b_init_key(idl_blake2b *s, size_t outlen, const uint8_t *key,
                             size_t keylen, const uint8_t *person, size_t personlen) {
    uint8_t p[16] = {0};
    memcpy(p, person, personlen);
    for (int i = 0; i < 8; i++) s->h[i] = idl_b2b_iv[i];
    s->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
    s->h[6] ^= idl_load64(p);
    s->h[7] ^= idl_load64(p + 8);
    memset(s->b, 0, 128);
    memcpy(s->b, key, keylen);
    s->t = 128;
    idl_b2b_compress(s, 0);
    s->c = 0;
}

static void idl_b2b_update(idl_blake2b *s, const uint8_t *in, size_t n) {
    while (n > 0) {
        if (s->c == 128) {  /* full and more follows: not the last block */
            s->t += 128;
            idl_b2b_compress(s, 0);
            s->c = 0;
        }
        size_t take = 128 - s->c < n ? 128 - s->c : n;
        memcpy(s->b + s->c, in, take);
        s->c += take;
        in += take;
        n -= take;
    }
}

static void idl_b2b_final(idl_blake2b *s, uint8_t *out, size_t outlen) {
    s->t += s->c;
    memset(s->b + s->c, 0, 128 - s->c);
    idl_b2b_compress(s, 1);
    for (size_t i = 0; i < outlen; i++) out[i] = (uint8_t)(s->h[i / 8] >> (8 * (i % 8)));
}

#endif /* IDLINK_BLAKE2B_H */

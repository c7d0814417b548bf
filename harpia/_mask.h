/* XOR masking of WebSocket payloads (RFC 6455 section 5.3).
 *
 * Why not the obvious byte loop `d[i] ^= m[i & 3]`: gcc does not vectorize it and it runs
 * ~50x slower than memcpy.  Here the 4-byte key is widened to a machine word (and to a
 * 32-byte vector where AVX2 exists, picked at run time so one build runs on any x86-64),
 * loads and stores go through memcpy so unaligned starts are fine, and dst may equal src
 * (unmasking in place).  `phase` is how far into the key the first byte sits, so a payload
 * that arrives in several reads is unmasked piece by piece. */
#ifndef HARPIA_MASK_H
#define HARPIA_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t harpia_mask_word(const unsigned char key[4], size_t phase)
{
    /* The key twice in a word, rotated so that its first byte in memory is key[phase & 3]:
     * a handful of instructions, where assembling it byte by byte took ~40 (a third of
     * unmasking a 32-byte frame).  Doubling is the same on either byte order; which way
     * "first in memory" rotates is not. */
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t w = (uint64_t)k32 | ((uint64_t)k32 << 32);
    unsigned s = (unsigned)(phase & 3) * 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (w << s) | (w >> ((64 - s) & 63));
#else
    return (w >> s) | (w << ((64 - s) & 63));
#endif
}

static inline void harpia_mask_tail(unsigned char *dst, const unsigned char *src, size_t n,
                                    const unsigned char key[4], size_t phase)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] ^ key[(phase + i) & 3];
}

static void harpia_mask_words(unsigned char *dst, const unsigned char *src, size_t n,
                              const unsigned char key[4], size_t phase)
{
    uint64_t w = harpia_mask_word(key, phase);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t a[4];
        memcpy(a, src + i, 32);
        a[0] ^= w; a[1] ^= w; a[2] ^= w; a[3] ^= w;
        memcpy(dst + i, a, 32);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t a;
        memcpy(&a, src + i, 8);
        a ^= w;
        memcpy(dst + i, &a, 8);
    }
    /* i is a multiple of 8, hence of 4: the key phase is unchanged for the tail. */
    harpia_mask_tail(dst + i, src + i, n - i, key, phase);
}

/* HARPIA_MASK_SCALAR (setup.py: HARPIA_SCALAR_MASK=1) builds the portable path alone, as on
 * non-x86 machines, so that path can be tested where AVX2 exists. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(HARPIA_MASK_SCALAR)
#define HARPIA_HAVE_AVX2_DISPATCH 1
typedef unsigned char harpia_v32 __attribute__((vector_size(32)));

__attribute__((target("avx2")))
static void harpia_mask_avx2(unsigned char *dst, const unsigned char *src, size_t n,
                             const unsigned char key[4], size_t phase)
{
    harpia_v32 k;
    for (int j = 0; j < 32; j++)
        k[j] = key[(phase + (size_t)j) & 3];
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        harpia_v32 a, b, c, d;
        memcpy(&a, src + i, 32);
        memcpy(&b, src + i + 32, 32);
        memcpy(&c, src + i + 64, 32);
        memcpy(&d, src + i + 96, 32);
        a ^= k; b ^= k; c ^= k; d ^= k;
        memcpy(dst + i, &a, 32);
        memcpy(dst + i + 32, &b, 32);
        memcpy(dst + i + 64, &c, 32);
        memcpy(dst + i + 96, &d, 32);
    }
    for (; i + 32 <= n; i += 32) {
        harpia_v32 a;
        memcpy(&a, src + i, 32);
        a ^= k;
        memcpy(dst + i, &a, 32);
    }
    /* gcc 12 emits no vzeroupper before this sibling call, so the upper ymm halves would
     * stay dirty after we return into SSE code (ours, libc's, the interpreter's): a state
     * transition stall per call on Haswell/Broadwell, false dependencies on later cores. */
    __builtin_ia32_vzeroupper();
    harpia_mask_words(dst + i, src + i, n - i, key, phase);
}

static int harpia_cpu_has_avx2 = -1;
#endif

/* dst[i] = src[i] ^ key[(phase + i) % 4] for i < n; dst == src is allowed. */
static inline void harpia_mask(unsigned char *dst, const unsigned char *src, size_t n,
                               const unsigned char key[4], size_t phase)
{
    if (n < 16) {
        harpia_mask_tail(dst, src, n, key, phase);
        return;
    }
#ifdef HARPIA_HAVE_AVX2_DISPATCH
    if (n >= 256) {
        if (harpia_cpu_has_avx2 < 0)
            harpia_cpu_has_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
        if (harpia_cpu_has_avx2) {
            harpia_mask_avx2(dst, src, n, key, phase);
            return;
        }
    }
#endif
    harpia_mask_words(dst, src, n, key, phase);
}

#endif /* HARPIA_MASK_H */

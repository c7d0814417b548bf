/*
 * Sec-WebSocket-Accept (RFC 6455 section 4.2.2) in plain C: base64, SHA-1 and the two
 * together.  Included by the upgrade fast path (harpia/_upgrade.pyx) and by the benchmarks'
 * load generator, which checks every server's answer with it.  No library does this
 * without a Python call or a link to OpenSSL, and the whole of it is 60 lines.
 */
#ifndef HARPIA_WS_ACCEPT_H
#define HARPIA_WS_ACCEPT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- base64 */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encode n bytes into out (4 * ceil(n / 3) characters plus a NUL). */
static void base64(const uint8_t *in, size_t n, char *out) {
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = B64[v >> 18];
        *out++ = B64[(v >> 12) & 63];
        *out++ = B64[(v >> 6) & 63];
        *out++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = B64[v >> 18];
        *out++ = B64[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = B64[v >> 18];
        *out++ = B64[(v >> 12) & 63];
        *out++ = B64[(v >> 6) & 63];
        *out++ = '=';
    }
    *out = 0;
}

/* ---------------------------------------------------------------- SHA-1 (FIPS 180-4) */

static inline uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *b) {
    uint32_t w[80], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (bb & c) | (~bb & d), k = 0x5A827999;
        else if (i < 40) f = bb ^ c ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (bb & c) | (bb & d) | (c & d), k = 0x8F1BBCDC;
        else f = bb ^ c ^ d, k = 0xCA62C1D6;
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(bb, 30);
        bb = a;
        a = t;
    }
    h[0] += a;
    h[1] += bb;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(h, msg + i);
    uint8_t last[128] = {0};
    size_t rest = len - i, total = rest + 9 <= 64 ? 64 : 128;
    memcpy(last, msg + i, rest);
    last[rest] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int k = 0; k < 8; k++) last[total - 1 - k] = (uint8_t)(bits >> (8 * k));
    for (size_t k = 0; k < total; k += 64) sha1_block(h, last + k);
    for (int k = 0; k < 5; k++) {
        out[4 * k] = h[k] >> 24;
        out[4 * k + 1] = h[k] >> 16;
        out[4 * k + 2] = h[k] >> 8;
        out[4 * k + 3] = h[k];
    }
}

/* Sec-WebSocket-Accept for the key's key_len bytes (at most WS_ACCEPT_MAX_KEY): 28
 * characters and a NUL into out. */
#define WS_ACCEPT_MAX_KEY 64

static void ws_accept(const char *key, size_t key_len, char out[29]) {
    static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[WS_ACCEPT_MAX_KEY + sizeof GUID];
    uint8_t digest[20];
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, GUID, sizeof GUID - 1);
    sha1((const uint8_t *)buf, key_len + sizeof GUID - 1, digest);
    base64(digest, 20, out);
}

#endif

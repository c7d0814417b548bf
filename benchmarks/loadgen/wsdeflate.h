/*
 * permessage-deflate (RFC 7692) for wsload (included once, by wsload.c; link with -lz).
 *
 * The client offers "permessage-deflate; client_max_window_bits", compresses what it sends
 * and inflates what it receives before the byte-for-byte check.
 *
 * Sending costs next to nothing: messages differ only in their 8-byte sequence number, so a
 * message is a stored (uncompressed) deflate block holding the sequence number followed by
 * the rest of the payload compressed once, at start, by a fresh compressor (zlib level
 * --deflate-level, default 1) - a valid deflate stream, since the compressed part refers to
 * nothing before itself, and the server still inflates every byte of it.  When the server resets its
 * context after every message (server_no_context_takeover), inflating is a pure function
 * of the compressed bytes: recent results are kept (by a hash of the compressed bytes,
 * compared in full before use) and reused when a message is the same bytes, as every
 * delivery of one broadcast is - so 1,000 subscribers cost one inflate, not 1,000, and the
 * load generator does not become the bottleneck.
 */
#ifndef WSDEFLATE_H
#define WSDEFLATE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define PMD_OFFER "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

struct pmd {
    uint8_t on, server_nct, client_nct, client_bits;
    z_stream *zin;
    uint8_t *cbuf; /* compressed message being received */
    size_t clen, ccap;
};

static uint8_t *g_zbuf, *g_infl;                  /* scratch: the message sent, the inflated one */
static size_t g_zcap, g_infl_cap;
#define PMD_CACHE 2048 /* recent stateless inflates (a broadcast keeps ~64 in flight; few collisions) */
static struct {
    uint8_t *in, *out;
    size_t in_len, in_cap, out_len;
} g_cache[PMD_CACHE];
static long long g_inflates, g_inflate_cache_hits, g_wire_in;

static void die(int code, const char *fmt, ...);

static void *xrealloc(void *p, size_t n) {
    if (!(p = realloc(p, n))) die(1, "out of memory");
    return p;
}

/* Does the extension header value v[0..len) carry parameter name (optionally "=N")? -1 if not. */
static int pmd_param(const char *v, int len, const char *name, int *value) {
    char buf[512];
    if (len >= (int)sizeof buf) len = sizeof buf - 1;
    memcpy(buf, v, len);
    buf[len] = 0;
    size_t nl = strlen(name);
    for (char *p = buf; (p = strcasestr(p, name)); p += nl) {
        char e = p[nl];
        if ((p == buf || p[-1] == ' ' || p[-1] == ';') && (e == 0 || e == ';' || e == ' ' || e == '=')) {
            if (value) *value = e == '=' ? atoi(p + nl + 1) : -1;
            return 0;
        }
    }
    return -1;
}

/* Read the server's answer; 0 if permessage-deflate was accepted. */
static int pmd_accept(struct pmd *m, const char *v, int len) {
    int bits = -1;
    if (!v || pmd_param(v, len, "permessage-deflate", NULL) < 0) return -1;
    m->on = 1;
    m->server_nct = pmd_param(v, len, "server_no_context_takeover", NULL) == 0;
    m->client_nct = pmd_param(v, len, "client_no_context_takeover", NULL) == 0;
    m->client_bits = pmd_param(v, len, "client_max_window_bits", &bits) == 0 && bits > 0 ? bits : 15;
    return 0;
}

static void pmd_init(int max_message) {
    g_infl_cap = (size_t)max_message + 2;
    g_infl = xrealloc(NULL, g_infl_cap);
}

/* The payload after the sequence number, compressed once per window size (the tail
 * 00 00 ff ff removed), and one message: stored block with the sequence number + that. */
static uint8_t *g_rest[16];
static size_t g_rest_len[16];

static size_t pmd_message(struct pmd *m, const uint8_t *seq, int hk, const uint8_t *rest, size_t rest_len) {
    int bits = m->client_bits < 9 ? 9 : m->client_bits;
    if (!g_rest[bits]) {
        z_stream z;
        memset(&z, 0, sizeof z);
        size_t cap = rest_len + rest_len / 8 + 128;
        g_rest[bits] = xrealloc(NULL, cap);
        if (deflateInit2(&z, cfg.deflate_level, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            die(1, "deflateInit2 failed");
        z.next_in = (uint8_t *)rest;
        z.avail_in = (unsigned)rest_len;
        z.next_out = g_rest[bits];
        z.avail_out = (unsigned)cap;
        if (deflate(&z, Z_SYNC_FLUSH) != Z_OK || z.avail_out == 0) die(1, "deflate failed");
        g_rest_len[bits] = cap - z.avail_out - 4;
        deflateEnd(&z);
    }
    size_t n = 5 + (size_t)hk + g_rest_len[bits];
    if (n > g_zcap) g_zbuf = xrealloc(g_zbuf, g_zcap = n);
    g_zbuf[0] = 0; /* BFINAL 0, BTYPE 00 (stored), padding */
    g_zbuf[1] = (uint8_t)hk;
    g_zbuf[2] = 0;
    g_zbuf[3] = (uint8_t)~hk;
    g_zbuf[4] = 0xff;
    memcpy(g_zbuf + 5, seq, hk);
    memcpy(g_zbuf + 5 + hk, g_rest[bits], g_rest_len[bits]);
    return n;
}

/* Collect compressed payload bytes of the message being received. */
static void pmd_collect(struct pmd *m, const uint8_t *p, size_t n) {
    if (m->clen + n + 4 > m->ccap) m->cbuf = xrealloc(m->cbuf, m->ccap = (m->clen + n + 4) * 2);
    memcpy(m->cbuf + m->clen, p, n);
    m->clen += n;
    g_wire_in += (long long)n;
}

/* Inflate the collected message; *out and the returned length (-1: corrupt) describe it. */
static long pmd_inflate(struct pmd *m, const uint8_t **out) {
    memcpy(m->cbuf + m->clen, "\x00\x00\xff\xff", 4);
    size_t clen = m->clen + 4;
    m->clen = 0;
    /* FNV-1a over the length, the first 64 and the last 16 bytes: enough to tell messages
     * apart (a cache hit is confirmed by comparing every byte), cheap for every delivery. */
    uint64_t h = 1469598103934665603ull ^ clen;
    for (size_t i = 0; i < clen && i < 64; i++) h = (h ^ m->cbuf[i]) * 1099511628211ull;
    for (size_t i = clen > 16 ? clen - 16 : 0; i < clen; i++) h = (h ^ m->cbuf[i]) * 1099511628211ull;
    int slot = (int)(h % PMD_CACHE);
    if (m->server_nct && g_cache[slot].in && clen == g_cache[slot].in_len &&
        !memcmp(g_cache[slot].in, m->cbuf, clen)) {
        g_inflate_cache_hits++;
        *out = g_cache[slot].out;
        return (long)g_cache[slot].out_len;
    }
    if (!m->zin) {
        m->zin = calloc(1, sizeof *m->zin);
        if (!m->zin || inflateInit2(m->zin, -15) != Z_OK) die(1, "inflateInit2 failed");
    } else if (m->server_nct) {
        inflateReset(m->zin);
    }
    m->zin->next_in = m->cbuf;
    m->zin->avail_in = (unsigned)clen;
    m->zin->next_out = g_infl;
    m->zin->avail_out = (unsigned)g_infl_cap;
    int rc = inflate(m->zin, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return -1;
    size_t n = g_infl_cap - m->zin->avail_out;
    g_inflates++;
    *out = g_infl;
    if (m->server_nct) {
        if (clen > g_cache[slot].in_cap) g_cache[slot].in = xrealloc(g_cache[slot].in, g_cache[slot].in_cap = clen * 2);
        if (!g_cache[slot].out) g_cache[slot].out = xrealloc(NULL, g_infl_cap);
        memcpy(g_cache[slot].in, m->cbuf, clen);
        memcpy(g_cache[slot].out, g_infl, n);
        g_cache[slot].in_len = clen;
        g_cache[slot].out_len = n;
    }
    return (long)n;
}

static void pmd_free(struct pmd *m) {
    if (m->zin) inflateEnd(m->zin), free(m->zin);
    free(m->cbuf);
    memset(m, 0, sizeof *m);
}

/* A JSON-like text pattern (records with varying numbers), compressible as real JSON is. */
static void pmd_json_pattern(uint8_t *dst, int size, uint64_t (*rnd)(void)) {
    static const char *const names[] = {"alice", "bob", "carol", "dave", "erin", "frank"};
    char rec[160];
    int i = 0;
    while (i < size) {
        uint64_t r = rnd();
        int k = snprintf(rec, sizeof rec, "{\"id\":%u,\"user\":\"%s\",\"active\":%s,\"score\":%u.%u,\"tags\":[\"x\",\"y\"]},",
                         (unsigned)(r % 100000), names[(r >> 20) % 6], (r >> 24) & 1 ? "true" : "false",
                         (unsigned)((r >> 32) % 100), (unsigned)((r >> 40) % 10));
        for (int j = 0; j < k && i < size; j++) dst[i++] = (uint8_t)rec[j];
    }
}

#endif

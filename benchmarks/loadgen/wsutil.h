/*
 * Helpers for wsload.c (included once, by it): a PRNG, Sec-WebSocket-Accept (from
 * harpia's own header), the sequence-number encoding carried in payloads, a
 * log-linear latency histogram, and two small process helpers.
 */
#ifndef WSUTIL_H
#define WSUTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

/* ---------------------------------------------------------------- PRNG (xorshift64*) */

static uint64_t rng_state = 88172645463325252ull;

static inline uint64_t rng(void) {
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* base64, SHA-1 and Sec-WebSocket-Accept: shared with harpia's upgrade path. */
#include "../../harpia/_ws_accept.h"

/* The example of RFC 6455 section 1.3, plus a two-block SHA-1 message. */
static int ws_selftest(void) {
    char acc[29];
    uint8_t d[20];
    char hex[41];
    ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    sha1((const uint8_t *)"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
    for (int i = 0; i < 20; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return !strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") && !strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

/* ---------------------------------------------------------------- frames */

/* Write a client frame header with mask key m32 into out; returns its length (<= 14). */
static size_t frame_header(uint8_t *out, int opcode, size_t len, uint32_t m32) {
    uint8_t *p = out;
    *p++ = 0x80 | opcode;
    if (len < 126) {
        *p++ = 0x80 | len;
    } else if (len < 65536) {
        *p++ = 0x80 | 126;
        *p++ = len >> 8;
        *p++ = len & 255;
    } else {
        *p++ = 0x80 | 127;
        for (int i = 7; i >= 0; i--) *p++ = (uint8_t)(len >> (8 * i));
    }
    memcpy(p, &m32, 4);
    return (size_t)(p + 4 - out);
}

/* dst = src ^ mask, the mask's phase starting at 0 */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, uint32_t m32) {
    const uint8_t *mk = (const uint8_t *)&m32;
    uint64_t m64 = (uint64_t)m32 | ((uint64_t)m32 << 32), v;
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        memcpy(&v, src + j, 8);
        v ^= m64;
        memcpy(dst + j, &v, 8);
    }
    for (; j < n; j++) dst[j] = src[j] ^ mk[j & 3];
}

/* ---------------------------------------------------------------- sequence numbers */

/* A payload starts with its sequence number: n (<= 8) base64 digits, 6 bits each. */
static inline uint64_t seq_mask(int n) { return n >= 8 ? (1ull << 48) - 1 : (1ull << (6 * n)) - 1; }

static inline void seq_encode(uint64_t v, uint8_t *out, int n) {
    for (int i = 0; i < n; i++) out[i] = (uint8_t)B64[(v >> (6 * (n - 1 - i))) & 63];
}

/* The 8 digits of v as they lie in memory, read as one (little-endian) word. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "seq_word assumes a little-endian machine"
#endif
static inline uint64_t seq_word(uint64_t v) {
    uint8_t d[8];
    uint64_t w;
    seq_encode(v, d, 8);
    memcpy(&w, d, 8);
    return w;
}

/* seq_word of consecutive numbers, which differ in their last digit only 63 times in 64:
 * the first seven digits are encoded once per 64 numbers. */
struct seq_words {
    uint64_t high, word; /* v >> 6 and the word of v & ~63; word 0: nothing yet */
};

static inline uint64_t seq_word_next(struct seq_words *sw, uint64_t v) {
    if ((v >> 6) != sw->high || !sw->word) {
        sw->high = v >> 6;
        sw->word = seq_word(v & ~63ull) & ~(0xffull << 56);
    }
    return sw->word | (uint64_t)(uint8_t)B64[v & 63] << 56;
}

static int8_t B64_VAL[256]; /* digit value, or -1 */

static void seq_init(void) {
    memset(B64_VAL, -1, sizeof B64_VAL);
    for (int i = 0; i < 64; i++) B64_VAL[(uint8_t)B64[i]] = (int8_t)i;
}

/* The sequence number, or -1 if a byte is not a base64 digit. */
static inline int64_t seq_decode(const uint8_t *in, int n) {
    uint64_t v = 0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int d = B64_VAL[in[i]];
        bad |= d;
        v = (v << 6) | (uint64_t)(d & 63);
    }
    return bad < 0 ? -1 : (int64_t)v;
}

/* memcmp(a, b, n) == 0, inline for the short payloads that dominate (libc's call costs more) */
static inline int same(const uint8_t *a, const uint8_t *b, size_t n) {
    if (n > 64) return memcmp(a, b, n) == 0;
    uint64_t x, y, d = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        d |= x ^ y;
    }
    for (; i < n; i++) d |= (uint64_t)(a[i] ^ b[i]);
    return d == 0;
}

/* ---------------------------------------------------------------- latency histogram */

/* Values in ns; 128 sub-buckets per power of two (< 0.8% error) up to ~2^47 ns. */
#define H_SUB 128
#define H_BUCKETS (H_SUB * 42)
static uint64_t hist[H_BUCKETS], hist_n;

static inline int hist_index(uint64_t v) {
    if (v < H_SUB) return (int)v;
    int e = 63 - __builtin_clzll(v), shift = e - 7;
    int i = H_SUB + shift * H_SUB + (int)((v >> shift) - H_SUB);
    return i < H_BUCKETS ? i : H_BUCKETS - 1;
}

static inline void hist_add(uint64_t v) {
    hist[hist_index(v)]++;
    hist_n++;
}

static void hist_reset(void) {
    memset(hist, 0, sizeof hist);
    hist_n = 0;
}

/* The value (ns, bucket midpoint) at quantile q. */
static double hist_pct(double q) {
    if (!hist_n) return 0;
    uint64_t want = (uint64_t)(q * hist_n + 0.5), seen = 0;
    if (want < 1) want = 1;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += hist[i];
        if (seen < want) continue;
        if (i < H_SUB) return i;
        int shift = (i - H_SUB) / H_SUB;
        uint64_t m = H_SUB + (uint64_t)((i - H_SUB) % H_SUB);
        return (double)(m << shift) + (double)((1ull << shift) - 1) / 2.0;
    }
    return 0;
}

/* ---------------------------------------------------------------- HTTP */

/* The value of header name in the response head (NUL-terminated), or NULL. */
static const char *find_header(const char *head, const char *name, int *len) {
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) || line[nl] != ':') continue;
        const char *v = line + nl + 1, *e = strstr(v, "\r\n");
        while (*v == ' ' || *v == '\t') v++;
        while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
        *len = (int)(e - v);
        return v;
    }
    return NULL;
}

/* ---------------------------------------------------------------- process helpers */

/* VmRSS of process pid in KiB, or -1. */
static long read_rss_kib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

/* utime + stime, in clock ticks, of process pid and every live descendant (a server's
 * workers), or -1 if pid is gone.  Descendants are found through
 * /proc/PID/task/TID/children; a child that exits meanwhile is simply not counted. */
static long long tree_cpu_ticks(int pid) {
    char path[96], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    long long total = (long long)(ut + st);
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return total;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/children", pid, e->d_name);
        FILE *c = fopen(path, "r");
        if (!c) continue;
        int child;
        while (fscanf(c, "%d", &child) == 1) {
            long long t = tree_cpu_ticks(child);
            if (t > 0) total += t;
        }
        fclose(c);
    }
    closedir(d);
    return total;
}

/* Raise RLIMIT_NOFILE to at least need (the hard limit too, as root); returns the soft limit. */
static long raise_nofile(long need) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur >= (rlim_t)need) return (long)rl.rlim_cur;
    struct rlimit want = {(rlim_t)need, rl.rlim_max > (rlim_t)need ? rl.rlim_max : (rlim_t)need};
    if (setrlimit(RLIMIT_NOFILE, &want) < 0) { /* not root: as far as the hard limit allows */
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

#endif

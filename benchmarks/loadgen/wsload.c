/*
 * wsload: a WebSocket (RFC 6455) load generator for benchmarking servers.
 *
 * Single-threaded, non-blocking sockets + edge-triggered epoll, no
 * dependencies beyond libc (wsutil.h: SHA-1, base64 and other helpers;
 * wsopts.h: the command line).
 * Build:  gcc -O2 -o wsload wsload.c -lz
 * Usage:  wsload --help
 *
 * Every message is checked byte-for-byte: a payload is the message's sequence
 * number (8 base64 characters) followed by a fixed random pattern, so an echo
 * that is corrupted, reordered, duplicated or sent to the wrong connection is
 * caught (exit status 2). Other failures exit with status 1. The result is one
 * JSON line on stdout; diagnostics go to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "wsutil.h"
#include "wsopts.h"
#include "wsdeflate.h"

/* Phases of a run, in order. */
enum phase { PH_CONNECT, PH_SYNC, PH_WARMUP, PH_MEASURE, PH_SETTLE, PH_CLOSE };
static const char *const PHASE_NAMES[] = {"connect", "sync", "warmup", "measure", "settle", "close"};

enum cstate { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING };

struct conn {
    int fd, id;
    uint32_t gen;           /* bumped on every close: stale epoll events are ignored */
    uint8_t state;
    char accept[29];        /* expected Sec-WebSocket-Accept */
    char *hs;               /* handshake response being read */
    int hslen;
    uint8_t *wbuf;          /* bytes waiting to be written: wbuf[woff..wlen) */
    size_t wcap, woff, wlen;
    /* frame parser */
    uint8_t hdr[14], hlen, in_pay, fop, ffin, ctl_len, msg_active, msg_op;
    uint8_t ctl[125], seqb[8];
    uint64_t pay_left, msg_off;
    /* traffic */
    int inflight, ts_head;
    uint64_t *ts;           /* send times of the messages in flight (ring of g_ring_mask + 1 >= depth) */
    uint64_t send_seq, recv_seq, last_seq;
    uint8_t synced;         /* broadcast: has received its first message */
    uint64_t t_start;       /* connect: cycle start */
    struct pmd pmd;         /* --deflate: permessage-deflate state */
    uint8_t msg_comp;       /* the message being received is compressed (RSV1) */
    struct seq_words sent_words, recv_words; /* the sequence digits sent, and expected */
};

static struct conn *conns;
static int epfd;
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static uint8_t *g_base;          /* payload pattern */
static int g_hk;                 /* sequence-number bytes at the start of a payload */
static uint8_t g_opcode;         /* 1 text, 2 binary */
static uint64_t g_now;
static enum phase g_phase = PH_CONNECT;
static uint8_t g_rbuf[256 * 1024]; /* one recv takes all a socket holds; the check of a 1 MiB echo stays in L2 */
static int g_ring_mask;          /* send-time rings hold a power of two >= depth: no division per message */
/* Throughput modes time every LAT_SAMPLE-th completed message (by count, so the sample does not
 * depend on timing); a run with one message in flight in all (pingpong --conns 1) times every one. */
#define LAT_SAMPLE 16
static uint64_t g_lat_mask;

/* counters */
static int g_next, g_pending, g_open, g_live;
static long long g_inflight, g_budget, g_completed, g_deliveries, g_close_warn;
static uint64_t g_t0, g_t_stop, g_t_last, g_phase_end, g_deadline, g_t_open0;
static struct rusage g_ru0, g_ru1;
static long long g_srv_ticks0 = -1, g_srv_ticks1 = -1; /* --server-pid tree's CPU over the measured window */
/* broadcast */
static uint64_t g_bseq, g_final_seq, g_next_sync, g_sync_deadline;
static uint64_t g_sync_last; /* the last sync message: its late deliveries are not the run's */
static int g_final_set, g_final_hits, g_sync_done;
static uint64_t g_hit_seq[64];
static int g_hits[64];
/* idle */
static long g_rss_before = -1, g_rss_after = -1;
static double g_open_s;

#define NS 1000000000ull
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- output */

static void print_json(const char *error);

static void die(int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "wsload: error: %s\n", msg);
    print_json(msg);
    exit(code);
}

static void mismatch(struct conn *c, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die(2, "validation failed on connection %d: %s", c->id, msg);
}

/* A failure of one connection: fatal until the run is over, then only noted. */
static void conn_close(struct conn *c);
static void conn_error(struct conn *c, const char *what) {
    if (g_phase == PH_CLOSE) {
        g_close_warn++;
        conn_close(c);
        return;
    }
    die(1, "connection %d: %s", c->id, what);
}

static double secs(uint64_t ns) { return (double)ns / 1e9; }

static double cpu_s(const struct rusage *r) {
    return r->ru_utime.tv_sec + r->ru_stime.tv_sec + (r->ru_utime.tv_usec + r->ru_stime.tv_usec) / 1e6;
}

static void json_num(const char *key, double v, int ok) {
    if (ok) printf(",\"%s\":%.6g", key, v);
    else printf(",\"%s\":null", key);
}

static void print_json(const char *error) {
    int measured = g_t_stop > g_t0 && g_t0 != 0;
    double el = measured ? secs(g_t_stop - g_t0) : 0;
    int echo = cfg.mode == M_PINGPONG || cfg.mode == M_PIPELINE;
    printf("{\"mode\":\"%s\",\"host\":\"%s\",\"port\":%d,\"path\":\"%s\",\"conns\":%d",
           MODE_NAMES[cfg.mode], cfg.host, cfg.port, cfg.path, cfg.conns);
    printf(",\"size\":%d,\"depth\":%d,\"type\":\"%s\",\"warmup_s\":%g", echo || cfg.mode == M_BROADCAST ? cfg.size : 0,
           cfg.depth, cfg.text ? "text" : "binary", cfg.warmup);
    json_num("duration_s", el, measured);
    printf(",\"messages\":%lld", g_completed);
    json_num("msgs_per_s", el > 0 ? g_completed / el : 0, measured && cfg.mode != M_CONNECT && cfg.mode != M_IDLE);
    json_num("mb_per_s", el > 0 ? g_completed * (double)cfg.size / el / 1e6 : 0, measured && echo);
    json_num("p50_us", hist_pct(0.50) / 1e3, measured && hist_n > 0);
    json_num("p90_us", hist_pct(0.90) / 1e3, measured && hist_n > 0);
    json_num("p99_us", hist_pct(0.99) / 1e3, measured && hist_n > 0);
    json_num("deliveries_per_s", el > 0 ? g_deliveries / el : 0, measured && cfg.mode == M_BROADCAST);
    json_num("conns_per_s", el > 0 ? g_completed / el : 0, measured && cfg.mode == M_CONNECT);
    json_num("kib_per_conn", (g_rss_after - g_rss_before) / (double)cfg.conns,
             cfg.mode == M_IDLE && g_rss_before >= 0 && g_rss_after >= 0);
    json_num("rss_before_kib", g_rss_before, cfg.mode == M_IDLE && g_rss_before >= 0);
    json_num("rss_after_kib", g_rss_after, cfg.mode == M_IDLE && g_rss_after >= 0);
    json_num("open_s", g_open_s, cfg.mode == M_IDLE && g_open_s > 0);
    json_num("loadgen_cpu_pct", el > 0 ? 100.0 * (cpu_s(&g_ru1) - cpu_s(&g_ru0)) / el : 0, measured);
    json_num("server_cpu_s", (g_srv_ticks1 - g_srv_ticks0) / (double)sysconf(_SC_CLK_TCK),
             measured && g_srv_ticks0 >= 0 && g_srv_ticks1 >= g_srv_ticks0);
    printf(",\"deliveries\":%lld,\"latency_sample_every\":%llu", g_deliveries, (unsigned long long)g_lat_mask + 1);
    if (cfg.deflate)
        printf(",\"deflate\":true,\"deflate_level\":%d,\"inflates\":%lld,\"inflate_cache_hits\":%lld"
               ",\"compressed_bytes_in\":%lld", cfg.deflate_level, g_inflates, g_inflate_cache_hits, g_wire_in);
    printf(",\"close_warnings\":%lld,\"errors\":%d", g_close_warn, error ? 1 : 0);
    if (error) {
        printf(",\"error\":\"");
        for (const char *p = error; *p; p++) {
            if (*p == '"' || *p == '\\') putchar('\\');
            putchar((unsigned char)*p >= 32 ? *p : ' ');
        }
        putchar('"');
    }
    printf("}\n");
    fflush(stdout);
}

/* ---------------------------------------------------------------- writing */

static void ep_ctl(struct conn *c, int op, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)c->gen << 32) | (uint32_t)c->id};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die(1, "epoll_ctl: %s", strerror(errno));
}

static uint8_t *wreserve(struct conn *c, size_t n) {
    if (c->woff && c->wlen + n > c->wcap) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap * 2 > c->wlen + n ? c->wcap * 2 : c->wlen + n + 256;
        if (!(c->wbuf = realloc(c->wbuf, cap))) die(1, "out of memory");
        c->wcap = cap;
    }
    uint8_t *p = c->wbuf + c->wlen;
    c->wlen += n;
    return p;
}

/* Write what is queued; on EAGAIN the (edge-triggered) EPOLLOUT calls again. */
static void flush(struct conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            char what[96];
            snprintf(what, sizeof what, "send: %s (server closed the connection early?)", strerror(errno));
            conn_error(c, what);
            return;
        }
        c->woff += (size_t)n;
    }
    c->woff = c->wlen = 0;
}

/* Append a masked client frame: payload = head[0..hn) followed by tail[0..tn),
 * where hn is a multiple of 4 whenever tn > 0. */
static void put_frame(struct conn *c, int opcode, const uint8_t *head, size_t hn, const uint8_t *tail, size_t tn) {
    uint32_t m32 = (uint32_t)rng();
    uint8_t hdr[14];
    size_t hl = frame_header(hdr, opcode, hn + tn, m32);
    uint8_t *p = wreserve(c, hl + hn + tn);
    memcpy(p, hdr, hl);
    for (size_t i = 0; i < hn; i++) p[hl + i] = head[i] ^ hdr[hl - 4 + (i & 3)];
    mask_copy(p + hl + hn, tail, tn, m32);
}

/* Large payloads: masking a megabyte per message would cost the load generator
 * more than the server, so their tails are masked once, with MASK_POOL random
 * keys; each message takes a random one (its sequence number is masked afresh)
 * and is written straight from the pool with writev when nothing is queued. */
#define MASK_POOL 16
#define POOL_MIN 65536
static uint8_t *g_pool[MASK_POOL];
static uint32_t g_pool_key[MASK_POOL];

static void pool_init(void) {
    size_t tn = cfg.size - g_hk;
    for (int k = 0; k < MASK_POOL; k++) {
        g_pool_key[k] = (uint32_t)rng();
        if (!(g_pool[k] = malloc(tn))) die(1, "out of memory");
        mask_copy(g_pool[k], g_base + g_hk, tn, g_pool_key[k]);
    }
}

static void put_pooled(struct conn *c, const uint8_t *enc) {
    int k = (int)(rng() % MASK_POOL);
    size_t tn = cfg.size - g_hk;
    uint8_t hdr[14 + 8];
    size_t hl = frame_header(hdr, g_opcode, cfg.size, g_pool_key[k]);
    for (int i = 0; i < g_hk; i++) hdr[hl + i] = enc[i] ^ hdr[hl - 4 + (i & 3)];
    hl += g_hk;
    size_t done = 0;
    if (c->woff == c->wlen) {
        struct iovec iov[2] = {{hdr, hl}, {g_pool[k], tn}};
        ssize_t n = writev(c->fd, iov, 2);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            char what[96];
            snprintf(what, sizeof what, "send: %s (server closed the connection early?)", strerror(errno));
            conn_error(c, what);
            return;
        }
        done = n > 0 ? (size_t)n : 0;
    }
    if (done < hl) memcpy(wreserve(c, hl - done), hdr + done, hl - done);
    size_t from = done > hl ? done - hl : 0;
    if (from < tn) memcpy(wreserve(c, tn - from), g_pool[k] + from, tn - from);
}

/* Smaller payloads: each message is a copy of one of MASK_POOL whole frames (header, key and
 * payload masked once, at start, each with its own random key), its sequence number masked in
 * afresh; the copy is the only per-message work.  Every frame still carries a mask the server
 * must apply; the key is one of 16 per run rather than fresh per frame, which RFC 6455 asks of
 * browsers (so that scripts cannot steer bytes on the wire to proxies) and which costs a
 * server nothing to honour or to skip, so every server is measured alike. */
static uint8_t *g_tmpl[MASK_POOL];
static uint64_t g_tmpl_key64[MASK_POOL]; /* the key twice: masks 8 bytes at once */
static size_t g_tmpl_hl, g_tmpl_len;

static void template_init(void) {
    for (int k = 0; k < MASK_POOL; k++) {
        uint32_t key = (uint32_t)rng();
        uint8_t hdr[14];
        g_tmpl_hl = frame_header(hdr, g_opcode, cfg.size, key);
        g_tmpl_len = g_tmpl_hl + cfg.size;
        if (!(g_tmpl[k] = malloc(g_tmpl_len))) die(1, "out of memory");
        memcpy(g_tmpl[k], hdr, g_tmpl_hl);
        mask_copy(g_tmpl[k] + g_tmpl_hl, g_base, cfg.size, key);
        g_tmpl_key64[k] = (uint64_t)key | (uint64_t)key << 32;
    }
}

static void put_templated(struct conn *c, const uint8_t *enc) {
    int k = (int)(rng() % MASK_POOL);
    uint8_t *p = wreserve(c, g_tmpl_len);
    memcpy(p, g_tmpl[k], g_tmpl_len);
    p += g_tmpl_hl;
    if (g_hk == 8) { /* the payload starts at a key boundary: one 8-byte XOR */
        uint64_t v;
        memcpy(&v, enc, 8);
        v ^= g_tmpl_key64[k];
        memcpy(p, &v, 8);
    } else {
        const uint8_t *key = g_tmpl[k] + g_tmpl_hl - 4;
        for (int i = 0; i < g_hk; i++) p[i] = enc[i] ^ key[i & 3];
    }
}

static void put_close(struct conn *c) {
    static const uint8_t code[2] = {1000 >> 8, 1000 & 255};
    put_frame(c, 0x8, code, 2, NULL, 0);
}

/* Queue one data message carrying sequence number seq. */
static void put_message(struct conn *c, uint64_t seq) {
    uint8_t enc[8];
    if (g_hk == 8) {
        uint64_t w = seq_word_next(&c->sent_words, seq & seq_mask(8));
        memcpy(enc, &w, 8);
    } else {
        seq_encode(seq, enc, g_hk);
    }
    if (c->pmd.on) {
        size_t n = pmd_message(&c->pmd, enc, g_hk, g_base + g_hk, cfg.size - g_hk);
        put_frame(c, 0x40 | g_opcode, NULL, 0, g_zbuf, n); /* RSV1: compressed */
    } else if (g_pool[0]) put_pooled(c, enc);
    else put_templated(c, enc);
    if (c->ts) c->ts[(c->ts_head + c->inflight) & g_ring_mask] = g_now;
    c->inflight++;
}

/* ---------------------------------------------------------------- run control */

static void start_measure(void);
static void begin_close(void);
static void conn_start(struct conn *c);

/* Keep depth messages in flight on c (echo modes, and the broadcast sender). */
static void fill(struct conn *c) {
    if (g_phase != PH_WARMUP && g_phase != PH_MEASURE) return;
    if (cfg.mode == M_BROADCAST) {
        if (c->id != 0) return;
        while (c->inflight < cfg.depth && g_budget > 0) {
            if (g_phase == PH_MEASURE && --g_budget == 0) g_final_seq = g_bseq + 1, g_final_set = 1;
            put_message(c, ++g_bseq);
        }
        return;
    }
    while (c->inflight < cfg.depth && g_budget > 0) {
        if (g_phase == PH_MEASURE) g_budget--;
        put_message(c, ((uint64_t)c->id << 32) | c->send_seq++);
        g_inflight++;
    }
}

static inline void pop_rtt(struct conn *c) {
    if (c->inflight <= 0) return;
    uint64_t sent = c->ts ? c->ts[c->ts_head] : g_now;
    if (c->ts) c->ts_head = (c->ts_head + 1) & g_ring_mask;
    c->inflight--;
    if (g_phase == PH_MEASURE) {
        if (!(g_completed & g_lat_mask)) hist_add(g_now - sent);
        g_completed++;
        g_t_last = g_now;
    }
}

/* The sequence number an echo on c must carry next. */
static inline uint64_t echo_expected(const struct conn *c) {
    return (((uint64_t)c->id << 32) | c->recv_seq) & seq_mask(g_hk);
}

/* Bookkeeping of a checked echo, and of a checked broadcast delivery of seq. */
static inline void echoed(struct conn *c) {
    c->recv_seq++;
    g_inflight--;
    pop_rtt(c);
}

static void delivered(struct conn *c, uint64_t seq);

static void message_done(struct conn *c) {
    if (c->msg_off != (uint64_t)cfg.size)
        mismatch(c, "message of %llu bytes, expected %d", (unsigned long long)c->msg_off, cfg.size);
    if (c->msg_op != g_opcode) mismatch(c, "opcode %d, expected %d", c->msg_op, g_opcode);
    int64_t seq = seq_decode(c->seqb, g_hk);
    if (seq < 0) mismatch(c, "payload bytes 0-%d are not a sequence number", g_hk - 1);
    if (cfg.mode != M_BROADCAST) {
        uint64_t want = echo_expected(c);
        if ((uint64_t)seq != want)
            mismatch(c, "echo #%llu carries sequence %llx, expected %llx", (unsigned long long)c->recv_seq,
                     (unsigned long long)seq, (unsigned long long)want);
        echoed(c);
        return;
    }
    if (c->synced && (uint64_t)seq != c->last_seq + 1)
        mismatch(c, "broadcast sequence %lld after %llu (each must arrive exactly once, in order)", (long long)seq,
                 (unsigned long long)c->last_seq);
    delivered(c, (uint64_t)seq);
}

static void delivered(struct conn *c, uint64_t seq) {
    c->synced = 1;
    c->last_seq = seq;
    if (g_phase == PH_MEASURE && seq > g_sync_last) g_deliveries++;
    int slot = seq & 63;
    if (g_phase == PH_SYNC && g_hit_seq[slot] == seq && ++g_hits[slot] == cfg.conns) g_sync_done = 1;
    if (g_final_set && seq == g_final_seq) g_final_hits++;
    if (c->id == 0 && g_phase != PH_SYNC) pop_rtt(c);
}

/* The handshake of c completed. */
static void on_open(struct conn *c) {
    if (cfg.mode == M_CONNECT) { /* a connect cycle closes right away */
        put_close(c);
        c->state = C_CLOSING;
        return;
    }
    g_pending--;
    g_open++;
    c->state = C_OPEN;
    while (g_next < cfg.conns && g_pending < cfg.batch) {
        g_pending++;
        conn_start(&conns[g_next++]);
    }
    if (g_open < cfg.conns) return;
    /* all connections are open */
    g_open_s = secs(g_now - g_t_open0);
    if (cfg.mode == M_IDLE) {
        g_phase = PH_SETTLE;
        g_phase_end = g_now + (uint64_t)(cfg.settle * NS);
    } else if (cfg.mode == M_BROADCAST) {
        g_phase = PH_SYNC;
        g_next_sync = g_now;
        g_sync_deadline = g_now + 15 * NS;
    } else if (cfg.warmup > 0) {
        g_phase = PH_WARMUP;
        g_phase_end = g_now + (uint64_t)(cfg.warmup * NS);
    } else {
        start_measure();
    }
    if (cfg.mode == M_PINGPONG || cfg.mode == M_PIPELINE)
        for (int i = 0; i < cfg.conns; i++) {
            fill(&conns[i]);
            if (&conns[i] != c) flush(&conns[i]); /* c is flushed by its caller */
        }
}

static void start_measure(void) {
    g_phase = PH_MEASURE;
    g_t0 = g_t_last = g_now;
    g_completed = g_deliveries = 0;
    hist_reset();
    getrusage(RUSAGE_SELF, &g_ru0);
    if (cfg.server_pid) g_srv_ticks0 = tree_cpu_ticks(cfg.server_pid);
    g_budget = LLONG_MAX;
    if (cfg.messages) {
        long long inflight = cfg.mode == M_BROADCAST ? conns[0].inflight
                           : cfg.mode == M_CONNECT   ? g_live
                                                     : g_inflight;
        g_budget = cfg.messages - inflight;
        if (g_budget <= 0) {
            g_budget = 0;
            g_final_seq = g_bseq;
            g_final_set = 1;
        }
    }
    g_phase_end = g_now + (uint64_t)(cfg.duration * NS);
}

static void stop_measure(void) {
    g_t_stop = cfg.messages ? g_t_last : g_now;
    getrusage(RUSAGE_SELF, &g_ru1);
    if (cfg.server_pid) g_srv_ticks1 = tree_cpu_ticks(cfg.server_pid);
    begin_close();
}

static void begin_close(void) {
    g_phase = PH_CLOSE;
    g_phase_end = g_now + 3 * NS;
    for (int i = 0; i < cfg.conns; i++) {
        struct conn *c = &conns[i];
        if (c->fd < 0 || c->state != C_OPEN) continue;
        put_close(c);
        c->state = C_CLOSING;
        flush(c);
    }
}

/* ---------------------------------------------------------------- connections */

static void conn_close(struct conn *c) {
    if (c->fd < 0) return;
    close(c->fd);
    c->fd = -1;
    c->gen++;
    c->state = C_IDLE;
    c->woff = c->wlen = 0;
    free(c->hs);
    c->hs = NULL;
    pmd_free(&c->pmd);
    c->msg_comp = 0;
    g_live--;
}

static void conn_start(struct conn *c) {
    c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die(1, "socket: %s", strerror(errno));
    g_live++;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->hlen = c->in_pay = c->msg_active = 0;
    c->t_start = g_now;
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS)
        die(1, "connect to %s:%d: %s", cfg.host, cfg.port, strerror(errno));
    c->state = C_CONNECTING;
    /* edge-triggered: no re-polling of busy sockets, no epoll_ctl per write */
    ep_ctl(c, EPOLL_CTL_ADD, EPOLLIN | EPOLLOUT | EPOLLET);
}

static void send_request(struct conn *c) {
    uint8_t raw[16];
    char key[25], req[512];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng();
        memcpy(raw + i, &r, 8);
    }
    base64(raw, 16, key);
    ws_accept(key, strlen(key), c->accept);
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     cfg.path, cfg.host, cfg.port, key, cfg.deflate ? PMD_OFFER : "");
    memcpy(wreserve(c, n), req, n);
    c->state = C_HANDSHAKE;
    flush(c);
}

static void parse(struct conn *c, const uint8_t *p, size_t n);

static void handshake_data(struct conn *c, const uint8_t *p, size_t n) {
    enum { HS_MAX = 8192 };
    if (!c->hs && !(c->hs = malloc(HS_MAX + 1))) die(1, "out of memory");
    if (c->hslen + n > HS_MAX) {
        conn_error(c, "handshake response larger than 8 KiB");
        return;
    }
    memcpy(c->hs + c->hslen, p, n);
    c->hslen += (int)n;
    c->hs[c->hslen] = 0;
    char *end = memmem(c->hs, c->hslen, "\r\n\r\n", 4);
    if (!end) return;
    end[2] = 0; /* keep the last header's CRLF */
    char what[200];
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
        snprintf(what, sizeof what, "handshake refused: %.*s", (int)strcspn(c->hs, "\r\n"), c->hs);
        conn_error(c, what);
        return;
    }
    int len;
    const char *v = find_header(c->hs, "upgrade", &len);
    if (!v || len != 9 || strncasecmp(v, "websocket", 9)) {
        conn_error(c, "101 response without Upgrade: websocket");
        return;
    }
    v = find_header(c->hs, "sec-websocket-accept", &len);
    if (!v || len != 28 || memcmp(v, c->accept, 28)) {
        snprintf(what, sizeof what, "bad Sec-WebSocket-Accept '%.*s', expected '%s'", v ? len : 0, v ? v : "",
                 c->accept);
        conn_error(c, what);
        return;
    }
    if (cfg.deflate) {
        v = find_header(c->hs, "sec-websocket-extensions", &len);
        if (pmd_accept(&c->pmd, v, v ? len : 0) < 0) {
            conn_error(c, "the server did not accept permessage-deflate (--deflate)");
            return;
        }
    }
    char *hs = c->hs;
    int rest = c->hslen - (int)(end + 4 - hs);
    c->hs = NULL;
    c->hslen = 0;
    on_open(c);
    if (rest > 0) parse(c, (uint8_t *)end + 4, rest);
    free(hs);
}

/* ---------------------------------------------------------------- frame parser */

static void frame_end(struct conn *c);

static void frame_begin(struct conn *c) {
    uint8_t b0 = c->hdr[0], b1 = c->hdr[1], op = b0 & 15;
    uint64_t len = b1 & 127;
    if (b1 & 0x80) conn_error(c, "server sent a masked frame");
    if ((b0 & 0x70) && !(c->pmd.on && (b0 & 0x70) == 0x40 && (op == 1 || op == 2)))
        conn_error(c, c->pmd.on ? "RSV bits other than RSV1 on the first frame of a message"
                                : "server frame has RSV bits set (no extension was negotiated)");
    if (len == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
    else if (len == 127)
        for (int i = len = 0; i < 8; i++) len = (len << 8) | c->hdr[2 + i];
    c->hlen = 0;
    if (c->fd < 0) return;
    if (op & 8) {
        if (op > 10 || !(b0 & 0x80) || len > 125) conn_error(c, "malformed control frame");
    } else if (cfg.mode == M_CONNECT || cfg.mode == M_IDLE) {
        conn_error(c, "server sent a data frame on an idle connection");
    } else if (op == 0) {
        if (!c->msg_active) mismatch(c, "continuation frame without a message");
    } else if (op <= 2) {
        if (c->msg_active) mismatch(c, "new message inside a fragmented one");
        c->msg_active = 1;
        c->msg_op = op;
        c->msg_off = 0;
        c->msg_comp = (b0 & 0x40) != 0;
    } else {
        conn_error(c, "reserved opcode");
    }
    if (c->fd < 0) return;
    if (!(op & 8) && c->msg_comp && c->pmd.clen + len > (uint64_t)cfg.size + cfg.size / 8 + 1024)
        mismatch(c, "compressed message longer than the %d bytes sent could make", cfg.size);
    if (!(op & 8) && !c->msg_comp && c->msg_off + len > (uint64_t)cfg.size)
        mismatch(c, "message longer than the %d bytes sent (frame of %llu bytes)", cfg.size, (unsigned long long)len);
    c->fop = op;
    c->ffin = b0 >> 7;
    c->pay_left = len;
    c->ctl_len = 0;
    c->in_pay = 1;
    if (len == 0) frame_end(c);
}

static void data_bytes(struct conn *c, const uint8_t *p, size_t n) {
    uint64_t off = c->msg_off;
    for (; n && off < (uint64_t)g_hk; n--) c->seqb[off++] = *p++;
    if (n && !same(p, g_base + off, n)) {
        size_t i = 0;
        while (p[i] == g_base[off + i]) i++;
        mismatch(c, "payload byte %llu is 0x%02x, expected 0x%02x", (unsigned long long)(off + i), p[i],
                 g_base[off + i]);
    }
    c->msg_off = off + n;
}

static void frame_end(struct conn *c) {
    c->in_pay = 0;
    if (!(c->fop & 8)) {
        if (c->ffin) {
            c->msg_active = 0;
            if (c->msg_comp) {
                const uint8_t *plain;
                long n = pmd_inflate(&c->pmd, &plain);
                if (n < 0) mismatch(c, "corrupt compressed message");
                c->msg_off = 0;
                c->msg_comp = 0;
                data_bytes(c, plain, (size_t)n);
            }
            message_done(c);
        }
        return;
    }
    if (c->fop == 9) { /* ping: answer with a pong */
        put_frame(c, 0xA, c->ctl, c->ctl_len, NULL, 0);
    } else if (c->fop == 8) {
        int code = c->ctl_len >= 2 ? (c->ctl[0] << 8) | c->ctl[1] : 1005;
        if (c->state == C_CLOSING) { /* the answer to our close frame */
            conn_close(c);
            if (cfg.mode != M_CONNECT) return;
            if (g_phase == PH_MEASURE) {
                hist_add(g_now - c->t_start);
                g_completed++;
                g_t_last = g_now;
            }
            if ((g_phase == PH_WARMUP || g_phase == PH_MEASURE) && g_budget > 0) {
                if (g_phase == PH_MEASURE) g_budget--;
                conn_start(c);
            }
            return;
        }
        char what[80];
        snprintf(what, sizeof what, "server closed the connection early (close code %d)", code);
        conn_error(c, what);
    }
}

static size_t header_len(uint8_t b1) {
    uint8_t l7 = b1 & 127;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (b1 & 0x80 ? 4 : 0);
}

/* Fast path for the common case, many per read: whole unfragmented messages of the expected
 * type, size, sequence number and content, one after another.  Returns the bytes it took; it
 * stops at anything else (a split frame, a control frame, a byte out of place), which the
 * general parser then takes, mismatches and their diagnostics included.  The sequence number
 * is checked as the 8 digits expected, so one compare covers digit validity and order. */
static uint8_t g_fhdr[10];       /* the header of an expected server frame (unmasked) */
static size_t g_fhl;
static uint16_t g_fhdr2;         /* its first two bytes, as one load */

static size_t expected_messages(struct conn *c, const uint8_t *p, size_t n) {
    const size_t size = (size_t)cfg.size, fl = g_fhl + size;
    const int bcast = cfg.mode == M_BROADCAST;
    size_t used = 0;
    while (n - used >= fl) {
        const uint8_t *f = p + used;
        uint64_t want, got;
        if (!bcast) want = echo_expected(c);
        else if (c->synced) want = c->last_seq + 1;
        else break; /* its first delivery: any sequence number goes */
        uint16_t h2;
        memcpy(&h2, f, 2);
        memcpy(&got, f + g_fhl, 8);
        if (h2 != g_fhdr2 || (g_fhl > 2 && !same(f + 2, g_fhdr + 2, g_fhl - 2))) break;
        if (got != seq_word_next(&c->recv_words, want) || !same(f + g_fhl + 8, g_base + 8, size - 8)) break;
        used += fl;
        if (bcast) delivered(c, want);
        else echoed(c);
    }
    return used;
}

/* Feed bytes received on c to the frame parser (frames may span reads). */
static void parse(struct conn *c, const uint8_t *p, size_t n) {
    int fast = cfg.mode != M_CONNECT && cfg.mode != M_IDLE && g_hk == 8;
    while (n > 0 && c->fd >= 0) {
        if (fast && !c->in_pay && !c->hlen && !c->msg_active) {
            size_t used = expected_messages(c, p, n);
            p += used;
            n -= used;
            if (!n) break;
        }
        if (!c->in_pay) { /* gather the 2..14 header bytes, which may span reads */
            size_t need = c->hlen >= 2 ? header_len(c->hdr[1]) : 2;
            size_t t = need - c->hlen < n ? need - c->hlen : n;
            memcpy(c->hdr + c->hlen, p, t);
            c->hlen += t;
            p += t;
            n -= t;
            if (c->hlen < need || header_len(c->hdr[1]) > c->hlen) continue;
            frame_begin(c);
            continue;
        }
        size_t t = c->pay_left < n ? c->pay_left : n;
        if (c->fop & 8) {
            memcpy(c->ctl + c->ctl_len, p, t);
            c->ctl_len += t;
        } else if (c->msg_comp) {
            pmd_collect(&c->pmd, p, t);
        } else {
            data_bytes(c, p, t);
        }
        p += t;
        n -= t;
        c->pay_left -= t;
        if (c->pay_left == 0) frame_end(c);
    }
}

/* ---------------------------------------------------------------- events */

/* Read until the socket is drained (edge-triggered epoll), then send what that allows. */
static void on_readable(struct conn *c) {
    uint32_t gen = c->gen; /* a connect cycle may close and reopen c while parsing */
    for (;;) {
        ssize_t n = recv(c->fd, g_rbuf, sizeof g_rbuf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            char what[96];
            snprintf(what, sizeof what, "recv: %s", strerror(errno));
            conn_error(c, what);
            return;
        }
        g_now = now_ns();
        if (n == 0) {
            if (c->state == C_CLOSING && cfg.mode != M_CONNECT) {
                conn_close(c); /* closed without answering our close frame: fine at the end */
                return;
            }
            conn_error(c, c->state == C_CLOSING ? "server closed TCP without sending a close frame"
                                                : "server closed the connection early");
            return;
        }
        if (c->state == C_HANDSHAKE) handshake_data(c, g_rbuf, (size_t)n);
        else parse(c, g_rbuf, (size_t)n);
        if (c->fd < 0 || c->gen != gen) return;
        if ((size_t)n < sizeof g_rbuf) break; /* drained; more data brings a new edge */
    }
    if (c->state == C_OPEN) fill(c);
    flush(c);
}

static void on_event(struct conn *c, uint32_t events) {
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            char what[128];
            snprintf(what, sizeof what, "connect to %s:%d: %s", cfg.host, cfg.port, strerror(err));
            conn_error(c, what);
            return;
        }
        send_request(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    if (c->fd >= 0 && (events & EPOLLOUT)) flush(c);
}

/* Timed transitions; called after every batch of events. */
static void tick(void) {
    if (g_now > g_deadline && g_phase != PH_CLOSE)
        die(1, "timed out (--timeout %.0f s) in phase %s with %d/%d connections open", cfg.timeout,
            PHASE_NAMES[g_phase], g_open, cfg.conns);
    switch (g_phase) {
    case PH_SYNC: {
        struct conn *s = &conns[0];
        if (g_sync_done) {
            if (s->last_seq == g_bseq) { /* the sender got every sync message back */
                g_sync_last = g_bseq;
                s->inflight = 0;
                s->ts_head = 0;
                if (cfg.warmup > 0) {
                    g_phase = PH_WARMUP;
                    g_phase_end = g_now + (uint64_t)(cfg.warmup * NS);
                } else {
                    start_measure();
                }
                fill(s);
                flush(s);
            }
        } else if (g_now > g_sync_deadline) {
            die(1, "broadcast: no message reached all %d clients within 15 s (does /broadcast send every "
                   "message to every connected client, sender included?)", cfg.conns);
        } else if (g_now >= g_next_sync) {
            uint64_t seq = ++g_bseq;
            g_hit_seq[seq & 63] = seq;
            g_hits[seq & 63] = 0;
            put_message(s, seq);
            s->inflight = 0;
            flush(s);
            g_next_sync = g_now + 20 * 1000000ull;
        }
        break;
    }
    case PH_WARMUP:
        if (g_now >= g_phase_end) {
            start_measure();
            if (cfg.mode == M_BROADCAST) fill(&conns[0]), flush(&conns[0]);
        }
        break;
    case PH_MEASURE:
        if (cfg.messages) {
            int done = cfg.mode == M_BROADCAST ? g_final_set && g_final_hits == cfg.conns
                                               : g_completed >= cfg.messages;
            if (done) stop_measure();
        } else if (g_now >= g_phase_end) {
            stop_measure();
        }
        break;
    case PH_SETTLE:
        if (g_now >= g_phase_end) {
            if (cfg.server_pid && (g_rss_after = read_rss_kib(cfg.server_pid)) < 0)
                die(1, "cannot read the VmRSS of process %d", cfg.server_pid);
            begin_close();
        }
        break;
    default:
        break;
    }
}

/* ---------------------------------------------------------------- setup */

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    seq_init();
    if (!ws_selftest()) die(1, "SHA-1/base64 self-test failed");
    if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state) rng_state = now_ns();
    rng_state |= 1;
    long nofile = raise_nofile(cfg.conns + 64);
    if (nofile < cfg.conns + 64) die(1, "need %d open files but RLIMIT_NOFILE is %ld", cfg.conns + 64, nofile);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg.port);
    int r = getaddrinfo(cfg.host, port, &hints, &ai);
    if (r) die(1, "cannot resolve %s: %s", cfg.host, gai_strerror(r));
    memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
    g_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    /* payload pattern: printable ASCII for text, any byte for binary */
    g_opcode = cfg.text ? 1 : 2;
    g_hk = cfg.size < 8 ? cfg.size : 8;
    if (!(g_base = malloc(cfg.size + 8))) die(1, "out of memory");
    for (int i = 0; i < cfg.size; i++) g_base[i] = cfg.text ? 'a' + rng() % 26 : (uint8_t)rng();
    if (cfg.json) pmd_json_pattern(g_base, cfg.size, rng);
    if (cfg.deflate) pmd_init(cfg.size);
    else if (cfg.size - g_hk >= POOL_MIN) pool_init(); /* compressed messages are never pooled */
    else if (cfg.size > 0) template_init();
    g_fhl = frame_header(g_fhdr, g_opcode, cfg.size, 0) - 4; /* a server frame: no key */
    g_fhdr[1] &= 0x7f;
    memcpy(&g_fhdr2, g_fhdr, 2);
    while (g_ring_mask + 1 < cfg.depth) g_ring_mask = g_ring_mask * 2 + 1;
    g_lat_mask = cfg.conns == 1 && cfg.depth <= 1 ? 0 : LAT_SAMPLE - 1;
    if (!(conns = calloc(cfg.conns, sizeof *conns))) die(1, "out of memory");
    for (int i = 0; i < cfg.conns; i++) {
        struct conn *c = &conns[i];
        c->fd = -1;
        c->id = i;
        if (cfg.depth > 0 && (cfg.mode != M_BROADCAST || i == 0)) {
            if (!(c->ts = calloc(g_ring_mask + 1, sizeof *c->ts))) die(1, "out of memory");
            wreserve(c, (size_t)cfg.depth * (cfg.size + 14) + 64);
            c->wlen = 0;
        }
    }
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) die(1, "epoll_create1: %s", strerror(errno));
    if (cfg.mode == M_IDLE && cfg.server_pid && (g_rss_before = read_rss_kib(cfg.server_pid)) < 0)
        die(1, "cannot read the VmRSS of process %d", cfg.server_pid);

    g_now = g_t_open0 = now_ns();
    g_deadline = g_now + (uint64_t)(cfg.timeout * NS);
    g_budget = LLONG_MAX;
    if (cfg.mode == M_CONNECT) {
        if (cfg.warmup > 0) {
            g_phase = PH_WARMUP;
            g_phase_end = g_now + (uint64_t)(cfg.warmup * NS);
        } else {
            start_measure();
        }
    }
    while (g_next < cfg.conns && g_pending < cfg.batch) {
        g_pending++;
        conn_start(&conns[g_next++]);
    }

    int maxevents = cfg.conns > 512 ? cfg.conns : 512; /* every ready connection in one call */
    struct epoll_event *evs = malloc(maxevents * sizeof *evs);
    if (!evs) die(1, "out of memory");
    for (;;) {
        int n = epoll_wait(epfd, evs, maxevents, 5);
        if (n < 0 && errno != EINTR) die(1, "epoll_wait: %s", strerror(errno));
        g_now = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[(uint32_t)evs[i].data.u64];
            if (c->fd < 0 || c->gen != (uint32_t)(evs[i].data.u64 >> 32)) continue;
            on_event(c, evs[i].events);
        }
        tick();
        if (g_phase == PH_CLOSE && (g_live == 0 || g_now >= g_phase_end)) break;
    }
    if (g_live > 0) {
        fprintf(stderr, "wsload: warning: %d connection(s) did not finish the closing handshake\n", g_live);
        g_close_warn += g_live;
    }
    if (cfg.mode == M_IDLE) g_t_stop = g_t0 = 0;
    print_json(NULL);
    return 0;
}

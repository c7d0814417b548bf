/*
 * wsload's command line (included once, by wsload.c): the modes, the
 * configuration with its defaults, and the option parser.
 */
#ifndef WSOPTS_H
#define WSOPTS_H

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mode { M_PINGPONG, M_PIPELINE, M_BROADCAST, M_CONNECT, M_IDLE };
static const char *const MODE_NAMES[] = {"pingpong", "pipeline", "broadcast", "connect", "idle"};

static struct {
    enum mode mode;
    const char *host, *path;
    int port, conns, size, depth, text, batch, server_pid;
    int deflate, deflate_level, json; /* --deflate: permessage-deflate; --json: JSON-like payload */
    double duration, warmup, settle, timeout;
    long long messages; /* 0: run for --duration instead */
} cfg = {
    .host = "127.0.0.1", .port = 0, .conns = 1, .size = 32, .depth = 0, .text = 1,
    .batch = 64, .duration = 5.0, .warmup = 1.0, .settle = 1.0, .deflate_level = 1,
};

static void die(int code, const char *fmt, ...);

static void usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: wsload --mode pingpong|pipeline|broadcast|connect|idle [options]\n"
            "  --host H           server address (127.0.0.1)\n"
            "  --port P           server port (required)\n"
            "  --path PATH        request path (/echo; /broadcast for --mode broadcast)\n"
            "  --conns N          connections (concurrent cycles for connect) (1)\n"
            "  --size S           payload bytes (32)\n"
            "  --depth D          messages in flight per connection (pipeline 16, broadcast 64)\n"
            "  --text | --binary  message type (text)\n"
            "  --duration SEC     measured time (5)\n"
            "  --warmup SEC       unmeasured time before it (1)\n"
            "  --messages M       stop after M messages (cycles for connect) instead of --duration\n"
            "  --server-pid PID   the server process: idle reads its VmRSS; other modes report the\n"
            "                     CPU time of it and its descendants over the measured window\n"
            "  --settle SEC       idle: wait before reading the RSS (1)\n"
            "  --batch B          connections opened concurrently at start (64)\n"
            "  --timeout SEC      give up after this long in total (default: derived)\n"
            "  --deflate          negotiate permessage-deflate: compress sends, inflate and check receives\n"
            "  --deflate-level L  zlib level of what wsload sends (1)\n"
            "  --json             JSON-like text payload (compressible) instead of random letters\n");
    exit(code);
}

static void parse_args(int argc, char **argv) {
    static const struct option opts[] = {
        {"mode", 1, 0, 'm'},     {"host", 1, 0, 'h'},    {"port", 1, 0, 'p'},     {"path", 1, 0, 'P'},
        {"conns", 1, 0, 'c'},    {"size", 1, 0, 's'},    {"depth", 1, 0, 'd'},    {"text", 0, 0, 't'},
        {"binary", 0, 0, 'b'},   {"duration", 1, 0, 'D'}, {"warmup", 1, 0, 'w'},  {"messages", 1, 0, 'M'},
        {"server-pid", 1, 0, 'S'}, {"settle", 1, 0, 'e'}, {"batch", 1, 0, 'B'},   {"timeout", 1, 0, 'T'},
        {"deflate", 0, 0, 'Z'},  {"deflate-level", 1, 0, 'L'}, {"json", 0, 0, 'J'},
        {"help", 0, 0, 'H'},     {0, 0, 0, 0}};
    const char *mode = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': mode = optarg; break;
        case 'h': cfg.host = optarg; break;
        case 'p': cfg.port = atoi(optarg); break;
        case 'P': cfg.path = optarg; break;
        case 'c': cfg.conns = atoi(optarg); break;
        case 's': cfg.size = atoi(optarg); break;
        case 'd': cfg.depth = atoi(optarg); break;
        case 't': cfg.text = 1; break;
        case 'b': cfg.text = 0; break;
        case 'D': cfg.duration = atof(optarg); break;
        case 'w': cfg.warmup = atof(optarg); break;
        case 'M': cfg.messages = atoll(optarg); break;
        case 'S': cfg.server_pid = atoi(optarg); break;
        case 'e': cfg.settle = atof(optarg); break;
        case 'B': cfg.batch = atoi(optarg); break;
        case 'T': cfg.timeout = atof(optarg); break;
        case 'Z': cfg.deflate = 1; break;
        case 'L': cfg.deflate_level = atoi(optarg); break;
        case 'J': cfg.json = 1; break;
        case 'H': usage(0); break;
        default: usage(64);
        }
    }
    if (!mode || optind != argc) usage(64);
    int found = 0;
    for (int i = 0; i < 5; i++)
        if (!strcmp(mode, MODE_NAMES[i])) cfg.mode = (enum mode)i, found = 1;
    if (!found) usage(64);
    if (cfg.port <= 0 || cfg.port > 65535) die(64, "--port is required");
    if (cfg.conns < 1 || cfg.conns > 1000000) die(64, "bad --conns");
    if (cfg.size < 0 || cfg.batch < 1) die(64, "bad --size or --batch");
    if (!cfg.path) cfg.path = cfg.mode == M_BROADCAST ? "/broadcast" : "/echo";
    if (cfg.mode == M_PINGPONG) cfg.depth = 1;
    if (cfg.depth <= 0) cfg.depth = cfg.mode == M_BROADCAST ? 64 : cfg.mode == M_PIPELINE ? 16 : 1;
    if (cfg.mode == M_BROADCAST && cfg.size < 8) die(64, "broadcast needs --size >= 8");
    if (cfg.mode == M_CONNECT || cfg.mode == M_IDLE) cfg.size = 0, cfg.depth = 0;
    if (cfg.mode == M_CONNECT) cfg.batch = cfg.conns;
    if ((cfg.mode == M_PINGPONG || cfg.mode == M_PIPELINE) && cfg.size < 1) die(64, "--size must be >= 1");
    if (cfg.conns >= (1 << 16) && cfg.mode != M_IDLE && cfg.mode != M_CONNECT) die(64, "at most 65535 --conns");
    if (cfg.timeout <= 0)
        cfg.timeout = cfg.mode == M_IDLE ? 120 + cfg.conns / 100.0 + cfg.settle
                    : cfg.messages       ? 300
                                         : 60 + cfg.warmup + cfg.duration;
}

#endif

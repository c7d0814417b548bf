/* Incremental UTF-8 validation (RFC 3629), fail-fast.
 *
 * A text message may arrive in many frames and many reads; a code point may be split
 * anywhere.  The state between calls is two bytes: how many continuation bytes are still
 * expected and the range the next one must fall in (which is how overlongs, surrogates and
 * code points above U+10FFFF are refused at their second byte, not at the end).  Runs of
 * ASCII are skipped eight bytes at a time. */
#ifndef HARPIA_UTF8_H
#define HARPIA_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* state: bits 0-7 bytes still needed, 8-15 low bound, 16-23 high bound of the next byte. */
#define HARPIA_UTF8_ACCEPT 0u

/* Returns 0 while the bytes so far are a valid prefix, -1 at the first invalid byte. */
static inline int harpia_utf8_feed(uint32_t *state, const unsigned char *s, size_t n)
{
    uint32_t need = *state & 0xff;
    uint32_t lo = (*state >> 8) & 0xff;
    uint32_t hi = (*state >> 16) & 0xff;
    size_t i = 0;
    while (i < n) {
        if (need == 0) {
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            if (i >= n)
                break;
            unsigned char c = s[i++];
            if (c < 0x80)
                continue;
            if (c < 0xC2)               /* continuation byte or overlong 2-byte lead */
                return -1;
            if (c < 0xE0) {
                need = 1; lo = 0x80; hi = 0xBF;
            } else if (c < 0xF0) {
                need = 2;
                lo = (c == 0xE0) ? 0xA0 : 0x80;   /* E0: no overlongs */
                hi = (c == 0xED) ? 0x9F : 0xBF;   /* ED: no surrogates */
            } else if (c < 0xF5) {
                need = 3;
                lo = (c == 0xF0) ? 0x90 : 0x80;   /* F0: no overlongs */
                hi = (c == 0xF4) ? 0x8F : 0xBF;   /* F4: nothing above U+10FFFF */
            } else {
                return -1;
            }
        } else {
            unsigned char c = s[i++];
            if (c < lo || c > hi)
                return -1;
            need--;
            lo = 0x80;
            hi = 0xBF;
        }
    }
    *state = need | (lo << 8) | (hi << 16);
    return 0;
}

/* True when the bytes fed so far end on a code point boundary. */
static inline int harpia_utf8_complete(uint32_t state)
{
    return (state & 0xff) == 0;
}

#endif /* HARPIA_UTF8_H */

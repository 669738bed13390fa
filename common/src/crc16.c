/*
 * crc16.c - Redis Cluster's key hash: CRC16-CCITT (XMODEM) and the hash slot
 * with {hash tag} rules, exactly as Redis' keyHashSlot() (cluster.c).
 *
 * Table-driven, one lookup per byte: the slot is computed for every borrower
 * of every batch, so it should cost a few nanoseconds. The table is built at
 * compile time from the polynomial rather than typed in, so it cannot hold a
 * typo; the unit test pins the result to the standard check value
 * crc("123456789") = 0x31C3 and to slots Redis itself reported.
 */
#include "loanwire/rcluster.h"

#include <string.h>

#define P 0x1021u
/* One table entry: the CRC of byte b shifted in with 8 steps of the polynomial. */
#define S1(v)  ((uint16_t)(((unsigned)(v) << 1) ^ ((((unsigned)(v) >> 15) & 1u) * P)))
#define S8(v)  S1(S1(S1(S1(S1(S1(S1(S1((uint16_t)(v)))))))))
#define E(b)   S8((unsigned)(b) << 8)
#define R4(b)  E(b), E((b) + 1), E((b) + 2), E((b) + 3)
#define R16(b) R4(b), R4((b) + 4), R4((b) + 8), R4((b) + 12)
#define R64(b) R16(b), R16((b) + 16), R16((b) + 32), R16((b) + 48)

static const uint16_t crc16_table[256] = {R64(0), R64(64), R64(128), R64(192)};

uint16_t lw_rcluster_crc16(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc16_table[((crc >> 8) ^ p[i]) & 0xff]);
    return crc;
}

int lw_rcluster_keyslot(const void *key, size_t len)
{
    const char *k = key;
    if (!k)
        len = 0;
    const char *open = len ? memchr(k, '{', len) : NULL;
    if (open) {
        size_t from = (size_t)(open - k) + 1;
        const char *close = memchr(k + from, '}', len - from);
        /* "{}" (empty tag) or no '}' after the '{': the whole key is hashed. */
        if (close && close > k + from)
            return lw_rcluster_crc16(k + from, (size_t)(close - (k + from))) & 0x3fff;
    }
    return lw_rcluster_crc16(k, len) & 0x3fff;
}

/*
 * resp.c - Redis commands built as RESP straight into a reusable buffer.
 *
 * The store sends whole pipelines (a batch's MGETs, a MULTI of MSETs, a chunk
 * of script calls) and formats them here without hiredis's printf-style
 * formatter and its allocation per command: numbers are written digit by
 * digit, keys through lw_borrower_key(). Each call returns false only when
 * the buffer cannot grow.
 */
#include "store_int.h"

#include <stdint.h>
#include <string.h>

/* Decimal digits of v into p (no NUL); returns the length. */
static size_t fmt_i64(char *p, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t o = 0;
    if (v < 0)
        p[o++] = '-';
    while (n)
        p[o++] = tmp[--n];
    return o;
}

bool lw_resp_hdr(lw_sbuf_t *b, char c, int64_t n)
{
    if (!lw_sbuf_reserve(b, 32))
        return false;
    char *p = b->p + b->len;
    *p++ = c;
    p += fmt_i64(p, n);
    *p++ = '\r';
    *p++ = '\n';
    b->len = (size_t)(p - b->p);
    return true;
}

bool lw_resp_bulk(lw_sbuf_t *b, const void *s, size_t n)
{
    if (!lw_resp_hdr(b, '$', (int64_t)n) || !lw_sbuf_reserve(b, n + 2))
        return false;
    memcpy(b->p + b->len, s, n);
    memcpy(b->p + b->len + n, "\r\n", 2);
    b->len += n + 2;
    return true;
}

bool lw_resp_str(lw_sbuf_t *b, const char *s)
{
    return lw_resp_bulk(b, s, strlen(s));
}

bool lw_resp_int(lw_sbuf_t *b, int64_t v)
{
    char tmp[24];
    return lw_resp_bulk(b, tmp, fmt_i64(tmp, v));
}

bool lw_resp_key(lw_sbuf_t *b, char prefix, const char *bid)
{
    char k[LW_STATE_KEY_MAX];
    return lw_resp_bulk(b, k, lw_borrower_key(prefix, bid, k));
}

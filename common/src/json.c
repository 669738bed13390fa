/*
 * json.c - the plain JSON form of events and alerts (loanwire/json.h).
 *
 * A small hand-written reader instead of a DOM parser: the object is flat,
 * every field's type is known from the tables in codec_desc.c, and going
 * token by token lets each error name its field (a float, an integer out of
 * int64 range, an unknown symbol) and costs no allocation. The hot path is
 * plain ASCII keys in schema order: a key is compared in place against the
 * field after the previous one first (length and bytes, no copy), strings
 * without escapes are copied with one memcpy and skip the UTF-8 check; any
 * escape or non-ASCII byte falls back to the general decoder, so the result
 * and every error message are the same either way. Output is compact JSON
 * with keys in schema order; optional fields that are absent are written as
 * null.
 */
#include "codec_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct lw_jp {
    const char *p, *end;
    lw_field_error_t *ferr;
} lw_jp_t;

/* Takes the error struct rather than the reader: the reader's address never
 * leaves the inlined code, so its pointer stays in a register. */
static lw_err_t jfail(lw_field_error_t *ferr, lw_err_t err, const char *field, const char *fmt, ...)
{
    va_list ap;
    if (ferr) {
        snprintf(ferr->field, sizeof(ferr->field), "%s", field ? field : "");
        va_start(ap, fmt);
        vsnprintf(ferr->reason, sizeof(ferr->reason), fmt, ap);
        va_end(ap);
    }
    return err;
}

#if defined(__GNUC__)
#define LW_INLINE inline __attribute__((always_inline))
#else
#define LW_INLINE inline
#endif

static LW_INLINE void skip_ws(lw_jp_t *j)
{
    /* Compact input has no whitespace: one comparison for the usual case. */
    while (j->p < j->end && (unsigned char)*j->p <= ' ' &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Bytes that stand for themselves inside a JSON string and need no UTF-8
 * check: printable ASCII except '"' and '\\'. */
static inline bool lw_json_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Nonzero when one of the 8 bytes of w is not plain (SWAR: a byte below 0x20,
 * '"', '\\' or with the high bit set). */
static inline uint64_t lw_json_plain8(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    return ((w - ones * 0x20) | (q - ones) | (b - ones) | w) & high;
}

/* The common case of a string (j->p at the opening quote): plain bytes up to
 * the closing quote. Returns the length and sets *s to the first byte, leaving
 * j->p after the closing quote; returns -1 (j->p unchanged) when the string
 * has anything else, for the general decoder. */
static LW_INLINE ptrdiff_t scan_plain(lw_jp_t *j, const char **s)
{
    const char *q = j->p + 1;
    uint64_t w, m;
    while (j->end - q >= 8) {
        memcpy(&w, q, 8);
        if ((m = lw_json_plain8(w)) != 0) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* Straight to the first flagged byte: the lowest flag is exact
             * (borrows only run upwards), and the loop below stops on it. */
            q += __builtin_ctzll(m) >> 3;
#endif
            break;
        }
        q += 8;
    }
    while (q < j->end && lw_json_plain((unsigned char)*q))
        q++;
    if (q >= j->end || *q != '"')
        return -1;
    *s = j->p + 1;
    j->p = q + 1;
    return q - *s;
}

/* Reads a JSON string (j->p at the opening quote) into dst[cap]. Returns 0,
 * -1 on malformed text (reason in *why), -2 when it does not fit. */
static int read_string_at(lw_jp_t *j, char *dst, size_t cap, size_t *out_len, const char **why)
{
    size_t n = 0;
    const char *s;
    ptrdiff_t pn = scan_plain(j, &s);

    if (pn >= 0) {
        if ((size_t)pn >= cap)
            return -2;
        memcpy(dst, s, (size_t)pn);
        dst[pn] = '\0';
        *out_len = (size_t)pn;
        return 0;
    }
    j->p++; /* opening quote */
    for (;;) {
        if (j->p >= j->end) {
            *why = "unterminated string";
            return -1;
        }
        unsigned char c = (unsigned char)*j->p++;
        char tmp[4];
        size_t tn = 0;
        if (c == '"')
            break;
        if (c < 0x20) {
            *why = "control character inside a string";
            return -1;
        }
        if (c != '\\') {
            tmp[0] = (char)c;
            tn = 1;
        } else {
            if (j->p >= j->end) {
                *why = "unterminated string";
                return -1;
            }
            c = (unsigned char)*j->p++;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                tmp[0] = (char)c;
                tn = 1;
                break;
            case 'b':
                tmp[0] = '\b';
                tn = 1;
                break;
            case 'f':
                tmp[0] = '\f';
                tn = 1;
                break;
            case 'n':
                tmp[0] = '\n';
                tn = 1;
                break;
            case 'r':
                tmp[0] = '\r';
                tn = 1;
                break;
            case 't':
                tmp[0] = '\t';
                tn = 1;
                break;
            case 'u': {
                uint32_t cp, lo;
                if (j->end - j->p < 4 || hex4(j->p, &cp)) {
                    *why = "bad \\u escape";
                    return -1;
                }
                j->p += 4;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                        hex4(j->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                        *why = "unpaired UTF-16 surrogate in \\u escape";
                        return -1;
                    }
                    j->p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    *why = "unpaired UTF-16 surrogate in \\u escape";
                    return -1;
                }
                if (cp == 0) {
                    *why = "NUL character (\\u0000) not allowed";
                    return -1;
                }
                if (cp < 0x80) {
                    tmp[tn++] = (char)cp;
                } else if (cp < 0x800) {
                    tmp[tn++] = (char)(0xc0 | (cp >> 6));
                    tmp[tn++] = (char)(0x80 | (cp & 0x3f));
                } else if (cp < 0x10000) {
                    tmp[tn++] = (char)(0xe0 | (cp >> 12));
                    tmp[tn++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    tmp[tn++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    tmp[tn++] = (char)(0xf0 | (cp >> 18));
                    tmp[tn++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                    tmp[tn++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    tmp[tn++] = (char)(0x80 | (cp & 0x3f));
                }
                break;
            }
            default:
                *why = "bad escape in string";
                return -1;
            }
        }
        if (n + tn >= cap) {
            /* Keep scanning so the caller can tell "too long" from "malformed". */
            n = cap;
            continue;
        }
        memcpy(dst + n, tmp, tn);
        n += tn;
    }
    if (n >= cap)
        return -2;
    dst[n] = '\0';
    if (!lw_utf8_valid((const unsigned char *)dst, n)) {
        *why = "string is not valid UTF-8";
        return -1;
    }
    *out_len = n;
    return 0;
}

/* read_string_at() on a copy of the position (written back), so the caller's
 * reader does not have its address taken by this out-of-line call. */
static LW_INLINE int read_string(lw_jp_t *j, char *dst, size_t cap, size_t *out_len,
                                 const char **why)
{
    lw_jp_t c = *j;
    int rc = read_string_at(&c, dst, cap, out_len, why);
    j->p = c.p;
    return rc;
}

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define LW_SWAR_DIGITS 1
/* How many of the 8 bytes of w (first byte lowest) are ASCII digits before
 * the first non-digit. A byte is a digit when its high nibble is 3 and adding
 * 6 keeps it 3; a carry out of a byte only starts at a non-digit (>= 0xfa),
 * so the lowest flagged byte is exact. */
static inline unsigned lw_ndigits8(uint64_t w)
{
    const uint64_t hi = 0xf0f0f0f0f0f0f0f0u, threes = 0x3030303030303030u;
    uint64_t nd = ((w & hi) ^ threes) | (((w + 0x0606060606060606u) & hi) ^ threes);
    return nd ? (unsigned)__builtin_ctzll(nd) >> 3 : 8;
}

/* The value of 8 ASCII digits, first one lowest (as in simdjson/fast_float). */
static inline uint64_t lw_parse8(uint64_t w)
{
    const uint64_t mask = 0x000000ff000000ffu;
    const uint64_t mul1 = 100 + (UINT64_C(1000000) << 32), mul2 = 1 + (UINT64_C(10000) << 32);
    w -= 0x3030303030303030u;
    w = (w * 10) + (w >> 8);
    return (((w & mask) * mul1) + (((w >> 16) & mask) * mul2)) >> 32;
}

/* The value of the first k (1..8) digits of w: '0's put in front. */
static inline uint64_t lw_parse_k(uint64_t w, unsigned k)
{
    if (k < 8) {
        unsigned sh = 8 * (8 - k);
        w = (w << sh) | (0x3030303030303030u >> (64 - sh));
    }
    return lw_parse8(w);
}
#endif

/* Reads a JSON number that must be an integer in [min, max]. */
static LW_INLINE lw_err_t read_integer(lw_jp_t *j, const char *field, int64_t min, int64_t max,
                                       int64_t *out)
{
    const char *p = j->p;
    bool neg = false;
    uint64_t v = 0, limit;

    if (p < j->end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= j->end || *p < '0' || *p > '9')
        return jfail(j->ferr, LW_ERR_PARSE, field, "must be an integer");
    if (*p == '0' && p + 1 < j->end && p[1] >= '0' && p[1] <= '9')
        return jfail(j->ferr, LW_ERR_PARSE, field, "leading zeros are not allowed in JSON numbers");
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    bool overflow = false;
#ifdef LW_SWAR_DIGITS
    /* Up to 15 digits (never near the limit) 8 at a time, when 16 bytes can
     * be read; anything else by the loops below. */
    if (j->end - p >= 16) {
        static const uint64_t pow10[8] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};
        uint64_t w, w2;
        unsigned k, k2;
        memcpy(&w, p, 8);
        k = lw_ndigits8(w); /* >= 1: p is at a digit */
        if (k < 8) {
            v = lw_parse_k(w, k);
            p += k;
        } else {
            memcpy(&w2, p + 8, 8);
            k2 = lw_ndigits8(w2);
            if (k2 < 8) {
                v = lw_parse8(w) * pow10[k2] + (k2 ? lw_parse_k(w2, k2) : 0);
                p += 8 + k2;
            }
        }
    }
#endif
    /* 18 digits always fit (10^18 < 2^63): check for overflow only after. */
    const char *safe = j->end - p > 18 ? p + 18 : j->end;
    while (p < safe && *p >= '0' && *p <= '9')
        v = v * 10 + (unsigned)(*p++ - '0');
    while (p < j->end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p++ - '0');
        if (v > (limit - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
    }
    if (p < j->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return jfail(j->ferr, LW_ERR_VALIDATION, field,
                     "must be an integer (no fraction or exponent, e.g. 150 not 1.5e2)");
    if (overflow)
        return jfail(j->ferr, LW_ERR_VALIDATION, field, "integer out of the 64-bit range");
    int64_t s = neg ? (int64_t)(0 - v) : (int64_t)v;
    if (s < min || s > max)
        return jfail(j->ferr, LW_ERR_VALIDATION, field,
                     "%" PRId64 " is out of range [%" PRId64 ", %" PRId64 "]", s, min, max);
    j->p = p;
    *out = s;
    return LW_OK;
}

/* True when name (NUL-terminated) is exactly k[0..kn); k holds no NUL. */
static inline bool name_eq(const char *name, const char *k, size_t kn)
{
    size_t i = 0;
    while (i < kn && name[i] == k[i]) /* stops at name's NUL: k has none */
        i++;
    return i == kn && kn && name[kn] == '\0';
}

/* What the reader works out once per record kind rather than per line. */
/* Names up to 23 bytes are compared as words, with their quote; match_key()
 * reads all 3 words at once when the input has them. */
#define LW_KEY_WORDS 3

typedef struct lw_jtab {
    unsigned char len[LW_MAX_FIELDS]; /* strlen of each field name */
    /* Each name and its closing quote as 8-byte words, zero-padded, with the
     * mask of its bytes; nw 0 when the name is too long for that. */
    unsigned char nw[LW_MAX_FIELDS];
    uint64_t kw[LW_MAX_FIELDS][LW_KEY_WORDS], km[LW_MAX_FIELDS][LW_KEY_WORDS];
    int borrower;                   /* index of "borrower_id", or -1 */
    uint32_t required;              /* fields that must be given (bit per index) */
    int ndefs, defs[LW_MAX_FIELDS]; /* fields with a default */
    /* The fast lane's keys: '"', the name, '"' and ':' as bytes and as masked
     * words; lane false when a name is too long for them. */
    bool lane;
    char lb[LW_MAX_FIELDS][8 * LW_KEY_WORDS];
    uint64_t lw[LW_MAX_FIELDS][LW_KEY_WORDS], lm[LW_MAX_FIELDS][LW_KEY_WORDS];
} lw_jtab_t;

static lw_jtab_t lw_jtab_event, lw_jtab_alert;
static pthread_once_t lw_jtab_once = PTHREAD_ONCE_INIT;

static void lw_jtab_fill(const lw_record_desc_t *d, lw_jtab_t *t)
{
    t->borrower = -1;
    t->lane = d->nfields <= LW_MAX_FIELDS;
    for (int i = 0; i < d->nfields && i < LW_MAX_FIELDS; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        size_t n = strlen(f->name);
        t->len[i] = (unsigned char)n;
        if (n + 1 <= 8 * LW_KEY_WORDS) {
            unsigned char kb[8 * LW_KEY_WORDS] = {0}, mb[8 * LW_KEY_WORDS] = {0};
            memcpy(kb, f->name, n);
            kb[n] = '"';
            memset(mb, 0xff, n + 1);
            t->nw[i] = (unsigned char)((n + 1 + 7) / 8);
            memcpy(t->kw[i], kb, sizeof kb);
            memcpy(t->km[i], mb, sizeof mb);
        }
        if (n + 3 <= 8 * LW_KEY_WORDS) {
            unsigned char mb[8 * LW_KEY_WORDS] = {0};
            t->lb[i][0] = '"';
            memcpy(t->lb[i] + 1, f->name, n);
            memcpy(t->lb[i] + 1 + n, "\":", 2);
            memset(mb, 0xff, n + 3);
            memcpy(t->lw[i], t->lb[i], sizeof t->lb[i]);
            memcpy(t->lm[i], mb, sizeof mb);
        } else {
            t->lane = false;
        }
        if (!strcmp(f->name, "borrower_id"))
            t->borrower = i;
        if (f->def)
            t->defs[t->ndefs++] = i;
        else if (f->type != LW_FT_OPT_LONG && f->type != LW_FT_OPT_INT)
            t->required |= 1u << i;
    }
}

static void lw_jtab_init(void)
{
    lw_jtab_fill(&lw_event_desc, &lw_jtab_event);
    lw_jtab_fill(&lw_alert_desc, &lw_jtab_alert);
}

/* Whether the 8 * LW_KEY_WORDS bytes at q differ from w where m has bits. */
static LW_INLINE bool words_differ(const char *q, const uint64_t w[LW_KEY_WORDS],
                                   const uint64_t m[LW_KEY_WORDS])
{
    uint64_t x0, x1, x2;
    memcpy(&x0, q, 8);
    memcpy(&x1, q + 8, 8);
    memcpy(&x2, q + 16, 8);
    return (((x0 ^ w[0]) & m[0]) | ((x1 ^ w[1]) & m[1]) | ((x2 ^ w[2]) & m[2])) != 0;
}

/* The common case of a key: exactly field i's name, then the closing quote
 * (j->p at the opening quote). Moves j->p past the key when so. Compared a
 * word at a time in place (a memcmp call per key cost more than the rest). */
static LW_INLINE bool match_key(lw_jp_t *j, const lw_jtab_t *t, int i, const char *name)
{
    const char *q = j->p + 1;
    size_t n = t->len[i];
    int nw = t->nw[i];

    if (nw && j->end - q >= 8 * LW_KEY_WORDS) { /* all words at once (unused ones masked) */
        if (words_differ(q, t->kw[i], t->km[i]))
            return false;
        j->p = q + n + 1;
        return true;
    }
    if ((size_t)(j->end - q) <= n)
        return false;
    if (nw && (size_t)(j->end - q) >= (size_t)nw * 8) {
        uint64_t diff = 0, x;
        for (int w = 0; w < nw; w++) {
            memcpy(&x, q + 8 * w, 8);
            diff |= (x ^ t->kw[i][w]) & t->km[i][w];
        }
        if (diff)
            return false;
    } else if (q[n] != '"' || memcmp(q, name, n) != 0) {
        return false;
    }
    j->p = q + n + 1;
    return true;
}

/* Index of the field named k[0..kn), trying hint (the field after the previous
 * one: lines usually follow schema order) before the others; -1 if none. */
static int find_field(const lw_record_desc_t *d, const char *k, size_t kn, int hint)
{
    if (hint >= 0 && hint < d->nfields && name_eq(d->fields[hint].name, k, kn))
        return hint;
    for (int i = 0; i < d->nfields; i++)
        if (i != hint && name_eq(d->fields[i].name, k, kn))
            return i;
    return -1;
}

static LW_INLINE int literal(lw_jp_t *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, lit, n)) {
        j->p += n;
        return 1;
    }
    return 0;
}

static LW_INLINE lw_err_t read_value(lw_jp_t *j, const lw_field_desc_t *f, char *base)
{
    char *fv = base + f->off;
    const char *why = NULL;
    size_t n;
    int64_t v = 0;
    lw_err_t err;

    if (j->p >= j->end)
        return jfail(j->ferr, LW_ERR_PARSE, f->name, "input ends before the value");
    switch (f->type) {
    case LW_FT_STRING:
        if (*j->p != '"')
            return jfail(j->ferr, LW_ERR_VALIDATION, f->name, "must be a string");
        { /* the usual plain string, in line; read_string() for the rest */
            const char *sp;
            ptrdiff_t pn = scan_plain(j, &sp);
            if (pn >= 0 && (size_t)pn < f->cap) {
                memcpy(fv, sp, (size_t)pn);
                fv[pn] = '\0';
                return LW_OK;
            }
            if (pn >= 0)
                return jfail(j->ferr, LW_ERR_VALIDATION, f->name, "longer than %zu bytes",
                             f->cap - 1);
        }
        switch (read_string(j, fv, f->cap, &n, &why)) {
        case -1:
            return jfail(j->ferr, LW_ERR_PARSE, f->name, "%s", why);
        case -2:
            return jfail(j->ferr, LW_ERR_VALIDATION, f->name, "longer than %zu bytes", f->cap - 1);
        }
        return LW_OK;
    case LW_FT_ENUM: {
        char sym[32];
        const char *s = sym;
        int idx = -1;
        if (*j->p != '"')
            return jfail(j->ferr, LW_ERR_VALIDATION, f->name, "must be a symbol string");
        ptrdiff_t pn = scan_plain(j, &s); /* compared in place when plain */
        int rc = 0;
        if (pn >= 0)
            n = (size_t)pn;
        else if ((rc = read_string(j, sym, sizeof(sym), &n, &why)) == -1)
            return jfail(j->ferr, LW_ERR_PARSE, f->name, "%s", why);
        for (int i = 0; rc == 0 && i < f->nsyms; i++) {
            if (name_eq(f->syms[i], s, n)) {
                idx = i;
                break;
            }
        }
        if (idx < 0) {
            char list[160] = "";
            for (int i = 0; i < f->nsyms; i++) {
                strncat(list, f->syms[i], sizeof(list) - strlen(list) - 1);
                if (i + 1 < f->nsyms)
                    strncat(list, ", ", sizeof(list) - strlen(list) - 1);
            }
            return jfail(j->ferr, LW_ERR_VALIDATION, f->name, "unknown symbol (expected one of %s)",
                         list);
        }
        memcpy(fv, &idx, sizeof(idx));
        return LW_OK;
    }
    case LW_FT_OPT_LONG:
    case LW_FT_OPT_INT:
        if (literal(j, "null")) {
            bool has = false;
            memcpy(base + f->has_off, &has, sizeof(has));
            return LW_OK;
        }
        /* fall through */
    case LW_FT_LONG:
    case LW_FT_INT: {
        bool is_int = f->type == LW_FT_INT || f->type == LW_FT_OPT_INT;
        if ((err = read_integer(j, f->name, is_int ? INT32_MIN : INT64_MIN,
                                is_int ? INT32_MAX : INT64_MAX, &v)))
            return err;
        if (is_int) {
            int32_t i32 = (int32_t)v;
            memcpy(fv, &i32, sizeof(i32));
        } else {
            memcpy(fv, &v, sizeof(v));
        }
        if (f->type == LW_FT_OPT_LONG || f->type == LW_FT_OPT_INT) {
            bool has = true;
            memcpy(base + f->has_off, &has, sizeof(has));
        }
        return LW_OK;
    }
    }
    return LW_ERR_INVALID_ARG;
}

/* The fast lane: the usual line, compact, every field once in schema order
 * ('{"key":value,...}'), each key compared as words and each value read by
 * read_value() as below. Returns false at the first difference (a space,
 * another order, a missing or unknown field, a value the field refuses):
 * the caller then reads the line again with the general loop, so what is
 * accepted and every message stay exactly the same. */
static bool fast_lane(const lw_record_desc_t *d, const lw_jtab_t *t, lw_jp_t *j, char *base)
{
    if (j->p >= j->end || *j->p != '{')
        return false;
    j->p++;
    for (int i = 0; i < d->nfields; i++) {
        const char *q = j->p;
        size_t kn = (size_t)t->len[i] + 3; /* "name": */
        if (j->end - q >= 8 * LW_KEY_WORDS) {
            if (words_differ(q, t->lw[i], t->lm[i]))
                return false;
        } else if ((size_t)(j->end - q) <= kn || memcmp(q, t->lb[i], kn) != 0) {
            return false;
        }
        j->p = q + kn;
        if (j->p >= j->end || (unsigned char)*j->p <= ' ' ||
            read_value(j, &d->fields[i], base) != LW_OK || j->p >= j->end ||
            *j->p != (i + 1 < d->nfields ? ',' : '}'))
            return false;
        j->p++;
    }
    return j->p == j->end;
}

/* What a parse starts from: rec zero but for the fields' defaults, no error. */
static void record_start(const lw_record_desc_t *d, const lw_jtab_t *t, void *rec,
                         lw_field_error_t *ferr)
{
    char *base = rec;
    memset(rec, 0, d->size);
    for (int i = 0; i < t->ndefs; i++) {
        const lw_field_desc_t *f = &d->fields[t->defs[i]];
        size_t n = strlen(f->def); /* rec is zeroed: the NUL is there already */
        memcpy(base + f->off, f->def, n < f->cap ? n : f->cap - 1);
    }
    if (ferr)
        ferr->field[0] = ferr->reason[0] = '\0';
}

/* Parses one flat object into rec following d. raw_id (events only) takes
 * "national_id"; NULL refuses that field. */
static lw_err_t parse_record(const lw_record_desc_t *d, const lw_jtab_t *t, const char *text,
                             size_t len, void *rec, char *raw_id, bool allow_raw_id,
                             lw_field_error_t *ferr)
{
    lw_jp_t j = {text, text + len, ferr};
    char *base = rec;
    uint32_t seen = 0;
    bool seen_raw = false;
    lw_err_t err;
    int borrower = -1, next = 0;

    if (raw_id)
        raw_id[0] = '\0';
    if (!text) {
        memset(rec, 0, d->size);
        return jfail(j.ferr, LW_ERR_INVALID_ARG, "", "no input");
    }
    record_start(d, t, rec, ferr);
    borrower = t->borrower;

    if (t->lane) {
        lw_jp_t lane = j;
        if (fast_lane(d, t, &lane, base))
            return LW_OK;
        record_start(d, t, rec, ferr); /* read again, as if the lane had not been tried */
    }

    skip_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return jfail(j.ferr, LW_ERR_PARSE, "", "expected a JSON object");
    j.p++;
    skip_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            char key[48];
            const char *k;
            size_t kn;
            const char *why = NULL;
            int idx = -1, rc;
            if (j.p >= j.end || *j.p != '"') /* usually right after '{' or ',' */
                skip_ws(&j);
            if (j.p >= j.end || *j.p != '"')
                return jfail(j.ferr, LW_ERR_PARSE, "", "expected a field name at offset %td",
                             j.p - text);
            /* Plain keys are matched in place; copied only for error messages. */
            ptrdiff_t pn;
            if (next < d->nfields && match_key(&j, t, next, d->fields[next].name)) {
                idx = next;
            } else if ((pn = scan_plain(&j, &k)) >= 0) {
                kn = (size_t)pn;
                if (kn >= sizeof(key))
                    return jfail(j.ferr, LW_ERR_VALIDATION, "", "unknown field (name too long)");
                idx = find_field(d, k, kn, next);
                if (idx < 0) {
                    memcpy(key, k, kn);
                    key[kn] = '\0';
                }
            } else {
                rc = read_string(&j, key, sizeof(key), &kn, &why);
                if (rc == -1)
                    return jfail(j.ferr, LW_ERR_PARSE, "", "field name: %s", why);
                if (rc == -2)
                    return jfail(j.ferr, LW_ERR_VALIDATION, "", "unknown field (name too long)");
                idx = find_field(d, key, kn, next);
            }
            const char *kname = idx >= 0 ? d->fields[idx].name : key;
            if (idx >= 0)
                next = idx + 1;
            if (j.p >= j.end || *j.p != ':')
                skip_ws(&j);
            if (j.p >= j.end || *j.p != ':')
                return jfail(j.ferr, LW_ERR_PARSE, kname, "expected ':' after the field name");
            j.p++;
            skip_ws(&j);
            if (idx >= 0) {
                if (seen & (1u << idx))
                    return jfail(j.ferr, LW_ERR_VALIDATION, kname, "field given twice");
                seen |= 1u << idx;
                if ((err = read_value(&j, &d->fields[idx], base)))
                    return err;
            } else if (allow_raw_id && !strcmp(key, LW_RAW_ID_FIELD)) {
                char tmp[LW_ID_MAX + 1];
                size_t n;
                if (seen_raw)
                    return jfail(j.ferr, LW_ERR_VALIDATION, key, "field given twice");
                seen_raw = true;
                if (!raw_id)
                    return jfail(j.ferr, LW_ERR_VALIDATION, key,
                                 "raw national ids are not accepted here; give borrower_id");
                if (j.p >= j.end || *j.p != '"')
                    return jfail(j.ferr, LW_ERR_VALIDATION, key, "must be a string");
                rc = read_string(&j, tmp, sizeof(tmp), &n, &why);
                if (rc == -1)
                    return jfail(j.ferr, LW_ERR_PARSE, key, "%s", why);
                if (rc == -2)
                    return jfail(j.ferr, LW_ERR_VALIDATION, key, "longer than %d bytes", LW_ID_MAX);
                memcpy(raw_id, tmp, n + 1);
            } else {
                return jfail(j.ferr, LW_ERR_VALIDATION, key, "unknown field");
            }
            if (j.p >= j.end || *j.p != ',')
                skip_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            return jfail(j.ferr, LW_ERR_PARSE, idx >= 0 ? d->fields[idx].name : key,
                         "expected ',' or '}' after the value");
        }
    }
    skip_ws(&j);
    if (j.p != j.end)
        return jfail(j.ferr, LW_ERR_PARSE, "", "trailing characters after the object");

    if (seen_raw && borrower >= 0 && (seen & (1u << borrower)))
        return jfail(j.ferr, LW_ERR_VALIDATION, LW_RAW_ID_FIELD,
                     "give borrower_id or national_id, not both");
    for (int i = 0; (seen & t->required) != t->required && i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        if (seen & (1u << i) || f->def || f->type == LW_FT_OPT_LONG || f->type == LW_FT_OPT_INT)
            continue;
        if (i == borrower && seen_raw)
            continue;
        return jfail(j.ferr, LW_ERR_VALIDATION, f->name,
                     i == borrower && allow_raw_id ? "missing (give borrower_id or national_id)"
                                                   : "missing required field");
    }
    return LW_OK;
}

lw_err_t lw_event_from_json(const char *text, size_t len, lw_event_t *ev, char *raw_id,
                            lw_field_error_t *ferr)
{
    if (!ev)
        return LW_ERR_INVALID_ARG;
    pthread_once(&lw_jtab_once, lw_jtab_init);
    return parse_record(&lw_event_desc, &lw_jtab_event, text, len, ev, raw_id, true, ferr);
}

lw_err_t lw_alert_from_json(const char *text, size_t len, lw_alert_t *al, lw_field_error_t *ferr)
{
    if (!al)
        return LW_ERR_INVALID_ARG;
    pthread_once(&lw_jtab_once, lw_jtab_init);
    return parse_record(&lw_alert_desc, &lw_jtab_alert, text, len, al, NULL, false, ferr);
}

/* ---- Output ------------------------------------------------------------------ */

typedef struct lw_jw {
    char *p, *end;
    bool overflow;
} lw_jw_t;

static void jw_put(lw_jw_t *w, const char *s, size_t n)
{
    if (w->overflow || (size_t)(w->end - w->p) < n) {
        w->overflow = true;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

static void jw_quote(lw_jw_t *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    jw_put(w, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        jw_put(w, run, (size_t)(s - run));
        run = s + 1;
        char esc[6] = {'\\', (char)c};
        switch (c) {
        case '"':
        case '\\':
            jw_put(w, esc, 2);
            break;
        case '\n':
            jw_put(w, "\\n", 2);
            break;
        case '\r':
            jw_put(w, "\\r", 2);
            break;
        case '\t':
            jw_put(w, "\\t", 2);
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            jw_put(w, esc, 6);
        }
    }
    jw_put(w, run, (size_t)(s - run));
    jw_put(w, "\"", 1);
}

static void jw_int(lw_jw_t *w, int64_t v)
{
    char tmp[24], *q = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--q = '-';
    jw_put(w, q, (size_t)(tmp + sizeof(tmp) - q));
}

static int write_record(const lw_record_desc_t *d, const void *rec, char *buf, size_t cap)
{
    const char *base = rec;
    lw_jw_t w = {buf, buf + (cap ? cap - 1 : 0), cap == 0};

    jw_put(&w, "{", 1);
    for (int i = 0; i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        const char *fv = base + f->off;
        if (i)
            jw_put(&w, ",", 1);
        jw_put(&w, "\"", 1);
        jw_put(&w, f->name, strlen(f->name));
        jw_put(&w, "\":", 2);
        switch (f->type) {
        case LW_FT_STRING: {
            char tmp[LW_TEXT_MAX + 1];
            size_t n = strnlen(fv, f->cap);
            memcpy(tmp, fv, n); /* a buffer without NUL is printed up to its end */
            tmp[n] = '\0';
            jw_quote(&w, tmp);
            break;
        }
        case LW_FT_ENUM: {
            int v;
            memcpy(&v, fv, sizeof(v));
            if (v < 0 || v >= f->nsyms)
                return -1;
            jw_quote(&w, f->syms[v]);
            break;
        }
        case LW_FT_LONG:
        case LW_FT_OPT_LONG:
        case LW_FT_INT:
        case LW_FT_OPT_INT: {
            bool has = true;
            if (f->type == LW_FT_OPT_LONG || f->type == LW_FT_OPT_INT)
                memcpy(&has, base + f->has_off, sizeof(has));
            if (!has) {
                jw_put(&w, "null", 4);
                break;
            }
            int64_t v;
            if (f->type == LW_FT_LONG || f->type == LW_FT_OPT_LONG) {
                memcpy(&v, fv, sizeof(v));
            } else {
                int32_t v32;
                memcpy(&v32, fv, sizeof(v32));
                v = v32;
            }
            jw_int(&w, v);
            break;
        }
        }
    }
    jw_put(&w, "}", 1);
    if (w.overflow)
        return -1;
    *w.p = '\0';
    return (int)(w.p - buf);
}

int lw_event_to_json(const lw_event_t *ev, char *buf, size_t cap)
{
    return ev && buf ? write_record(&lw_event_desc, ev, buf, cap) : -1;
}

int lw_alert_to_json(const lw_alert_t *al, char *buf, size_t cap)
{
    return al && buf ? write_record(&lw_alert_desc, al, buf, cap) : -1;
}

int lw_inquiry_to_json(const lw_inquiry_t *iq, char *buf, size_t cap)
{
    return iq && buf ? write_record(&lw_inquiry_desc, iq, buf, cap) : -1;
}

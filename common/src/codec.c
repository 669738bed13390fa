/*
 * codec.c - single-object Avro encoding of loan events and alerts.
 *
 * Two paths produce the same bytes and values:
 *  - the fast path: a hand-written, bounds-checked Avro binary writer and
 *    reader driven by the field tables of codec_desc.c, used whenever the
 *    writer schema is the current one (the common case; no allocation);
 *  - the Avro C path for every other known version: a bounds-checking walk
 *    of the datum against the writer schema (so Avro C never sees a length
 *    it would trust blindly), avro_value_read() into a generic value of the
 *    writer schema, and avro_resolved_reader over it towards the current
 *    reader schema. All Avro C objects are made once, in lw_codec_new().
 *
 * Avro C 1.11's resolved reader refuses a reader field missing from the
 * writer ("Reader field X doesn't appear in writer") instead of using its
 * default, so each version resolves against the current schema projected
 * onto the writer's fields, and the codec fills the defaults itself.
 */
#include "codec_int.h"

#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lw_codec_version {
    const char *path;
    lw_record_kind_t kind;
    uint64_t fp;
    unsigned char fp_le[8];
    bool current;
    avro_schema_t wschema;
    avro_value_iface_t *wiface;
    avro_value_t wval;
    avro_schema_t pschema; /* current schema projected onto the writer's fields */
    avro_value_iface_t *riface;
    avro_value_t rval;
    int ridx[LW_MAX_FIELDS]; /* table field -> index in rval, -1: use default */
    int widx[LW_MAX_FIELDS]; /* table field -> index in the writer record, -1: absent */
} lw_codec_version_t;

struct lw_codec_s {
    lw_codec_version_t *v;
    size_t nv;
    lw_codec_version_t *current[LW_RECORD__CNT];
    avro_reader_t reader;
    avro_writer_t writer;
};

static void lw_seterr(char *errstr, size_t size, const char *fmt, ...)
{
    va_list ap;
    if (!errstr || !size)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

/* ---- Embedded schemas ---------------------------------------------------- */

const char *lw_schema_embedded(size_t i, const char **json)
{
    for (size_t k = 0; lw_schema_files[k].path; k++) {
        if (k == i) {
            if (json)
                *json = lw_schema_files[k].json;
            return lw_schema_files[k].path;
        }
    }
    return NULL;
}

const char *lw_schema_current(lw_record_kind_t kind)
{
    const char *want = kind == LW_RECORD_ALERT     ? LW_SCHEMA_ALERT_CURRENT
                       : kind == LW_RECORD_INQUIRY ? LW_SCHEMA_INQUIRY_CURRENT
                                                   : LW_SCHEMA_EVENT_CURRENT;
    for (size_t k = 0; lw_schema_files[k].path; k++)
        if (!strcmp(lw_schema_files[k].path, want))
            return lw_schema_files[k].json;
    return NULL;
}

/* ---- UTF-8 ----------------------------------------------------------------- */

/* Ids and names are ASCII: eight bytes at a time while no byte is zero or
 * has its high bit set (the classic "has a zero byte" test on the word). */
static inline bool ascii8(const unsigned char *s)
{
    uint64_t w;
    memcpy(&w, s, 8);
    const uint64_t lo = 0x0101010101010101u, hi = 0x8080808080808080u;
    return !(((w - lo) & ~w & hi) | (w & hi));
}

bool lw_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8 && ascii8(s + i)) {
            i += 8;
            continue;
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            if (c == 0)
                return false;
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += k + 1;
    }
    return true;
}

/* ---- Fast path: writer ----------------------------------------------------- */

static inline unsigned char *put_long(unsigned char *p, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? ~(uint64_t)0 : 0);
    while (z > 0x7f) {
        *p++ = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    return p;
}

/* strnlen() for the short strings of a record, inline: a call per string
 * cost more than the loop. Eight bytes at a time while they fit in cap. */
static inline size_t lw_short_strnlen(const char *s, size_t cap)
{
    size_t i = 0;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    for (; cap - i >= 8; i += 8) {
        uint64_t w, z;
        memcpy(&w, s + i, 8);
        /* The lowest flagged byte is exactly the first NUL. */
        if ((z = (w - ones) & ~w & high) != 0)
            return i + ((size_t)__builtin_ctzll(z) >> 3);
    }
#endif
    while (i < cap && s[i])
        i++;
    return i;
}

static lw_err_t fast_encode(const lw_record_desc_t *d, const unsigned char fp_le[8],
                            const void *rec, unsigned char *buf, size_t cap, size_t *out_len)
{
    const char *base = rec;
    unsigned char *p = buf, *end = buf + cap;

    if (cap < LW_SO_HEADER_LEN)
        return LW_ERR_INVALID_ARG;
    *p++ = LW_SO_MAGIC0;
    *p++ = LW_SO_MAGIC1;
    memcpy(p, fp_le, 8);
    p += 8;
    for (int i = 0; i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        const char *fv = base + f->off;
        /* 11 bytes: a varint plus a union index, the most any non-string needs. */
        if (end - p < 11)
            return LW_ERR_INVALID_ARG;
        switch (f->type) {
        case LW_FT_STRING: {
            size_t n = lw_short_strnlen(fv, f->cap);
            if (n == f->cap) /* no NUL: not a string we can trust */
                return LW_ERR_INVALID_ARG;
            p = put_long(p, (int64_t)n);
            if ((size_t)(end - p) < n)
                return LW_ERR_INVALID_ARG;
            memcpy(p, fv, n);
            p += n;
            break;
        }
        case LW_FT_LONG: {
            int64_t v = 0;
            memcpy(&v, fv, sizeof(v));
            p = put_long(p, v);
            break;
        }
        case LW_FT_INT: {
            int32_t v = 0;
            memcpy(&v, fv, sizeof(v));
            p = put_long(p, v);
            break;
        }
        case LW_FT_ENUM: {
            int v;
            memcpy(&v, fv, sizeof(v));
            if (v < 0 || v >= f->nsyms)
                return LW_ERR_INVALID_ARG;
            p = put_long(p, v);
            break;
        }
        case LW_FT_OPT_LONG:
        case LW_FT_OPT_INT: {
            bool has;
            memcpy(&has, base + f->has_off, sizeof(has));
            if (!has) {
                *p++ = 0; /* branch 0: null */
            } else {
                *p++ = 2; /* branch 1 */
                if (f->type == LW_FT_OPT_LONG) {
                    int64_t v = 0;
                    memcpy(&v, fv, sizeof(v));
                    p = put_long(p, v);
                } else {
                    int32_t v = 0;
                    memcpy(&v, fv, sizeof(v));
                    p = put_long(p, v);
                }
            }
            break;
        }
        }
    }
    *out_len = (size_t)(p - buf);
    return LW_OK;
}

/* A LoanEvent, the record produced per event, written field by field in
 * schema order without the table walk (about half the instructions of
 * fast_encode()). Needs cap >= LW_CODEC_MAX_EVENT, which bounds every event,
 * so only the strings' NULs and the enums need checking. The order here must
 * match lw_event_fields (codec_desc.c): test_codec compares its bytes with
 * Avro C's generic writer for every event type and extreme values. */
static inline unsigned char *put_str(unsigned char *p, const char *s, size_t cap)
{
    size_t n = lw_short_strnlen(s, cap);
    if (n == cap)
        return NULL;
    p = put_long(p, (int64_t)n);
    memcpy(p, s, n);
    return p + n;
}

static lw_err_t fast_encode_event(const unsigned char fp_le[8], const lw_event_t *ev,
                                  unsigned char *buf, size_t *out_len)
{
    unsigned char *p = buf;

    if ((unsigned)ev->event_type >= LW_EVENT__CNT || (unsigned)ev->product >= LW_PRODUCT__CNT)
        return LW_ERR_INVALID_ARG;
    *p++ = LW_SO_MAGIC0;
    *p++ = LW_SO_MAGIC1;
    memcpy(p, fp_le, 8);
    p += 8;
#define LW_PUT_STR(f)                                                                              \
    if (!(p = put_str(p, ev->f, sizeof ev->f)))                                                    \
    return LW_ERR_INVALID_ARG
    LW_PUT_STR(event_id);
    p = put_long(p, ev->event_type);
    LW_PUT_STR(platform_id);
    LW_PUT_STR(lender_id);
    LW_PUT_STR(borrower_id);
    LW_PUT_STR(loan_id);
    p = put_long(p, ev->product);
    p = put_long(p, ev->sequence);
    p = put_long(p, ev->occurred_at);
    p = put_long(p, ev->amount_fen);
    p = put_long(p, ev->outstanding_fen);
    p = put_long(p, ev->credit_limit_fen);
    p = put_long(p, ev->days_past_due);
    p = put_long(p, ev->past_due_fen);
    LW_PUT_STR(currency);
#undef LW_PUT_STR
    *p++ = ev->has_annual_income ? 2 : 0; /* union branch 1 or 0 (null) */
    if (ev->has_annual_income)
        p = put_long(p, ev->annual_income_fen);
    *p++ = ev->has_term_months ? 2 : 0;
    if (ev->has_term_months)
        p = put_long(p, ev->term_months);
    *out_len = (size_t)(p - buf);
    return LW_OK;
}

/* ---- Fast path: reader ----------------------------------------------------- */

typedef struct lw_rd {
    const unsigned char *p, *start, *end;
    const char *field; /* for messages */
    char *errstr;
    size_t errstr_size;
} lw_rd_t;

static lw_err_t rd_fail(lw_rd_t *r, lw_err_t err, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (r->field)
        lw_seterr(r->errstr, r->errstr_size, "field '%s' (datum byte %td): %s", r->field,
                  r->p - r->start, msg);
    else
        lw_seterr(r->errstr, r->errstr_size, "datum byte %td: %s", r->p - r->start, msg);
    return err;
}

static inline lw_err_t rd_long(lw_rd_t *r, int64_t *out)
{
    uint64_t v = 0;
    const unsigned char *p = r->p;
    for (int i = 0;; i++) {
        if (p >= r->end)
            return rd_fail(r, LW_ERR_TRUNCATED, "datum ends inside a varint");
        unsigned char b = *p++;
        if (i == 9 && b > 1) /* the 10th byte holds bit 63 and nothing more */
            return rd_fail(r, LW_ERR_PARSE, "varint longer than 10 bytes or over 64 bits");
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80))
            break;
    }
    r->p = p;
    *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
    return LW_OK;
}

static inline lw_err_t rd_int(lw_rd_t *r, int32_t *out)
{
    int64_t v = 0;
    lw_err_t err = rd_long(r, &v);
    if (err)
        return err;
    if (v < INT32_MIN || v > INT32_MAX)
        return rd_fail(r, LW_ERR_PARSE, "int value %" PRId64 " out of 32-bit range", v);
    *out = (int32_t)v;
    return LW_OK;
}

/* Copies a decoded string into a char[cap]: too long is a validation error
 * (never truncated), NUL bytes and bad UTF-8 are refused. */
static lw_err_t copy_string(lw_rd_t *r, const unsigned char *s, size_t n, char *dst, size_t cap)
{
    if (n >= cap)
        return rd_fail(r, LW_ERR_VALIDATION, "string of %zu bytes exceeds the maximum of %zu", n,
                       cap - 1);
    if (!lw_utf8_valid(s, n))
        return rd_fail(r, LW_ERR_VALIDATION, "string is not valid UTF-8 or contains NUL");
    memcpy(dst, s, n);
    dst[n] = '\0';
    return LW_OK;
}

static lw_err_t fast_decode(const lw_record_desc_t *d, lw_rd_t *r, void *rec)
{
    char *base = rec;
    lw_err_t err;

    for (int i = 0; i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        char *fv = base + f->off;
        r->field = f->name;
        switch (f->type) {
        case LW_FT_STRING: {
            int64_t n = 0;
            if ((err = rd_long(r, &n)))
                return err;
            if (n < 0)
                return rd_fail(r, LW_ERR_PARSE, "negative string length %" PRId64, n);
            if (n > r->end - r->p)
                return rd_fail(r, LW_ERR_TRUNCATED,
                               "string of %" PRId64 " bytes runs past the end (%td left)", n,
                               r->end - r->p);
            if ((err = copy_string(r, r->p, (size_t)n, fv, f->cap)))
                return err;
            r->p += n;
            break;
        }
        case LW_FT_LONG: {
            int64_t v = 0;
            if ((err = rd_long(r, &v)))
                return err;
            memcpy(fv, &v, sizeof(v));
            break;
        }
        case LW_FT_INT: {
            int32_t v = 0;
            if ((err = rd_int(r, &v)))
                return err;
            memcpy(fv, &v, sizeof(v));
            break;
        }
        case LW_FT_ENUM: {
            int64_t v = 0;
            if ((err = rd_long(r, &v)))
                return err;
            if (v < 0 || v >= f->nsyms)
                return rd_fail(r, LW_ERR_PARSE, "enum index %" PRId64 " out of range (%d symbols)",
                               v, f->nsyms);
            int e = (int)v;
            memcpy(fv, &e, sizeof(e));
            break;
        }
        case LW_FT_OPT_LONG:
        case LW_FT_OPT_INT: {
            int64_t b = 0;
            bool has;
            if ((err = rd_long(r, &b)))
                return err;
            if (b != 0 && b != 1)
                return rd_fail(r, LW_ERR_PARSE, "union index %" PRId64 " out of range (2 branches)",
                               b);
            has = b == 1;
            memcpy(base + f->has_off, &has, sizeof(has));
            if (has && f->type == LW_FT_OPT_LONG) {
                int64_t v = 0;
                if ((err = rd_long(r, &v)))
                    return err;
                memcpy(fv, &v, sizeof(v));
            } else if (has) {
                int32_t v = 0;
                if ((err = rd_int(r, &v)))
                    return err;
                memcpy(fv, &v, sizeof(v));
            }
            break;
        }
        }
    }
    r->field = NULL;
    return LW_OK;
}

/* ---- Avro C path: bounds-checking walk of a datum against its schema ------- */

#define LW_WALK_MAX_DEPTH 32
#define LW_WALK_MAX_ITEMS 1000000

static lw_err_t walk(lw_rd_t *r, avro_schema_t s, int depth)
{
    lw_err_t err;
    int64_t v = 0;

    if (depth > LW_WALK_MAX_DEPTH)
        return rd_fail(r, LW_ERR_PARSE, "datum nested too deeply");
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return LW_OK;
    case AVRO_BOOLEAN:
        if (r->p >= r->end)
            return rd_fail(r, LW_ERR_TRUNCATED, "datum ends inside a boolean");
        if (*r->p > 1)
            return rd_fail(r, LW_ERR_PARSE, "boolean byte %u is neither 0 nor 1", *r->p);
        r->p++;
        return LW_OK;
    case AVRO_INT32: {
        int32_t i;
        return rd_int(r, &i);
    }
    case AVRO_INT64:
        return rd_long(r, &v);
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
        int n = avro_typeof(s) == AVRO_FLOAT ? 4 : 8;
        if (r->end - r->p < n)
            return rd_fail(r, LW_ERR_TRUNCATED, "datum ends inside a floating-point value");
        r->p += n;
        return LW_OK;
    }
    case AVRO_STRING:
    case AVRO_BYTES:
        if ((err = rd_long(r, &v)))
            return err;
        if (v < 0)
            return rd_fail(r, LW_ERR_PARSE, "negative length %" PRId64, v);
        if (v > r->end - r->p)
            return rd_fail(r, LW_ERR_TRUNCATED, "length %" PRId64 " runs past the end (%td left)",
                           v, r->end - r->p);
        r->p += v;
        return LW_OK;
    case AVRO_FIXED: {
        int64_t n = avro_schema_fixed_size(s);
        if (n > r->end - r->p)
            return rd_fail(r, LW_ERR_TRUNCATED, "datum ends inside a fixed");
        r->p += n;
        return LW_OK;
    }
    case AVRO_ENUM:
        if ((err = rd_long(r, &v)))
            return err;
        if (v < 0 || v >= avro_schema_enum_number_of_symbols(s))
            return rd_fail(r, LW_ERR_PARSE, "enum index %" PRId64 " out of range (%d symbols)", v,
                           avro_schema_enum_number_of_symbols(s));
        return LW_OK;
    case AVRO_UNION:
        if ((err = rd_long(r, &v)))
            return err;
        if (v < 0 || (size_t)v >= avro_schema_union_size(s))
            return rd_fail(r, LW_ERR_PARSE, "union index %" PRId64 " out of range (%zu branches)",
                           v, avro_schema_union_size(s));
        return walk(r, avro_schema_union_branch(s, (int)v), depth + 1);
    case AVRO_RECORD: {
        size_t n = avro_schema_record_size(s);
        for (size_t i = 0; i < n; i++) {
            if (depth == 0)
                r->field = avro_schema_record_field_name(s, (int)i);
            if ((err = walk(r, avro_schema_record_field_get_by_index(s, (int)i), depth + 1)))
                return err;
        }
        if (depth == 0)
            r->field = NULL;
        return LW_OK;
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int64_t total = 0;
        for (;;) {
            if ((err = rd_long(r, &v)))
                return err;
            if (v == 0)
                return LW_OK;
            if (v < 0) {
                int64_t bytes = 0;
                if (v == INT64_MIN)
                    return rd_fail(r, LW_ERR_PARSE, "bad block count");
                v = -v;
                if ((err = rd_long(r, &bytes)))
                    return err;
                if (bytes < 0)
                    return rd_fail(r, LW_ERR_PARSE, "negative block size");
            }
            total += v;
            if (total > LW_WALK_MAX_ITEMS)
                return rd_fail(r, LW_ERR_PARSE, "more than %d items", LW_WALK_MAX_ITEMS);
            for (int64_t i = 0; i < v; i++) {
                if (avro_typeof(s) == AVRO_MAP) { /* the key, a string */
                    int64_t klen = 0;
                    if ((err = rd_long(r, &klen)))
                        return err;
                    if (klen < 0 || klen > r->end - r->p)
                        return rd_fail(r, LW_ERR_PARSE, "bad map key length %" PRId64, klen);
                    r->p += klen;
                }
                avro_schema_t item = avro_typeof(s) == AVRO_MAP ? avro_schema_map_values(s)
                                                                : avro_schema_array_items(s);
                if ((err = walk(r, item, depth + 1)))
                    return err;
            }
        }
    }
    case AVRO_LINK:
        return walk(r, avro_schema_link_target(s), depth + 1);
    default:
        return rd_fail(r, LW_ERR_SCHEMA, "unsupported schema type");
    }
}

/* ---- Avro C path: values -------------------------------------------------- */

static lw_err_t generic_extract(lw_codec_version_t *ver, const lw_record_desc_t *d, lw_rd_t *r,
                                void *rec)
{
    char *base = rec;
    lw_err_t err;

    for (int i = 0; i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        char *fv = base + f->off;
        avro_value_t fval;
        r->field = f->name;
        if (ver->ridx[i] < 0) { /* not in the writer's schema: the reader default */
            if (f->type == LW_FT_STRING) {
                if (!f->def)
                    return rd_fail(r, LW_ERR_SCHEMA,
                                   "writer lacks the field and it has no default");
                snprintf(fv, f->cap, "%s", f->def);
            } else if (f->type == LW_FT_OPT_LONG || f->type == LW_FT_OPT_INT) {
                bool has = false;
                memcpy(base + f->has_off, &has, sizeof(has));
            } else {
                return rd_fail(r, LW_ERR_SCHEMA, "writer lacks the field and it has no default");
            }
            continue;
        }
        if (avro_value_get_by_index(&ver->rval, (size_t)ver->ridx[i], &fval, NULL))
            return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
        switch (f->type) {
        case LW_FT_STRING: {
            const char *s = NULL;
            size_t size = 0;
            if (avro_value_get_string(&fval, &s, &size) || !s || !size)
                return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
            if ((err = copy_string(r, (const unsigned char *)s, size - 1, fv, f->cap)))
                return err;
            break;
        }
        case LW_FT_LONG: {
            int64_t v = 0;
            if (avro_value_get_long(&fval, &v))
                return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
            memcpy(fv, &v, sizeof(v));
            break;
        }
        case LW_FT_INT: {
            int32_t v = 0;
            if (avro_value_get_int(&fval, &v))
                return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
            memcpy(fv, &v, sizeof(v));
            break;
        }
        case LW_FT_ENUM: {
            int v;
            if (avro_value_get_enum(&fval, &v))
                return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
            if (v < 0 || v >= f->nsyms)
                return rd_fail(r, LW_ERR_VALIDATION, "enum symbol %d unknown to this reader", v);
            memcpy(fv, &v, sizeof(v));
            break;
        }
        case LW_FT_OPT_LONG:
        case LW_FT_OPT_INT: {
            int disc = -1;
            avro_value_t branch;
            bool has;
            if (avro_value_get_discriminant(&fval, &disc) ||
                avro_value_get_current_branch(&fval, &branch))
                return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
            has = disc == 1;
            memcpy(base + f->has_off, &has, sizeof(has));
            if (has && f->type == LW_FT_OPT_LONG) {
                int64_t v = 0;
                if (avro_value_get_long(&branch, &v))
                    return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
                memcpy(fv, &v, sizeof(v));
            } else if (has) {
                int32_t v = 0;
                if (avro_value_get_int(&branch, &v))
                    return rd_fail(r, LW_ERR_SCHEMA, "resolver: %s", avro_strerror());
                memcpy(fv, &v, sizeof(v));
            }
            break;
        }
        }
    }
    r->field = NULL;
    return LW_OK;
}

static lw_err_t generic_decode(lw_codec_t *codec, lw_codec_version_t *ver, lw_rd_t *r, void *rec)
{
    const lw_record_desc_t *d = lw_record_desc(ver->kind);
    const unsigned char *datum = r->p;
    lw_err_t err;

    if ((err = walk(r, ver->wschema, 0)))
        return err;
    if (r->p != r->end)
        return rd_fail(r, LW_ERR_TRAILING_BYTES, "%td bytes after the end of the datum",
                       r->end - r->p);
    avro_reader_memory_set_source(codec->reader, (const char *)datum, (int64_t)(r->end - datum));
    if (avro_value_read(codec->reader, &ver->wval))
        return rd_fail(r, LW_ERR_PARSE, "Avro C could not read the datum: %s", avro_strerror());
    return generic_extract(ver, d, r, rec);
}

static lw_err_t generic_fill(lw_codec_version_t *ver, const lw_record_desc_t *d, const void *rec,
                             char *errstr, size_t errstr_size)
{
    const char *base = rec;
    avro_value_t *w = &ver->wval;

    for (int i = 0; i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        const char *fv = base + f->off;
        avro_value_t fval, branch;
        int rc = 0;
        if (ver->widx[i] < 0)
            continue; /* this version has no such field */
        if (avro_value_get_by_index(w, (size_t)ver->widx[i], &fval, NULL)) {
            lw_seterr(errstr, errstr_size, "field '%s': %s", f->name, avro_strerror());
            return LW_ERR_SCHEMA;
        }
        switch (f->type) {
        case LW_FT_STRING:
            if (strnlen(fv, f->cap) == f->cap) {
                lw_seterr(errstr, errstr_size, "field '%s': not NUL-terminated", f->name);
                return LW_ERR_INVALID_ARG;
            }
            rc = avro_value_set_string(&fval, fv);
            break;
        case LW_FT_LONG: {
            int64_t v = 0;
            memcpy(&v, fv, sizeof(v));
            rc = avro_value_set_long(&fval, v);
            break;
        }
        case LW_FT_INT: {
            int32_t v = 0;
            memcpy(&v, fv, sizeof(v));
            rc = avro_value_set_int(&fval, v);
            break;
        }
        case LW_FT_ENUM: {
            int v;
            memcpy(&v, fv, sizeof(v));
            if (v < 0 || v >= f->nsyms) {
                lw_seterr(errstr, errstr_size, "field '%s': enum value %d out of range", f->name,
                          v);
                return LW_ERR_INVALID_ARG;
            }
            rc = avro_value_set_enum(&fval, v);
            break;
        }
        case LW_FT_OPT_LONG:
        case LW_FT_OPT_INT: {
            bool has;
            memcpy(&has, base + f->has_off, sizeof(has));
            rc = avro_value_set_branch(&fval, has ? 1 : 0, &branch);
            if (rc)
                break;
            if (!has) {
                rc = avro_value_set_null(&branch);
            } else if (f->type == LW_FT_OPT_LONG) {
                int64_t v = 0;
                memcpy(&v, fv, sizeof(v));
                rc = avro_value_set_long(&branch, v);
            } else {
                int32_t v = 0;
                memcpy(&v, fv, sizeof(v));
                rc = avro_value_set_int(&branch, v);
            }
            break;
        }
        }
        if (rc) {
            lw_seterr(errstr, errstr_size, "field '%s': %s", f->name, avro_strerror());
            return LW_ERR_SCHEMA;
        }
    }
    return LW_OK;
}

/* ---- Versions ------------------------------------------------------------- */

static lw_codec_version_t *find_version(lw_codec_t *codec, uint64_t fp)
{
    for (size_t i = 0; i < codec->nv; i++)
        if (codec->v[i].fp == fp)
            return &codec->v[i];
    return NULL;
}

const char *lw_codec_version_path(lw_codec_t *codec, uint64_t fp, lw_record_kind_t *kind)
{
    lw_codec_version_t *v = find_version(codec, fp);
    if (!v)
        return NULL;
    if (kind)
        *kind = v->kind;
    return v->path;
}

/* The Avro type a table field must have in a schema. */
static bool field_type_ok(const lw_field_desc_t *f, avro_schema_t s)
{
    switch (f->type) {
    case LW_FT_STRING:
        return is_avro_string(s);
    case LW_FT_LONG:
        return is_avro_int64(s);
    case LW_FT_INT:
        return is_avro_int32(s);
    case LW_FT_ENUM:
        if (!is_avro_enum(s) || avro_schema_enum_number_of_symbols(s) > f->nsyms)
            return false;
        /* Avro C's resolver passes enum indexes through, so every writer
         * symbol must sit where the reader has it. */
        for (int i = 0; i < avro_schema_enum_number_of_symbols(s); i++)
            if (strcmp(avro_schema_enum_get(s, i), f->syms[i]))
                return false;
        return true;
    case LW_FT_OPT_LONG:
    case LW_FT_OPT_INT:
        return is_avro_union(s) && avro_schema_union_size(s) == 2 &&
               is_avro_null(avro_schema_union_branch(s, 0)) &&
               (f->type == LW_FT_OPT_LONG ? is_avro_int64(avro_schema_union_branch(s, 1))
                                          : is_avro_int32(avro_schema_union_branch(s, 1)));
    }
    return false;
}

/* The current schema's JSON with only the fields the writer also has. */
static char *project_schema(const char *current_json, avro_schema_t wschema, char *errstr,
                            size_t errstr_size)
{
    json_error_t jerr;
    json_t *root = json_loads(current_json, 0, &jerr), *fields, *kept;
    size_t i;
    json_t *f;
    char *out;

    if (!root) {
        lw_seterr(errstr, errstr_size, "current schema: %s", jerr.text);
        return NULL;
    }
    fields = json_object_get(root, "fields");
    kept = json_array();
    json_array_foreach(fields, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (name && avro_schema_record_field_get_index(wschema, name) >= 0)
            json_array_append(kept, f);
    }
    json_object_set_new(root, "fields", kept);
    out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return out;
}

static lw_err_t version_init(lw_codec_version_t *ver, const char *json, char *errstr,
                             size_t errstr_size)
{
    const lw_record_desc_t *d = lw_record_desc(ver->kind);
    avro_schema_t ws = ver->wschema;
    char *pjson;

    /* Map the table onto the writer's fields; a writer field of a type we
     * cannot resolve is an incompatible version. */
    for (int i = 0; i < d->nfields; i++) {
        const lw_field_desc_t *f = &d->fields[i];
        int wi = avro_schema_record_field_get_index(ws, f->name);
        ver->widx[i] = wi;
        if (wi < 0) {
            if (f->type != LW_FT_OPT_LONG && f->type != LW_FT_OPT_INT && !f->def) {
                lw_seterr(errstr, errstr_size,
                          "schema %s lacks field '%s', which has no default in the current schema",
                          ver->path, f->name);
                return LW_ERR_SCHEMA;
            }
            continue;
        }
        if (!field_type_ok(f, avro_schema_record_field_get_by_index(ws, wi))) {
            lw_seterr(errstr, errstr_size, "schema %s: field '%s' has a type we cannot resolve",
                      ver->path, f->name);
            return LW_ERR_SCHEMA;
        }
    }
    if (ver->current && (int)avro_schema_record_size(ws) != d->nfields) {
        lw_seterr(errstr, errstr_size, "%s has %zu fields, codec_desc.c %d", ver->path,
                  avro_schema_record_size(ws), d->nfields);
        return LW_ERR_SCHEMA;
    }
    if (ver->current)
        for (int i = 0; i < d->nfields; i++)
            if (ver->widx[i] != i) {
                lw_seterr(errstr, errstr_size, "%s: field '%s' is not at position %d", ver->path,
                          d->fields[i].name, i);
                return LW_ERR_SCHEMA;
            }

    ver->wiface = avro_generic_class_from_schema(ws);
    if (!ver->wiface || avro_generic_value_new(ver->wiface, &ver->wval)) {
        lw_seterr(errstr, errstr_size, "%s: %s", ver->path, avro_strerror());
        return LW_ERR_SCHEMA;
    }
    pjson = project_schema(lw_schema_current(ver->kind), ws, errstr, errstr_size);
    if (!pjson)
        return LW_ERR_SCHEMA;
    if (avro_schema_from_json_length(pjson, strlen(pjson), &ver->pschema)) {
        lw_seterr(errstr, errstr_size, "%s: projected reader schema: %s", ver->path,
                  avro_strerror());
        free(pjson);
        return LW_ERR_SCHEMA;
    }
    free(pjson);
    ver->riface = avro_resolved_reader_new(ws, ver->pschema);
    if (!ver->riface || avro_resolved_reader_new_value(ver->riface, &ver->rval)) {
        lw_seterr(errstr, errstr_size, "%s cannot be resolved to the current schema: %s", ver->path,
                  avro_strerror());
        return LW_ERR_SCHEMA;
    }
    avro_resolved_reader_set_source(&ver->rval, &ver->wval);
    for (int i = 0; i < d->nfields; i++)
        ver->ridx[i] = ver->widx[i] < 0
                           ? -1
                           : avro_schema_record_field_get_index(ver->pschema, d->fields[i].name);
    (void)json;
    return LW_OK;
}

void lw_codec_destroy(lw_codec_t *codec)
{
    if (!codec)
        return;
    for (size_t i = 0; i < codec->nv; i++) {
        lw_codec_version_t *v = &codec->v[i];
        if (v->riface) {
            if (v->rval.self)
                avro_value_decref(&v->rval);
            avro_value_iface_decref(v->riface);
        }
        if (v->wiface) {
            if (v->wval.self)
                avro_value_decref(&v->wval);
            avro_value_iface_decref(v->wiface);
        }
        if (v->pschema)
            avro_schema_decref(v->pschema);
        if (v->wschema)
            avro_schema_decref(v->wschema);
    }
    free(codec->v);
    if (codec->reader)
        avro_reader_free(codec->reader);
    if (codec->writer)
        avro_writer_free(codec->writer);
    free(codec);
}

lw_codec_t *lw_codec_new(char *errstr, size_t errstr_size)
{
    lw_codec_t *codec = calloc(1, sizeof(*codec));
    size_t n = 0;
    static const char empty[1];

    if (!codec) {
        lw_seterr(errstr, errstr_size, "out of memory");
        return NULL;
    }
    while (lw_schema_files[n].path)
        n++;
    codec->v = calloc(n ? n : 1, sizeof(*codec->v));
    codec->reader = avro_reader_memory(empty, 0);
    codec->writer = avro_writer_memory(empty, 0);
    if (!codec->v || !codec->reader || !codec->writer) {
        lw_seterr(errstr, errstr_size, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const char *path = lw_schema_files[i].path, *json = lw_schema_files[i].json;
        lw_codec_version_t *ver = &codec->v[codec->nv];
        char *pcf;
        avro_schema_t s;
        const char *name;

        if (avro_schema_from_json_length(json, strlen(json), &s)) {
            lw_seterr(errstr, errstr_size, "schemas/%s: %s", path, avro_strerror());
            goto fail;
        }
        name = is_avro_record(s) ? avro_schema_name(s) : NULL;
        if (!name ||
            (strcmp(name, lw_event_desc.name) && strcmp(name, lw_alert_desc.name) &&
             strcmp(name, lw_inquiry_desc.name)) ||
            strcmp(avro_schema_namespace(s) ? avro_schema_namespace(s) : "", LW_SCHEMA_NAMESPACE)) {
            avro_schema_decref(s); /* not a record this codec handles */
            continue;
        }
        ver->path = path;
        ver->wschema = s;
        ver->kind = !strcmp(name, lw_event_desc.name)   ? LW_RECORD_LOAN_EVENT
                    : !strcmp(name, lw_alert_desc.name) ? LW_RECORD_ALERT
                                                        : LW_RECORD_INQUIRY;
        ver->current = !strchr(path, '/');
        pcf = lw_schema_canonical(json, errstr, errstr_size);
        if (!pcf)
            goto fail;
        ver->fp = lw_fingerprint64(pcf, strlen(pcf));
        free(pcf);
        for (int b = 0; b < 8; b++)
            ver->fp_le[b] = (unsigned char)(ver->fp >> (8 * b));
        codec->nv++;
        for (size_t k = 0; k + 1 < codec->nv; k++)
            if (codec->v[k].fp == ver->fp) {
                lw_seterr(errstr, errstr_size,
                          "schemas/%s and schemas/%s have the same fingerprint", codec->v[k].path,
                          path);
                goto fail;
            }
        if (ver->current) {
            if (codec->current[ver->kind]) {
                lw_seterr(errstr, errstr_size, "two current %s schemas", name);
                goto fail;
            }
            codec->current[ver->kind] = ver;
        }
        if (version_init(ver, json, errstr, errstr_size))
            goto fail;
    }
    if (!codec->current[LW_RECORD_LOAN_EVENT] || !codec->current[LW_RECORD_ALERT] ||
        !codec->current[LW_RECORD_INQUIRY]) {
        lw_seterr(errstr, errstr_size, "schemas/%s, schemas/%s or schemas/%s is missing",
                  LW_SCHEMA_EVENT_CURRENT, LW_SCHEMA_ALERT_CURRENT, LW_SCHEMA_INQUIRY_CURRENT);
        goto fail;
    }
    return codec;
fail:
    lw_codec_destroy(codec);
    return NULL;
}

/* ---- Public encode / decode ------------------------------------------------ */

lw_err_t lw_codec_encode(lw_codec_t *codec, lw_record_kind_t kind, const void *rec, void *buf,
                         size_t cap, size_t *out_len)
{
    if (!codec || !rec || !buf || !out_len || (unsigned)kind >= LW_RECORD__CNT)
        return LW_ERR_INVALID_ARG;
    if (kind == LW_RECORD_LOAN_EVENT && cap >= LW_CODEC_MAX_EVENT)
        return fast_encode_event(codec->current[kind]->fp_le, rec, buf, out_len);
    return fast_encode(lw_record_desc(kind), codec->current[kind]->fp_le, rec, buf, cap, out_len);
}

lw_err_t lw_codec_encode_event(lw_codec_t *codec, const lw_event_t *ev, void *buf, size_t cap,
                               size_t *out_len)
{
    return lw_codec_encode(codec, LW_RECORD_LOAN_EVENT, ev, buf, cap, out_len);
}

lw_err_t lw_codec_encode_alert(lw_codec_t *codec, const lw_alert_t *al, void *buf, size_t cap,
                               size_t *out_len)
{
    return lw_codec_encode(codec, LW_RECORD_ALERT, al, buf, cap, out_len);
}

lw_err_t lw_codec_encode_inquiry(lw_codec_t *codec, const lw_inquiry_t *iq, void *buf, size_t cap,
                                 size_t *out_len)
{
    return lw_codec_encode(codec, LW_RECORD_INQUIRY, iq, buf, cap, out_len);
}

lw_err_t lw_codec_encode_version(lw_codec_t *codec, const char *path, const void *rec, void *buf,
                                 size_t cap, size_t *out_len, char *errstr, size_t errstr_size)
{
    lw_codec_version_t *ver = NULL;
    lw_err_t err;

    for (size_t i = 0; codec && path && i < codec->nv; i++)
        if (!strcmp(codec->v[i].path, path))
            ver = &codec->v[i];
    if (!ver || !rec || !buf || !out_len) {
        lw_seterr(errstr, errstr_size, "no embedded schema version '%s'", path ? path : "(null)");
        return LW_ERR_INVALID_ARG;
    }
    if (cap < LW_SO_HEADER_LEN) {
        lw_seterr(errstr, errstr_size, "buffer too small");
        return LW_ERR_INVALID_ARG;
    }
    if ((err = generic_fill(ver, lw_record_desc(ver->kind), rec, errstr, errstr_size)))
        return err;
    avro_writer_memory_set_dest(codec->writer, (char *)buf + LW_SO_HEADER_LEN,
                                (int64_t)(cap - LW_SO_HEADER_LEN));
    if (avro_value_write(codec->writer, &ver->wval)) {
        lw_seterr(errstr, errstr_size, "buffer of %zu bytes too small for the record", cap);
        return LW_ERR_INVALID_ARG;
    }
    ((unsigned char *)buf)[0] = LW_SO_MAGIC0;
    ((unsigned char *)buf)[1] = LW_SO_MAGIC1;
    memcpy((unsigned char *)buf + 2, ver->fp_le, 8);
    *out_len = LW_SO_HEADER_LEN + (size_t)avro_writer_tell(codec->writer);
    return LW_OK;
}

/* Header checks shared by both decode paths. */
static lw_err_t decode_header(lw_codec_t *codec, lw_record_kind_t kind, const unsigned char *p,
                              size_t len, lw_codec_version_t **out, char *errstr,
                              size_t errstr_size)
{
    uint64_t fp = 0;
    lw_codec_version_t *ver;

    if ((len >= 1 && p[0] != LW_SO_MAGIC0) || (len >= 2 && p[1] != LW_SO_MAGIC1)) {
        lw_seterr(errstr, errstr_size,
                  "bad marker %02x %02x: not single-object Avro (expected c3 01)", p[0],
                  len >= 2 ? p[1] : 0);
        return LW_ERR_BAD_MAGIC;
    }
    if (len < LW_SO_HEADER_LEN) {
        lw_seterr(errstr, errstr_size, "record of %zu bytes is shorter than the %d-byte header",
                  len, LW_SO_HEADER_LEN);
        return LW_ERR_TRUNCATED;
    }
    for (int b = 7; b >= 0; b--)
        fp = (fp << 8) | p[2 + b];
    ver = find_version(codec, fp);
    if (!ver) {
        lw_seterr(errstr, errstr_size,
                  "unknown schema fingerprint %02x%02x%02x%02x%02x%02x%02x%02x (wire order)", p[2],
                  p[3], p[4], p[5], p[6], p[7], p[8], p[9]);
        return LW_ERR_UNKNOWN_SCHEMA;
    }
    if (ver->kind != kind) {
        lw_seterr(errstr, errstr_size, "record is a %s (schemas/%s), not a %s",
                  lw_record_desc(ver->kind)->name, ver->path, lw_record_desc(kind)->name);
        return LW_ERR_UNKNOWN_SCHEMA;
    }
    *out = ver;
    return LW_OK;
}

static lw_err_t decode_any(lw_codec_t *codec, lw_record_kind_t kind, const void *buf, size_t len,
                           void *rec, bool force_generic, char *errstr, size_t errstr_size)
{
    const unsigned char *p = buf;
    lw_codec_version_t *ver = NULL;
    lw_err_t err;
    lw_rd_t r;

    if (!codec || (!buf && len) || !rec || (unsigned)kind >= LW_RECORD__CNT) {
        lw_seterr(errstr, errstr_size, "invalid argument");
        return LW_ERR_INVALID_ARG;
    }
    memset(rec, 0, lw_record_desc(kind)->size);
    if (len == 0) {
        lw_seterr(errstr, errstr_size, "empty record");
        return LW_ERR_TRUNCATED;
    }
    if ((err = decode_header(codec, kind, p, len, &ver, errstr, errstr_size)))
        return err;
    r.start = r.p = p + LW_SO_HEADER_LEN;
    r.end = p + len;
    r.field = NULL;
    r.errstr = errstr;
    r.errstr_size = errstr_size;
    if (ver->current && !force_generic) {
        err = fast_decode(lw_record_desc(kind), &r, rec);
        if (!err && r.p != r.end)
            err = rd_fail(&r, LW_ERR_TRAILING_BYTES, "%td bytes after the end of the datum",
                          r.end - r.p);
    } else {
        err = generic_decode(codec, ver, &r, rec);
    }
    if (err)
        memset(rec, 0, lw_record_desc(kind)->size);
    return err;
}

lw_err_t lw_codec_decode(lw_codec_t *codec, lw_record_kind_t kind, const void *buf, size_t len,
                         void *rec, char *errstr, size_t errstr_size)
{
    return decode_any(codec, kind, buf, len, rec, false, errstr, errstr_size);
}

lw_err_t lw_codec_decode_generic(lw_codec_t *codec, lw_record_kind_t kind, const void *buf,
                                 size_t len, void *rec, char *errstr, size_t errstr_size)
{
    return decode_any(codec, kind, buf, len, rec, true, errstr, errstr_size);
}

lw_err_t lw_codec_decode_event(lw_codec_t *codec, const void *buf, size_t len, lw_event_t *ev,
                               char *errstr, size_t errstr_size)
{
    return decode_any(codec, LW_RECORD_LOAN_EVENT, buf, len, ev, false, errstr, errstr_size);
}

lw_err_t lw_codec_decode_alert(lw_codec_t *codec, const void *buf, size_t len, lw_alert_t *al,
                               char *errstr, size_t errstr_size)
{
    return decode_any(codec, LW_RECORD_ALERT, buf, len, al, false, errstr, errstr_size);
}

lw_err_t lw_codec_decode_inquiry(lw_codec_t *codec, const void *buf, size_t len, lw_inquiry_t *iq,
                                 char *errstr, size_t errstr_size)
{
    return decode_any(codec, LW_RECORD_INQUIRY, buf, len, iq, false, errstr, errstr_size);
}

int lw_codec_record_kind(lw_codec_t *codec, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t fp = 0;
    lw_codec_version_t *ver;

    if (!codec || !buf || len < LW_SO_HEADER_LEN || p[0] != LW_SO_MAGIC0 || p[1] != LW_SO_MAGIC1)
        return -1;
    for (int b = 7; b >= 0; b--)
        fp = (fp << 8) | p[2 + b];
    ver = find_version(codec, fp);
    return ver ? (int)ver->kind : -1;
}

/*
 * bstate.c - a borrower's state string: the bytes loanwire-exposure writes
 * to b:{<borrower_id>} and every reader decodes (consumers/README.md).
 *
 * The state string (layout version 5, consumers/README.md) is varints, so
 * a borrower with three loans fits in about 90 bytes:
 *
 *   u8 version | fence writer | fence epoch | t | 2*n_open + has history |
 *   n_open rule ids | 2*n_loans + has income | n_win | [income | t - income_at] |
 *   loans: platform id | lender id | loan_id | status + 8*product +
 *          32*(past_due > 0) + 64*(limit > 0) + 128*dpd | sequence |
 *          outstanding | [past_due] | [limit] | t - updated_at
 *   window entries: t - at | 6 bytes idh | 4 bytes lender hash
 *   (version 5) n_inq | inquiries: t - at | institution id | purpose |
 *                       6 bytes hash of the inquiry id
 *
 * Version 5 (issue 20) appends the borrower's recorded credit inquiries,
 * oldest first, after the window entries, so everything before them is
 * version 4's bytes: the fence stamp stays the varints after the version
 * byte (write.lua reads it there for every version from 3), and a version 4
 * string decodes as one with no inquiry. An inquiry costs 9-10 bytes.
 *
 * Every number is an unsigned LEB128 varint (amounts and times are validated
 * non-negative); platform and lender are ids of dict.c's shared string table.
 * A loan_id is a byte: its length, bit 7 set when the characters follow
 * packed 6 bits each (ids drawn from the base64url alphabet, as platforms'
 * ids usually are: 20 characters in 15 bytes), else the bytes as they are.
 *
 * Open alerts are named by rule id (the rule's id in lw:strings, one byte
 * for the first 127 names), not by position in the pack: editing the pack
 * (reorder, insert, remove) must not move an open alert to another rule
 * (issue 21). A borrower with no open alert pays one byte, as the version 3
 * mask did; one with some pays a byte per open rule instead of 5 bytes of
 * mask. Versions 3 and 2 are still read, their mask by the rule order of the
 * pack in force when read (the only order they can have meant, if the pack
 * was not edited since they were written).
 */
#include "state_int.h"

#include "loanwire/id.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lw_state_key(const char *borrower_id, char *buf, size_t cap)
{
    char k[LW_STATE_KEY_MAX];
    lw_borrower_key('b', borrower_id, k);
    snprintf(buf, cap, "%s", k);
}

void lw_alerts_key(const char *borrower_id, char *buf, size_t cap)
{
    char k[LW_STATE_KEY_MAX];
    lw_borrower_key('a', borrower_id, k);
    snprintf(buf, cap, "%s", k);
}

void lw_bstate_reset(lw_bstate_t *s)
{
    s->t = 0;
    s->mask = 0;
    s->n_open = 0;
    s->open_pending = false;
    s->rule_ids = NULL;
    s->n_rules = 0;
    s->fence_writer = 0;
    s->fence_epoch = 0;
    s->has_income = false;
    s->income_fen = s->income_at = 0;
    s->n_loans = 0;
    s->n_win = 0;
    s->n_inq = 0;
}

void lw_bstate_free(lw_bstate_t *s)
{
    if (!s)
        return;
    free(s->loans);
    free(s->win);
    free(s->inq);
    memset(s, 0, sizeof *s);
}

bool lw_bstate_loans_room(lw_bstate_t *s, size_t n)
{
    lw_bloan_t *nl = lw_array_grow(s->loans, &s->cap_loans, n, sizeof *nl, 4);
    return nl ? (s->loans = nl, true) : false;
}

bool lw_bstate_win_room(lw_bstate_t *s, size_t n)
{
    lw_bwin_t *nw = lw_array_grow(s->win, &s->cap_win, n, sizeof *nw, 4);
    return nw ? (s->win = nw, true) : false;
}

bool lw_bstate_inq_room(lw_bstate_t *s, size_t n)
{
    lw_binq_t *ni = lw_array_grow(s->inq, &s->cap_inq, n, sizeof *ni, 4);
    return ni ? (s->inq = ni, true) : false;
}

/* ---- Encoding --------------------------------------------------------------- */

typedef struct cur {
    const unsigned char *p, *end;
} cur_t;

static bool get_uv(cur_t *c, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->p == c->end)
            return false;
        unsigned char b = *c->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false; /* longer than 10 bytes */
}

/* A varint that must fit a non-negative int64 below max. */
static bool get_i(cur_t *c, int64_t max, int64_t *v)
{
    uint64_t u;
    if (!get_uv(c, &u) || u > (uint64_t)max)
        return false;
    *v = (int64_t)u;
    return true;
}

static bool get_le(cur_t *c, int n, uint64_t *v)
{
    if (c->end - c->p < n)
        return false;
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = (x << 8) | c->p[i];
    c->p += n;
    *v = x;
    return true;
}

static char *put_uv(char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

static char *put_le(char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++, v >>= 8)
        *p++ = (char)(v & 0xff);
    return p;
}

/* ---- Loan ids: 6 bits a character when they are base64url -------------------- */

static char *put_loan_id(char *p, const char *id)
{
    size_t n = strlen(id);
    size_t i = 0;
    while (i < n && lw_b64url_value((unsigned char)id[i]) >= 0)
        i++;
    if (i < n) { /* not base64url: as it is */
        *p++ = (char)n;
        memcpy(p, id, n);
        return p + n;
    }
    *p++ = (char)(0x80 | n);
    uint32_t acc = 0;
    int bits = 0;
    for (i = 0; i < n; i++) {
        acc = acc << 6 | (uint32_t)lw_b64url_value((unsigned char)id[i]);
        bits += 6;
        while (bits >= 8) {
            bits -= 8;
            *p++ = (char)(acc >> bits);
        }
    }
    if (bits > 0)
        *p++ = (char)(acc << (8 - bits));
    return p;
}

static bool get_loan_id(cur_t *c, char out[LW_ID_MAX + 1])
{
    if (c->p == c->end)
        return false;
    unsigned char h = *c->p++;
    size_t n = h & 0x7f;
    if (n == 0 || n > LW_ID_MAX)
        return false;
    if (!(h & 0x80)) {
        if ((size_t)(c->end - c->p) < n || memchr(c->p, 0, n))
            return false;
        memcpy(out, c->p, n);
        out[n] = '\0';
        c->p += n;
        return true;
    }
    size_t nb = (6 * n + 7) / 8;
    if ((size_t)(c->end - c->p) < nb)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < nb; i++) {
        acc = acc << 8 | c->p[i];
        bits += 8;
        while (bits >= 6 && k < n) {
            bits -= 6;
            out[k++] = lw_b64url_alphabet[(acc >> bits) & 63];
        }
    }
    out[n] = '\0';
    c->p += nb;
    return true;
}

/* A loan's first varint: status | product << 3 | these | days_past_due << 7;
 * a zero past due or limit (most loans) is not written at all. */
#define SD_PAST_DUE 32
#define SD_LIMIT    64

/* Version 5's inquiries, after the window entries. */
static lw_err_t get_inquiries(cur_t *c, lw_bstate_t *s, size_t len)
{
    int64_t ni, v, inst, purpose;
    /* an inquiry is >= 9 bytes: a corrupt count allocates little */
    if (!get_i(c, INT32_MAX, &ni) || (size_t)ni > len / 9)
        return LW_ERR_PARSE;
    if (!lw_bstate_inq_room(s, (size_t)ni))
        return LW_ERR_NOMEM;
    for (int64_t i = 0; i < ni; i++) {
        lw_binq_t *q = &s->inq[i];
        uint64_t idh;
        if (!get_i(c, s->t, &v) || !get_i(c, UINT32_MAX, &inst) || inst == 0 ||
            !get_i(c, LW_PURPOSE__CNT - 1, &purpose) || !get_le(c, 6, &idh))
            return LW_ERR_PARSE;
        q->at = s->t - v;
        q->institution = (uint32_t)inst;
        q->purpose = (uint8_t)purpose;
        q->idh = idh;
    }
    s->n_inq = (size_t)ni;
    return LW_OK;
}

lw_err_t lw_bstate_decode(lw_bstate_t *s, const void *buf, size_t len)
{
    cur_t c = {buf, (const unsigned char *)buf + len};
    int64_t writer, nl, nw, v;
    lw_bstate_reset(s);
    if (len < 1)
        return LW_ERR_PARSE;
    const int version = *c.p++;
    if ((version != LW_STATE_VERSION && version != LW_STATE_VERSION_V4 &&
         version != LW_STATE_VERSION_V3 && version != LW_STATE_VERSION_V2) ||
        !get_i(&c, UINT32_MAX, &writer) || !get_i(&c, INT64_MAX, &s->fence_epoch) ||
        !get_i(&c, LW_STATE_NUM_MAX, &s->t))
        return LW_ERR_PARSE;
    if (version >= LW_STATE_VERSION_V4) {
        /* open alerts by rule id: bound to the pack by lw_bstate_bind() */
        int64_t a, id;
        if (!get_i(&c, 2 * LW_BSTATE_OPEN_MAX + 1, &a))
            return LW_ERR_PARSE;
        s->mask = (a & 1) ? LW_MASK_HIST : 0;
        s->n_open = (size_t)(a >> 1);
        for (size_t i = 0; i < s->n_open; i++) {
            if (!get_i(&c, UINT32_MAX, &id) || id == 0)
                return LW_ERR_PARSE;
            s->open[i] = (uint32_t)id;
        }
        /* an open alert means a:{..} exists */
        if (s->n_open && !(a & 1))
            return LW_ERR_PARSE;
        s->open_pending = s->n_open > 0;
    } else if (!get_uv(&c, &s->mask)) { /* by position in the pack in force */
        return LW_ERR_PARSE;
    }
    if (!get_i(&c, INT32_MAX, &nl) || !get_i(&c, INT32_MAX, &nw))
        return LW_ERR_PARSE;
    /* a version 2 stamp named a partition of some topic: no writer can be
     * told from it, so it fences nobody (the next write stamps it anew) */
    s->fence_writer = version != LW_STATE_VERSION_V2 ? (uint32_t)writer : 0;
    if (!s->fence_writer)
        s->fence_epoch = 0;
    bool income = nl & 1;
    nl >>= 1;
    /* a loan is >= 8 bytes and an entry >= 11: a corrupt count allocates little */
    if ((size_t)(nl + nw) > len / 8)
        return LW_ERR_PARSE;
    if (!lw_bstate_loans_room(s, (size_t)nl) || !lw_bstate_win_room(s, (size_t)nw))
        return LW_ERR_NOMEM;
    if (income) {
        s->has_income = true;
        if (!get_i(&c, LW_STATE_NUM_MAX, &s->income_fen) || !get_i(&c, s->t, &v))
            return LW_ERR_PARSE;
        s->income_at = s->t - v;
    }
    for (int64_t i = 0; i < nl; i++) {
        lw_bloan_t *l = &s->loans[i];
        int64_t pl, ld, sd;
        if (!get_i(&c, UINT32_MAX, &pl) || !get_i(&c, UINT32_MAX, &ld) || pl == 0 || ld == 0)
            return LW_ERR_PARSE;
        if (!get_loan_id(&c, l->loan_id))
            return LW_ERR_PARSE;
        l->past_due_fen = l->credit_limit_fen = 0;
        if (!get_i(&c, (int64_t)INT32_MAX << 7 | 127, &sd) || (sd & 7) >= LW_LOAN_STATUS__CNT ||
            ((sd >> 3) & 3) >= LW_PRODUCT__CNT || !get_i(&c, LW_STATE_NUM_MAX, &l->sequence) ||
            !get_i(&c, LW_STATE_NUM_MAX, &l->outstanding_fen) ||
            ((sd & SD_PAST_DUE) && !get_i(&c, LW_STATE_NUM_MAX, &l->past_due_fen)) ||
            ((sd & SD_LIMIT) && !get_i(&c, LW_STATE_NUM_MAX, &l->credit_limit_fen)) ||
            !get_i(&c, s->t, &v))
            return LW_ERR_PARSE;
        l->platform = (uint32_t)pl;
        l->lender = (uint32_t)ld;
        l->status = (lw_loan_status_t)(sd & 7);
        l->product = (lw_product_t)((sd >> 3) & 3);
        l->days_past_due = (int32_t)(sd >> 7);
        l->updated_at = s->t - v;
    }
    for (int64_t i = 0; i < nw; i++) {
        lw_bwin_t *w = &s->win[i];
        uint64_t idh, lh;
        if (!get_i(&c, s->t, &v) || !get_le(&c, 6, &idh) || !get_le(&c, 4, &lh))
            return LW_ERR_PARSE;
        w->at = s->t - v;
        w->idh = idh;
        w->lh = (uint32_t)lh;
    }
    s->n_loans = (size_t)nl;
    s->n_win = (size_t)nw;
    if (version >= LW_STATE_VERSION) {
        lw_err_t e = get_inquiries(&c, s, len);
        if (e != LW_OK)
            return e;
    }
    if (c.p != c.end)
        return LW_ERR_PARSE;
    return LW_OK;
}

void lw_bstate_bind(lw_bstate_t *s, const uint32_t *rule_ids, size_t n_rules)
{
    if (n_rules > LW_RULES_MAX_BITS)
        n_rules = LW_RULES_MAX_BITS;
    if (s->open_pending) {
        size_t dormant = 0;
        for (size_t i = 0; i < s->n_open; i++) {
            size_t r = 0;
            while (r < n_rules && rule_ids[r] != s->open[i])
                r++;
            if (r < n_rules)
                s->mask |= (uint64_t)1 << r;
            else
                s->open[dormant++] = s->open[i];
        }
        s->n_open = dormant;
        s->open_pending = false;
    } else {
        /* a version 3/2 mask (or a fresh state): bits by position */
        s->mask &= LW_MASK_HIST | (((uint64_t)1 << n_rules) - 1);
    }
    s->rule_ids = rule_ids;
    s->n_rules = n_rules;
}

/* The open rule ids to write: dormant ones and the mask's, at most
 * LW_BSTATE_OPEN_MAX (a state with more dormant ids than that is absurd:
 * the oldest dormant ones give way), ascending and each once, so the bytes
 * do not depend on the order of the pack (a replay under a reordered pack
 * changes no byte). */
static size_t open_ids(const lw_bstate_t *s, uint32_t ids[LW_BSTATE_OPEN_MAX])
{
    size_t n = 0, nbound = 0;
    uint32_t bound[LW_BSTATE_OPEN_MAX];
    if (s->rule_ids)
        for (size_t r = 0; r < s->n_rules; r++)
            if (s->mask & ((uint64_t)1 << r))
                bound[nbound++] = s->rule_ids[r];
    size_t room = LW_BSTATE_OPEN_MAX - nbound;
    size_t skip = s->n_open > room ? s->n_open - room : 0;
    for (size_t i = skip; i < s->n_open; i++)
        ids[n++] = s->open[i];
    for (size_t i = 0; i < nbound; i++)
        ids[n++] = bound[i];
    /* insertion sort of at most 64, dropping repeats */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = ids[i];
        size_t j = m;
        while (j > 0 && ids[j - 1] > v)
            j--;
        if (j > 0 && ids[j - 1] == v)
            continue;
        memmove(&ids[j + 1], &ids[j], (m - j) * sizeof *ids);
        ids[j] = v;
        m++;
    }
    return m;
}

bool lw_bstate_encode(const lw_bstate_t *s, lw_sbuf_t *out)
{
    uint32_t ids[LW_BSTATE_OPEN_MAX];
    size_t nids = open_ids(s, ids);
    /* 8 header varints and the open ids; a loan: 7 varints + 1 + 64; an entry 10 + 10 */
    if (!lw_sbuf_reserve(out, 1 + 9 * 10 + 20 + nids * 5 + s->n_loans * (7 * 10 + 65) +
                                  s->n_win * 20 + s->n_inq * 30))
        return false;
    char *p = out->p + out->len;
    *p++ = LW_STATE_VERSION;
    p = put_uv(p, s->fence_writer);
    p = put_uv(p, (uint64_t)s->fence_epoch);
    p = put_uv(p, (uint64_t)s->t);
    /* "has history" is kept with an open alert (a:{..} then exists) */
    bool hist = (s->mask & LW_MASK_HIST) || nids > 0;
    p = put_uv(p, (uint64_t)nids << 1 | (hist ? 1 : 0));
    for (size_t i = 0; i < nids; i++)
        p = put_uv(p, ids[i]);
    p = put_uv(p, (uint64_t)s->n_loans << 1 | (s->has_income ? 1 : 0));
    p = put_uv(p, s->n_win);
    if (s->has_income) {
        p = put_uv(p, (uint64_t)s->income_fen);
        p = put_uv(p, (uint64_t)(s->t - s->income_at));
    }
    for (size_t i = 0; i < s->n_loans; i++) {
        const lw_bloan_t *l = &s->loans[i];
        p = put_uv(p, l->platform);
        p = put_uv(p, l->lender);
        p = put_loan_id(p, l->loan_id);
        p = put_uv(p, (uint64_t)l->days_past_due << 7 | (l->credit_limit_fen ? SD_LIMIT : 0) |
                          (l->past_due_fen ? SD_PAST_DUE : 0) | (uint64_t)l->product << 3 |
                          l->status);
        p = put_uv(p, (uint64_t)l->sequence);
        p = put_uv(p, (uint64_t)l->outstanding_fen);
        if (l->past_due_fen)
            p = put_uv(p, (uint64_t)l->past_due_fen);
        if (l->credit_limit_fen)
            p = put_uv(p, (uint64_t)l->credit_limit_fen);
        p = put_uv(p, (uint64_t)(s->t - l->updated_at));
    }
    for (size_t i = 0; i < s->n_win; i++) {
        p = put_uv(p, (uint64_t)(s->t - s->win[i].at));
        p = put_le(p, s->win[i].idh, 6);
        p = put_le(p, s->win[i].lh, 4);
    }
    p = put_uv(p, s->n_inq);
    for (size_t i = 0; i < s->n_inq; i++) {
        p = put_uv(p, (uint64_t)(s->t - s->inq[i].at));
        p = put_uv(p, s->inq[i].institution);
        p = put_uv(p, s->inq[i].purpose);
        p = put_le(p, s->inq[i].idh, 6);
    }
    out->len = (size_t)(p - out->p);
    return true;
}

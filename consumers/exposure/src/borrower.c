/*
 * borrower.c - one borrower's exposure: its state string and the rules.
 *
 * The consumer that owns a partition is the only writer of its borrowers
 * (partition epochs fence the others), so it reads a borrower (MGET),
 * applies events here in C and writes the result back. Redis stores and
 * publishes; it decides nothing. That keeps Redis at one read and one write
 * per borrower and batch, instead of a Lua interpreter per event.
 *
 * The state string (layout version 3, consumers/README.md) is varints, so
 * a borrower with three loans fits in about 90 bytes:
 *
 *   u8 version | fence writer | fence epoch | t | open-alert mask |
 *   2*n_loans + has income | n_win | [income | t - income_at] |
 *   loans: platform id | lender id | loan_id | status + 8*product +
 *          32*(past_due > 0) + 64*(limit > 0) + 128*dpd | sequence |
 *          outstanding | [past_due] | [limit] | t - updated_at
 *   window entries: t - at | 6 bytes idh | 4 bytes lender hash
 *
 * Every number is an unsigned LEB128 varint (amounts and times are validated
 * non-negative); platform and lender are ids of dict.c's shared string table.
 * A loan_id is a byte: its length, bit 7 set when the characters follow
 * packed 6 bits each (ids drawn from the base64url alphabet, as platforms'
 * ids usually are: 20 characters in 15 bytes), else the bytes as they are.
 */
#include "exposure_int.h"

#include "loanwire/id.h"

/* SHA1() in OpenSSL 3 looks the digest up in the provider tables on every
 * call (~600 ns); the low-level SHA1_Init/Update/Final, deprecated but part
 * of every 3.x, hash a short key in ~60 ns. Window entries and alert ids
 * hash once per event that opens a loan or fires a rule. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Buffers -------------------------------------------------------------- */

bool lw_sbuf_reserve(lw_sbuf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return true;
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->len + more)
        nc *= 2;
    char *np = realloc(b->p, nc);
    if (!np)
        return false;
    b->p = np;
    b->cap = nc;
    return true;
}

void *lw_array_grow(void *arr, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap && arr)
        return arr;
    size_t nc = *cap ? *cap * 2 : first; /* never NULL for success, even for 0 elements */
    while (nc < need)
        nc *= 2;
    void *na = realloc(arr, nc * elem);
    if (na)
        *cap = nc;
    return na;
}

void lw_sbuf_free(lw_sbuf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void lw_bstate_reset(lw_bstate_t *s)
{
    s->t = 0;
    s->mask = 0;
    s->fence_writer = 0;
    s->fence_epoch = 0;
    s->has_income = false;
    s->income_fen = s->income_at = 0;
    s->n_loans = 0;
    s->n_win = 0;
}

void lw_bstate_free(lw_bstate_t *s)
{
    if (!s)
        return;
    free(s->loans);
    free(s->win);
    memset(s, 0, sizeof *s);
}

static bool loans_room(lw_bstate_t *s, size_t n)
{
    lw_bloan_t *nl = lw_array_grow(s->loans, &s->cap_loans, n, sizeof *nl, 4);
    return nl ? (s->loans = nl, true) : false;
}

static bool win_room(lw_bstate_t *s, size_t n)
{
    lw_bwin_t *nw = lw_array_grow(s->win, &s->cap_win, n, sizeof *nw, 4);
    return nw ? (s->win = nw, true) : false;
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

lw_err_t lw_bstate_decode(lw_bstate_t *s, const void *buf, size_t len)
{
    cur_t c = {buf, (const unsigned char *)buf + len};
    int64_t writer, nl, nw, v;
    lw_bstate_reset(s);
    if (len < 1)
        return LW_ERR_PARSE;
    const int version = *c.p++;
    if ((version != LW_STATE_VERSION && version != LW_STATE_VERSION_V2) ||
        !get_i(&c, UINT32_MAX, &writer) || !get_i(&c, INT64_MAX, &s->fence_epoch) ||
        !get_i(&c, LW_STATE_NUM_MAX, &s->t) || !get_uv(&c, &s->mask) ||
        !get_i(&c, INT32_MAX, &nl) || !get_i(&c, INT32_MAX, &nw))
        return LW_ERR_PARSE;
    /* a version 2 stamp named a partition of some topic: no writer can be
     * told from it, so it fences nobody (the next write stamps it anew) */
    s->fence_writer = version == LW_STATE_VERSION ? (uint32_t)writer : 0;
    if (!s->fence_writer)
        s->fence_epoch = 0;
    bool income = nl & 1;
    nl >>= 1;
    /* a loan is >= 8 bytes and an entry >= 11: a corrupt count allocates little */
    if ((size_t)(nl + nw) > len / 8)
        return LW_ERR_PARSE;
    if (!loans_room(s, (size_t)nl) || !win_room(s, (size_t)nw))
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
    if (c.p != c.end)
        return LW_ERR_PARSE;
    s->n_loans = (size_t)nl;
    s->n_win = (size_t)nw;
    return LW_OK;
}

bool lw_bstate_encode(const lw_bstate_t *s, lw_sbuf_t *out)
{
    /* 8 header varints; a loan: 7 varints + 1 + 64; an entry 10 + 10 */
    if (!lw_sbuf_reserve(out, 1 + 8 * 10 + 20 + s->n_loans * (7 * 10 + 65) + s->n_win * 20))
        return false;
    char *p = out->p + out->len;
    *p++ = LW_STATE_VERSION;
    p = put_uv(p, s->fence_writer);
    p = put_uv(p, (uint64_t)s->fence_epoch);
    p = put_uv(p, (uint64_t)s->t);
    p = put_uv(p, s->mask);
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
    out->len = (size_t)(p - out->p);
    return true;
}

/* ---- Alerts ------------------------------------------------------------------- */

static void sha1(const void *in, size_t n, unsigned char md[SHA_DIGEST_LENGTH])
{
    SHA_CTX c;
    SHA1_Init(&c);
    SHA1_Update(&c, in, n);
    SHA1_Final(md, &c);
}

void lw_alert_id(const char *borrower_id, const char *rule_id, const char *event_id, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    char in[LW_BORROWER_ID_LEN + 2 * LW_ID_MAX + 4];
    int n = snprintf(in, sizeof in, "%s|%s|%s", borrower_id, rule_id, event_id);
    unsigned char md[SHA_DIGEST_LENGTH];
    sha1(in, (size_t)n, md);
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[32] = '\0';
}

/* Appends s as a JSON string. */
static bool json_str(lw_sbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (!lw_sbuf_reserve(b, 6 * n + 2))
        return false;
    char *p = b->p + b->len;
    *p++ = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20) {
            p += sprintf(p, "\\u%04x", ch);
        } else {
            *p++ = (char)ch;
        }
    }
    *p++ = '"';
    b->len = (size_t)(p - b->p);
    return true;
}

static bool json_raw(lw_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool json_raw(lw_sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    if (!lw_sbuf_reserve(b, 256))
        return false;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        return false;
    b->len += (size_t)n;
    return true;
}

/* What the rules look at, derived from the state after the event. */
typedef struct aggr {
    int64_t total;
    int32_t nact, nlend;
    bool otherdpd, anydpd;
} aggr_t;

typedef struct fire_ctx {
    const lw_event_t *ev;
    const aggr_t *a;
    const lw_bstate_t *s;
    lw_sbuf_t *json;
    lw_bapply_out_t *out;
} fire_ctx_t;

static bool fire(fire_ctx_t *f, int ri, const lw_rule_t *r, int64_t limit, int64_t wcount,
                 int64_t wms, const char *reason)
{
    const lw_event_t *ev = f->ev;
    size_t k = f->out->n_fired, off = f->json->len;
    lw_alert_id(ev->borrower_id, r->id, ev->event_id, f->out->alert_id[k]);
    char inc[24] = "null";
    if (f->s->has_income)
        snprintf(inc, sizeof inc, "%" PRId64, f->s->income_fen);
    bool ok =
        json_raw(f->json, "{\"alert_id\":\"%s\",\"borrower_id\":", f->out->alert_id[k]) &&
        json_str(f->json, ev->borrower_id) && json_raw(f->json, ",\"rule_id\":") &&
        json_str(f->json, r->id) &&
        json_raw(f->json,
                 ",\"rule_version\":%" PRId32 ",\"severity\":\"%s\",\"reason\":", r->version,
                 lw_severity_name(r->severity)) &&
        json_str(f->json, reason) &&
        json_raw(f->json,
                 ",\"total_outstanding_fen\":%" PRId64 ",\"active_lenders\":%" PRId32
                 ",\"active_loans\":%" PRId32 ",\"window_count\":%" PRId64 ",\"window_ms\":%" PRId64
                 ",\"annual_income_fen\":%s,\"limit\":%" PRId64 ",\"trigger_event_id\":",
                 f->a->total, f->a->nlend, f->a->nact, wcount, wms, inc, limit) &&
        json_str(f->json, ev->event_id) && json_raw(f->json, ",\"trigger_platform_id\":") &&
        json_str(f->json, ev->platform_id) && json_raw(f->json, ",\"trigger_lender_id\":") &&
        json_str(f->json, ev->lender_id) &&
        json_raw(f->json, ",\"raised_at\":%" PRId64 "}", ev->occurred_at);
    if (!ok)
        return false;
    f->out->fired[k] = ri;
    f->out->json_off[k] = off;
    f->out->json_len[k] = f->json->len - off;
    f->out->n_fired++;
    return true;
}

/* Distinct lender hashes (and entries) in the window after `from`. */
static int64_t win_lenders(const lw_bstate_t *s, int64_t from, int64_t *count)
{
    uint32_t seen[64];
    size_t nseen = 0;
    int64_t n = 0, extra = 0;
    for (size_t i = 0; i < s->n_win; i++) {
        const lw_bwin_t *w = &s->win[i];
        if (w->at <= from)
            continue;
        n++;
        bool dup = false;
        for (size_t j = 0; j < nseen && !dup; j++)
            dup = seen[j] == w->lh;
        /* past 64 distinct lenders: compare with the entries before instead */
        for (size_t j = 0; j < i && !dup && nseen == 64; j++)
            dup = s->win[j].at > from && s->win[j].lh == w->lh;
        if (dup)
            continue;
        if (nseen < 64)
            seen[nseen++] = w->lh;
        else
            extra++;
    }
    *count = n;
    return (int64_t)nseen + extra;
}

static uint64_t sha_bits(const char *s, size_t n, int bytes)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    sha1(s, n, md);
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | md[i];
    return v;
}

static bool is_active(lw_loan_status_t st)
{
    return st == LW_LOAN_ACTIVE || st == LW_LOAN_DELINQUENT;
}

/* ---- Applying one event ----------------------------------------------------- */

lw_apply_code_t lw_bstate_apply(lw_bstate_t *s, const lw_rules_t *rules, const lw_event_t *ev,
                                uint32_t platform, uint32_t lender, uint32_t writer, int64_t epoch,
                                lw_sbuf_t *json, lw_bapply_out_t *out)
{
    out->changed = out->nomem = false;
    out->n_fired = out->n_cleared = 0;
    if (writer && s->fence_writer == writer && epoch < s->fence_epoch)
        return LW_APPLY_FENCED;

    const lw_event_type_t et = ev->event_type;
    const int64_t at = ev->occurred_at;
    int64_t newt = at > s->t ? at : s->t;
    bool changed = newt != s->t;

    /* This event's loan (an application keeps no loan state). */
    lw_bloan_t *me = NULL;
    if (et != LW_EVENT_APPLICATION)
        for (size_t i = 0; i < s->n_loans && !me; i++)
            if (s->loans[i].platform == platform && !strcmp(s->loans[i].loan_id, ev->loan_id))
                me = &s->loans[i];

    lw_bwin_t add = {0, 0, 0};
    bool adding = false;
    char key[2 * LW_ID_MAX + 2];
    size_t klen = 0;
    if (et == LW_EVENT_APPLICATION ||
        (!me && (et == LW_EVENT_CREDIT_LINE || et == LW_EVENT_DRAWDOWN))) {
        size_t pl = strlen(ev->platform_id), ll = strlen(ev->loan_id);
        memcpy(key, ev->platform_id, pl);
        key[pl] = ':';
        memcpy(key + pl + 1, ev->loan_id, ll);
        klen = pl + 1 + ll;
        add.at = at;
        add.idh = sha_bits(key, klen, 6) & ~(uint64_t)1;
        add.lh = (uint32_t)sha_bits(ev->lender_id, strlen(ev->lender_id), 4);
    }
    if (et == LW_EVENT_APPLICATION) {
        /* counted once by its id */
        add.idh |= 1;
        for (size_t i = 0; i < s->n_win; i++)
            if (s->win[i].idh == add.idh)
                return LW_APPLY_DUPLICATE;
        adding = at > newt - LW_WINDOW_KEEP_MS;
    } else if (me) {
        if (ev->sequence == me->sequence)
            return LW_APPLY_DUPLICATE;
        if (ev->sequence < me->sequence)
            return LW_APPLY_OUT_OF_ORDER;
    } else {
        /* a CREDIT_LINE or DRAWDOWN opening a loan never seen: a new loan */
        adding = klen > 0 && at > newt - LW_WINDOW_KEEP_MS;
        if (!loans_room(s, s->n_loans + 1)) {
            out->nomem = true;
            return LW_APPLY_DUPLICATE;
        }
        me = &s->loans[s->n_loans++];
        memset(me, 0, sizeof *me);
        me->platform = platform;
        memcpy(me->loan_id, ev->loan_id, strlen(ev->loan_id) + 1); /* validated: <= LW_ID_MAX */
    }
    if (me) {
        lw_loan_status_t st;
        if (et == LW_EVENT_WRITE_OFF)
            st = LW_LOAN_WRITTEN_OFF;
        else if (et == LW_EVENT_CLOSURE)
            st = LW_LOAN_CLOSED;
        else if (ev->outstanding_fen > 0)
            st = ev->days_past_due > 0 ? LW_LOAN_DELINQUENT : LW_LOAN_ACTIVE;
        else
            st = LW_LOAN_PAID;
        me->lender = lender;
        me->product = ev->product;
        me->status = st;
        me->days_past_due = ev->days_past_due;
        me->sequence = ev->sequence;
        me->outstanding_fen = ev->outstanding_fen;
        me->past_due_fen = ev->past_due_fen;
        me->credit_limit_fen = ev->credit_limit_fen;
        me->updated_at = at;
        changed = true;
    }

    /* Aggregates over active loans; "other" past due excludes this loan. */
    aggr_t a = {0, 0, 0, false, false};
    for (size_t i = 0; i < s->n_loans; i++) {
        const lw_bloan_t *l = &s->loans[i];
        if (l->days_past_due > 0 && l->status != LW_LOAN_CLOSED) {
            a.anydpd = true;
            if (l != me)
                a.otherdpd = true;
        }
        if (!is_active(l->status))
            continue;
        a.total += l->outstanding_fen;
        a.nact++;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = is_active(s->loans[j].status) && s->loans[j].lender == l->lender;
        a.nlend += !seen;
    }

    if (ev->has_annual_income && (!s->has_income || at > s->income_at ||
                                  (at == s->income_at && ev->annual_income_fen > s->income_fen))) {
        s->has_income = true;
        s->income_fen = ev->annual_income_fen;
        s->income_at = at;
        changed = true;
    }

    /* Prune entries past 30 days of the latest event time, add the new one. */
    s->t = newt;
    int64_t lo = newt - LW_WINDOW_KEEP_MS;
    size_t kept = 0;
    for (size_t i = 0; i < s->n_win; i++)
        if (s->win[i].at > lo)
            s->win[kept++] = s->win[i];
    if (kept != s->n_win)
        changed = true;
    s->n_win = kept;
    if (adding) {
        if (!win_room(s, s->n_win + 1)) {
            out->nomem = true;
            return LW_APPLY_DUPLICATE;
        }
        s->win[s->n_win++] = add;
        changed = true;
    }

    /* Rules, on the state after this event (event time only). The reason
     * text is only made for an alert that fires. */
    fire_ctx_t f = {ev, &a, s, json, out};
    uint64_t newmask = s->mask;
    char reason[256];
    for (size_t ri = 0; ri < rules->n; ri++) {
        const lw_rule_t *r = &rules->rules[ri];
        uint64_t bit = (uint64_t)1 << ri;
        bool on = s->mask & bit, cond = false, clear = false;
        int64_t limit = 0, wcount = 0, wms = 0, cnt = 0;
        switch (r->kind) {
        case LW_RULE_INCOME_CAP:
            limit = r->cap_fen;
            if (s->has_income && s->income_fen / r->income_divisor < limit)
                limit = s->income_fen / r->income_divisor;
            cond = a.total > limit;
            clear = !cond;
            break;
        case LW_RULE_MULTI_LENDER:
            limit = r->min_count;
            cond = a.nlend >= limit;
            clear = !cond;
            break;
        case LW_RULE_STACKING:
            limit = r->min_count;
            wcount =
                s->n_win >= (size_t)limit || on ? win_lenders(s, newt - r->window_ms, &cnt) : 0;
            wms = r->window_ms;
            cond = wcount >= limit;
            clear = !cond;
            break;
        case LW_RULE_BORROW_DELINQUENT:
            /* fires on a drawdown while another loan is past due; clears when none is */
            cond = et == LW_EVENT_DRAWDOWN && a.otherdpd;
            clear = !a.anydpd;
            break;
        default:
            continue;
        }
        if (cond && !on) {
            switch (r->kind) {
            case LW_RULE_INCOME_CAP:
                snprintf(reason, sizeof reason,
                         "total outstanding %" PRId64 " fen > limit %" PRId64 " fen", a.total,
                         limit);
                break;
            case LW_RULE_MULTI_LENDER:
                snprintf(reason, sizeof reason, "%" PRId32 " distinct active lenders >= %" PRId64,
                         a.nlend, limit);
                break;
            case LW_RULE_STACKING:
                snprintf(reason, sizeof reason,
                         "%" PRId64 " distinct lenders among %" PRId64
                         " new loans and applications in %" PRId64 " ms >= %" PRId64,
                         wcount, cnt, r->window_ms, limit);
                break;
            default:
                snprintf(reason, sizeof reason, "drawdown while another loan is past due");
                limit = 0;
                break;
            }
            if (!fire(&f, (int)ri, r, limit, wcount, wms, reason)) {
                out->nomem = true;
                return LW_APPLY_DUPLICATE;
            }
            newmask |= bit | LW_MASK_HIST;
        } else if (on && clear) {
            out->cleared[out->n_cleared++] = (int)ri;
            newmask &= ~bit;
        }
    }

    /* Nothing changed (an application already out of the window, a repeated
     * income): nothing is written, and it counts as a duplicate, so that
     * "applied" means "changed". */
    if (!changed && newmask == s->mask)
        return LW_APPLY_DUPLICATE;
    s->mask = newmask;
    s->fence_writer = writer;
    s->fence_epoch = epoch;
    out->changed = true;
    return LW_APPLY_APPLIED;
}

/*
 * filter.c - what loanwire-alerts shows and how: the filters, the set of
 * alert_ids already printed in this run, and the terminal line.
 */
#include "loanwire/alerts.h"
#include "loanwire/hash.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct lw_alerts_filter_s {
    char **vals[LW_ALERTS_F__CNT];
    size_t n[LW_ALERTS_F__CNT];
    int severity; /* -1: any */
    bool sev_exact;
};

lw_alerts_filter_t *lw_alerts_filter_new(void)
{
    lw_alerts_filter_t *f = calloc(1, sizeof *f);
    if (f)
        f->severity = -1;
    return f;
}

void lw_alerts_filter_destroy(lw_alerts_filter_t *f)
{
    if (!f)
        return;
    for (int i = 0; i < LW_ALERTS_F__CNT; i++) {
        for (size_t j = 0; j < f->n[i]; j++)
            free(f->vals[i][j]);
        free(f->vals[i]);
    }
    free(f);
}

static const char *lw_field_opt(lw_alerts_field_t field)
{
    static const char *names[] = {"--rule", "--platform", "--lender", "--borrower"};
    return field < LW_ALERTS_F__CNT ? names[field] : "?";
}

lw_err_t lw_alerts_filter_add(lw_alerts_filter_t *f, lw_alerts_field_t field, const char *list,
                              char *errstr, size_t errstr_size)
{
    const char *p = list;
    size_t max = field == LW_ALERTS_F_BORROWER ? LW_BORROWER_ID_LEN : LW_ID_MAX;

    if (!f || !list || field >= LW_ALERTS_F__CNT) {
        snprintf(errstr, errstr_size, "no filter value given");
        return LW_ERR_INVALID_ARG;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char **nv, *v;

        while (len > 0 && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0 || len > max) {
            snprintf(errstr, errstr_size, "%s \"%s\": %s", lw_field_opt(field), list,
                     len == 0 ? "empty value" : "value too long");
            return LW_ERR_INVALID_ARG;
        }
        nv = realloc(f->vals[field], (f->n[field] + 1) * sizeof *nv);
        if (!nv)
            goto nomem;
        f->vals[field] = nv;
        v = strndup(p, len);
        if (!v)
            goto nomem;
        f->vals[field][f->n[field]++] = v;
        if (!comma)
            return LW_OK;
        p = comma + 1;
    }
nomem:
    snprintf(errstr, errstr_size, "out of memory");
    return LW_ERR_NOMEM;
}

lw_err_t lw_alerts_filter_severity(lw_alerts_filter_t *f, const char *spec, char *errstr,
                                   size_t errstr_size)
{
    bool exact = spec && spec[0] == '=';
    const char *name = exact ? spec + 1 : spec;

    for (int s = 0; name && s < LW_SEVERITY__CNT; s++) {
        if (strcasecmp(name, lw_severity_name((lw_severity_t)s)) == 0) {
            f->severity = s;
            f->sev_exact = exact;
            return LW_OK;
        }
    }
    snprintf(errstr, errstr_size,
             "--severity \"%s\": expected INFO, WARNING or CRITICAL (minimum), or =NAME (exact)",
             spec ? spec : "");
    return LW_ERR_INVALID_ARG;
}

static bool lw_in(char *const *vals, size_t n, const char *s)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (strcmp(vals[i], s) == 0)
            return true;
    return false;
}

bool lw_alerts_filter_match(const lw_alerts_filter_t *f, const lw_alert_t *al)
{
    if (!f)
        return true;
    if (f->severity >= 0) {
        if (f->sev_exact ? (int)al->severity != f->severity : (int)al->severity < f->severity)
            return false;
    }
    return lw_in(f->vals[LW_ALERTS_F_RULE], f->n[LW_ALERTS_F_RULE], al->rule_id) &&
           lw_in(f->vals[LW_ALERTS_F_PLATFORM], f->n[LW_ALERTS_F_PLATFORM],
                 al->trigger_platform_id) &&
           lw_in(f->vals[LW_ALERTS_F_LENDER], f->n[LW_ALERTS_F_LENDER], al->trigger_lender_id) &&
           lw_in(f->vals[LW_ALERTS_F_BORROWER], f->n[LW_ALERTS_F_BORROWER], al->borrower_id);
}

/* ---- Seen set: open addressing keyed by FNV-1a, FIFO eviction ------------ */

struct lw_alerts_seen_s {
    size_t cap;    /* ids remembered */
    size_t nslots; /* hash slots, a power of two >= 2 * cap */
    char **ring;   /* insertion order; ring[head] is the oldest when full */
    size_t head, n;
    char **slots; /* pointers into ring's strings; NULL empty */
};

lw_alerts_seen_t *lw_alerts_seen_new(size_t capacity)
{
    lw_alerts_seen_t *s;

    if (capacity == 0)
        capacity = 1;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cap = capacity;
    s->nslots = 4;
    while (s->nslots < capacity * 2)
        s->nslots *= 2;
    s->ring = calloc(capacity, sizeof *s->ring);
    s->slots = calloc(s->nslots, sizeof *s->slots);
    if (!s->ring || !s->slots) {
        lw_alerts_seen_destroy(s);
        return NULL;
    }
    return s;
}

static size_t lw_fnv(const char *id)
{
    return (size_t)lw_hash_str(id);
}

/* Slot holding id, or the empty slot where it would go. */
static size_t lw_seen_find(const lw_alerts_seen_t *s, const char *id)
{
    size_t i = lw_fnv(id) & (s->nslots - 1);
    while (s->slots[i] && strcmp(s->slots[i], id) != 0)
        i = (i + 1) & (s->nslots - 1);
    return i;
}

/* Removes id's slot and re-seats the run after it (linear probing delete). */
static void lw_seen_remove(lw_alerts_seen_t *s, const char *id)
{
    size_t i = lw_seen_find(s, id), j;

    if (!s->slots[i])
        return;
    s->slots[i] = NULL;
    for (j = (i + 1) & (s->nslots - 1); s->slots[j]; j = (j + 1) & (s->nslots - 1)) {
        char *k = s->slots[j];
        s->slots[j] = NULL;
        s->slots[lw_seen_find(s, k)] = k;
    }
}

bool lw_alerts_seen_has(const lw_alerts_seen_t *s, const char *id)
{
    return s && id && s->slots[lw_seen_find(s, id)] != NULL;
}

bool lw_alerts_seen_add(lw_alerts_seen_t *s, const char *id)
{
    size_t i;
    char *copy;

    if (!s || !id)
        return true;
    i = lw_seen_find(s, id);
    if (s->slots[i])
        return false;
    copy = strdup(id);
    if (!copy)
        return true; /* cannot remember: print rather than lose it */
    if (s->n == s->cap) {
        char *old = s->ring[s->head];
        lw_seen_remove(s, old);
        free(old);
        s->ring[s->head] = copy;
        s->head = (s->head + 1) % s->cap;
    } else {
        s->ring[(s->head + s->n) % s->cap] = copy;
        s->n++;
    }
    s->slots[lw_seen_find(s, copy)] = copy;
    return true;
}

void lw_alerts_seen_destroy(lw_alerts_seen_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->ring && i < s->n; i++)
        free(s->ring[(s->head + i) % s->cap]);
    free(s->ring);
    free(s->slots);
    free(s);
}

/* ---- Lines --------------------------------------------------------------- */

void lw_fen_format(int64_t fen, char *buf, size_t cap)
{
    char digits[32], grouped[48];
    uint64_t u = fen < 0 ? (uint64_t)0 - (uint64_t)fen : (uint64_t)fen;
    uint64_t yuan = u / 100;
    int n, j = 0;

    n = snprintf(digits, sizeof digits, "%" PRIu64, yuan);
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            grouped[j++] = ',';
        grouped[j++] = digits[i];
    }
    grouped[j] = '\0';
    snprintf(buf, cap, "%s%s.%02u", fen < 0 ? "-" : "", grouped, (unsigned)(u % 100));
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when s does not start
 * one (stray continuation byte, overlong form, surrogate, past U+10FFFF, or
 * cut short by the end of the string). */
static size_t lw_utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, cp = c & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

size_t lw_alerts_text_escape(const char *in, char *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t j = 0;

    if (cap == 0)
        return 0;
    while (s && *s) {
        size_t n = lw_utf8_seq(s);
        char esc[8];
        const char *put;
        size_t plen;

        /* C0 controls, DEL, the C1 controls U+0080..U+009F (U+009B is CSI
         * on many terminals), bytes that are not UTF-8, and the backslash
         * that starts every escape, so an escape cannot be forged. */
        if (n == 0 || *s < 0x20 || *s == 0x7f || *s == '\\' ||
            (n == 2 && s[0] == 0xc2 && s[1] < 0xa0)) {
            if (*s == '\\')
                snprintf(esc, sizeof esc, "\\\\");
            else if (n == 2)
                snprintf(esc, sizeof esc, "\\u%04x", (unsigned)s[1]);
            else
                snprintf(esc, sizeof esc, "\\x%02x", (unsigned)*s);
            put = esc;
            plen = strlen(esc);
            n = n ? n : 1;
        } else {
            put = (const char *)s;
            plen = n;
        }
        if (j + plen >= cap) /* never half an escape or half a character */
            break;
        memcpy(out + j, put, plen);
        j += plen;
        s += n;
    }
    out[j] = '\0';
    return j;
}

int lw_alert_format_line(const lw_alert_t *al, char *buf, size_t cap)
{
    char when[32] = "?", out[40], win[48] = "", reason[LW_TEXT_MAX * 6];
    char rule[LW_ID_MAX * 6 + 1], borrower[LW_BORROWER_ID_LEN * 6 + 1];
    time_t t = (time_t)(al->raised_at / 1000);
    struct tm tm;
    const char *sev = lw_severity_name(al->severity);
    int n;

    if (gmtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", &tm);
    lw_fen_format(al->total_outstanding_fen, out, sizeof out);
    if (al->window_ms > 0) {
        int64_t h = al->window_ms / 3600000;
        if (h >= 24 && h % 24 == 0)
            snprintf(win, sizeof win, "  %d in %" PRId64 "d", (int)al->window_count, h / 24);
        else
            snprintf(win, sizeof win, "  %d in %" PRId64 "h", (int)al->window_count, h);
    }
    /* Every string comes from the wire (a Kafka topic or a Redis stream that
     * anyone with write access fills): an ESC in rule_id could clear or
     * rewrite the reader's terminal, so no control character gets through. */
    lw_alerts_text_escape(al->reason, reason, sizeof reason);
    lw_alerts_text_escape(al->rule_id, rule, sizeof rule);
    lw_alerts_text_escape(al->borrower_id, borrower, sizeof borrower);
    n = snprintf(buf, cap, "%-20s  %-8s  %-22s  %-22s  %16s CNY  loans %-3d lenders %-3d%s  %s",
                 when, sev ? sev : "?", rule, borrower, out, (int)al->active_loans,
                 (int)al->active_lenders, win, reason);
    if (n < 0)
        return 0;
    return (size_t)n >= cap ? (int)cap - 1 : n;
}

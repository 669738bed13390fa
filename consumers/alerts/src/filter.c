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

int lw_alert_format_line(const lw_alert_t *al, char *buf, size_t cap)
{
    char when[32] = "?", out[40], win[48] = "", reason[LW_TEXT_MAX];
    time_t t = (time_t)(al->raised_at / 1000);
    struct tm tm;
    const char *sev = lw_severity_name(al->severity);
    size_t j = 0;
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
    /* The reason comes from the wire: no control characters on a terminal. */
    for (const char *c = al->reason; *c && j + 1 < sizeof reason; c++)
        reason[j++] = ((unsigned char)*c < 0x20 || *c == 0x7f) ? ' ' : *c;
    reason[j] = '\0';
    n = snprintf(buf, cap, "%-20s  %-8s  %-22s  %-22s  %16s CNY  loans %-3d lenders %-3d%s  %s",
                 when, sev ? sev : "?", al->rule_id, al->borrower_id, out, (int)al->active_loans,
                 (int)al->active_lenders, win, reason);
    if (n < 0)
        return 0;
    return (size_t)n >= cap ? (int)cap - 1 : n;
}

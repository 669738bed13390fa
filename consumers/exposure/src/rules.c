/*
 * rules.c - the over-indebtedness rule pack: defaults and the rules file.
 *
 * A rules file has one rule a line (consumers/README.md, "Rules file"):
 *
 *   # id                    version severity  parameters
 *   income_cap              1       CRITICAL  cap_fen=30000000 income_divisor=3
 *   stacking_24h            1       INFO      kind=stacking min_lenders=3 window=24h
 *
 * The kind defaults to the id when the id names a kind. Parameters not given
 * keep the kind's defaults. Any mistake is refused with "file:line: reason",
 * never half-applied.
 */
#include "exposure_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *kind_names[LW_RULE__CNT] = {
    NULL, "income_cap", "multi_lender", "stacking", "borrow_while_delinquent", "inquiry_spree",
};

const char *lw_rule_kind_name(lw_rule_kind_t k)
{
    if (k <= 0 || k >= LW_RULE__CNT)
        return NULL;
    return kind_names[k];
}

static int kind_parse(const char *s)
{
    for (int k = 1; k < LW_RULE__CNT; k++)
        if (!strcmp(s, kind_names[k]))
            return k;
    return -1;
}

static void rule_defaults(lw_rule_t *r, lw_rule_kind_t kind)
{
    r->kind = kind;
    r->cap_fen = 30000000; /* RMB 300,000 */
    r->income_divisor = 3;
    r->min_count = kind == LW_RULE_STACKING ? 5 : kind == LW_RULE_INQUIRY_SPREE ? 6 : 4;
    r->window_ms = kind == LW_RULE_INQUIRY_SPREE ? LW_WINDOW_30D : 7LL * 24 * 3600 * 1000;
}

static lw_rules_t *rules_alloc(void)
{
    lw_rules_t *rs = calloc(1, sizeof(lw_rules_t));
    if (rs) {
        rs->max_loans = LW_MAX_LOANS_DEFAULT;
        rs->max_window = LW_MAX_WINDOW_DEFAULT;
        rs->keep_ms = LW_WINDOW_MIN_KEEP_MS;
        rs->max_inquiries = LW_MAX_INQUIRIES_DEFAULT;
        rs->inq_keep_ms = LW_INQ_MIN_KEEP_MS;
    }
    return rs;
}

/* Window entries are kept as long as the longest window of the pack needs
 * (at least what readers report): a 90-day rule costs memory only where it
 * is configured (issue 20). */
static void rules_keep(lw_rules_t *rs)
{
    rs->keep_ms = LW_WINDOW_MIN_KEEP_MS;
    rs->inq_keep_ms = LW_INQ_MIN_KEEP_MS;
    for (size_t i = 0; i < rs->n; i++) {
        const lw_rule_t *r = &rs->rules[i];
        if (r->kind == LW_RULE_STACKING && r->window_ms > rs->keep_ms)
            rs->keep_ms = r->window_ms;
        if (r->kind == LW_RULE_INQUIRY_SPREE && r->window_ms > rs->inq_keep_ms)
            rs->inq_keep_ms = r->window_ms;
    }
}

int64_t lw_rules_keep_ms(const lw_rules_t *rules)
{
    return rules->keep_ms;
}

int64_t lw_rules_inquiry_keep_ms(const lw_rules_t *rules)
{
    return rules->inq_keep_ms;
}

void lw_rules_set_inquiry_limit(lw_rules_t *rules, size_t max_inquiries)
{
    rules->max_inquiries = max_inquiries ? max_inquiries : LW_MAX_INQUIRIES_DEFAULT;
}

size_t lw_rules_max_inquiries(const lw_rules_t *rules)
{
    return rules->max_inquiries;
}

void lw_rules_set_limits(lw_rules_t *rules, size_t max_loans, size_t max_window)
{
    rules->max_loans = max_loans ? max_loans : LW_MAX_LOANS_DEFAULT;
    rules->max_window = max_window ? max_window : LW_MAX_WINDOW_DEFAULT;
}

size_t lw_rules_max_loans(const lw_rules_t *rules)
{
    return rules->max_loans;
}

size_t lw_rules_max_window(const lw_rules_t *rules)
{
    return rules->max_window;
}

lw_rules_t *lw_rules_default(void)
{
    static const struct {
        const char *id;
        lw_rule_kind_t kind;
        lw_severity_t sev;
    } d[] = {
        {"income_cap", LW_RULE_INCOME_CAP, LW_SEVERITY_CRITICAL},
        {"multi_lender", LW_RULE_MULTI_LENDER, LW_SEVERITY_WARNING},
        {"stacking", LW_RULE_STACKING, LW_SEVERITY_WARNING},
        {"borrow_while_delinquent", LW_RULE_BORROW_DELINQUENT, LW_SEVERITY_CRITICAL},
        {"inquiry_spree", LW_RULE_INQUIRY_SPREE, LW_SEVERITY_WARNING},
    };
    lw_rules_t *rs = rules_alloc();
    if (!rs)
        return NULL;
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        lw_rule_t *r = &rs->rules[rs->n++];
        snprintf(r->id, sizeof r->id, "%s", d[i].id);
        r->version = 1;
        r->severity = d[i].sev;
        rule_defaults(r, d[i].kind);
    }
    rules_keep(rs);
    return rs;
}

void lw_rules_destroy(lw_rules_t *rules)
{
    free(rules);
}

size_t lw_rules_count(const lw_rules_t *rules)
{
    return rules ? rules->n : 0;
}

const lw_rule_t *lw_rules_get(const lw_rules_t *rules, size_t i)
{
    return rules && i < rules->n ? &rules->rules[i] : NULL;
}

const lw_rule_t *lw_rules_find(const lw_rules_t *rules, const char *id)
{
    for (size_t i = 0; rules && i < rules->n; i++)
        if (!strcmp(rules->rules[i].id, id))
            return &rules->rules[i];
    return NULL;
}

/* A non-negative decimal integer that fits int64 (no sign, no junk). */
static bool parse_i64(const char *s, int64_t *out)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* "7d", "24h", "90m", "30s", "1500ms" or plain milliseconds. */
static bool parse_duration_ms(const char *s, int64_t *out)
{
    char num[32];
    size_t n = 0;
    while (isdigit((unsigned char)s[n]) && n < sizeof num - 1) {
        num[n] = s[n];
        n++;
    }
    num[n] = '\0';
    int64_t v, mult;
    if (!parse_i64(num, &v))
        return false;
    const char *u = s + n;
    if (!*u || !strcmp(u, "ms"))
        mult = 1;
    else if (!strcmp(u, "s"))
        mult = 1000;
    else if (!strcmp(u, "m"))
        mult = 60000;
    else if (!strcmp(u, "h"))
        mult = 3600000;
    else if (!strcmp(u, "d"))
        mult = 86400000;
    else
        return false;
    if (v > INT64_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

static bool id_ok(const char *s)
{
    if (!*s || strlen(s) > 40)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        int o_ = snprintf(errstr, errstr_size, "%s:%d: ", name, lineno);                           \
        if (o_ > 0 && (size_t)o_ < errstr_size)                                                    \
            snprintf(errstr + o_, errstr_size - o_, __VA_ARGS__);                                  \
        goto fail;                                                                                 \
    } while (0)

lw_rules_t *lw_rules_parse(const char *text, const char *name, char *errstr, size_t errstr_size)
{
    lw_rules_t *rs = rules_alloc();
    char line[1024];
    int lineno = 0;
    if (!rs) {
        snprintf(errstr, errstr_size, "%s: out of memory", name);
        return NULL;
    }
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        if (len >= sizeof line)
            FAIL("line longer than %zu bytes", sizeof line - 1);
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (nl ? 1 : 0);
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';

        char *tok[16];
        int nt = 0;
        char *save = NULL;
        for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
            if (nt == 16)
                FAIL("too many fields (at most 16)");
            tok[nt++] = t;
        }
        if (nt == 0)
            continue;
        if (nt < 3)
            FAIL("expected: <rule_id> <version> <severity> [key=value ...]");
        if (rs->n == LW_RULES_MAX)
            FAIL("too many rules (at most %d)", LW_RULES_MAX);
        if (!id_ok(tok[0]))
            FAIL("rule id '%s': use 1-40 characters of [a-z0-9_]", tok[0]);
        if (lw_rules_find(rs, tok[0]))
            FAIL("rule id '%s' defined twice", tok[0]);
        lw_rule_t *r = &rs->rules[rs->n];
        memset(r, 0, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", tok[0]);
        int64_t v;
        if (!parse_i64(tok[1], &v) || v < 1 || v > INT32_MAX)
            FAIL("version '%s': expected an integer >= 1", tok[1]);
        r->version = (int32_t)v;
        int sev = lw_severity_parse(tok[2]);
        if (sev < 0)
            FAIL("severity '%s': expected INFO, WARNING or CRITICAL", tok[2]);
        r->severity = (lw_severity_t)sev;

        /* kind first: it sets the defaults the other keys override */
        int kind = kind_parse(tok[0]);
        for (int i = 3; i < nt; i++) {
            if (!strncmp(tok[i], "kind=", 5)) {
                kind = kind_parse(tok[i] + 5);
                if (kind < 0)
                    FAIL("kind '%s': expected income_cap, multi_lender, stacking, "
                         "borrow_while_delinquent or inquiry_spree",
                         tok[i] + 5);
            }
        }
        if (kind < 0)
            FAIL("rule '%s' names no kind: add kind=<income_cap|multi_lender|stacking|"
                 "borrow_while_delinquent|inquiry_spree>",
                 r->id);
        rule_defaults(r, (lw_rule_kind_t)kind);

        for (int i = 3; i < nt; i++) {
            char *eq = strchr(tok[i], '=');
            if (!eq)
                FAIL("'%s': expected key=value", tok[i]);
            *eq = '\0';
            const char *key = tok[i], *val = eq + 1;
            if (!strcmp(key, "kind"))
                continue;
            if (!strcmp(key, "cap_fen") && kind == LW_RULE_INCOME_CAP) {
                if (!parse_i64(val, &r->cap_fen) || r->cap_fen > 10000000000000LL)
                    FAIL("cap_fen '%s': expected fen, 0..10^13", val);
            } else if (!strcmp(key, "income_divisor") && kind == LW_RULE_INCOME_CAP) {
                if (!parse_i64(val, &r->income_divisor) || r->income_divisor < 1 ||
                    r->income_divisor > 1000)
                    FAIL("income_divisor '%s': expected 1..1000", val);
            } else if ((((!strcmp(key, "min_lenders") || !strcmp(key, "min_count")) &&
                         (kind == LW_RULE_MULTI_LENDER || kind == LW_RULE_STACKING))) ||
                       ((!strcmp(key, "min_institutions") || !strcmp(key, "min_count")) &&
                        kind == LW_RULE_INQUIRY_SPREE)) {
                if (!parse_i64(val, &r->min_count) || r->min_count < 1 || r->min_count > 1000)
                    FAIL("%s '%s': expected 1..1000", key, val);
            } else if (!strcmp(key, "window") &&
                       (kind == LW_RULE_STACKING || kind == LW_RULE_INQUIRY_SPREE)) {
                if (!parse_duration_ms(val, &r->window_ms) || r->window_ms < 1 ||
                    r->window_ms > LW_WINDOW_MAX_MS)
                    FAIL("window '%s': expected a duration up to 90d (e.g. 90d, 7d, 24h, 90m)",
                         val);
            } else {
                FAIL("unknown parameter '%s' for a %s rule", key,
                     lw_rule_kind_name((lw_rule_kind_t)kind));
            }
        }
        rs->n++;
    }
    rules_keep(rs);
    return rs;
fail:
    free(rs);
    return NULL;
}

lw_rules_t *lw_rules_load_file(const char *path, char *errstr, size_t errstr_size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            size_t nc = (cap ? cap * 2 : 8192);
            while (nc < len + n + 1)
                nc *= 2;
            char *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(errstr, errstr_size, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
            cap = nc;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        snprintf(errstr, errstr_size, "%s: read error", path);
        return NULL;
    }
    if (!buf) {
        snprintf(errstr, errstr_size, "%s: empty rules file", path);
        return NULL;
    }
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        snprintf(errstr, errstr_size, "%s: NUL byte in rules file", path);
        return NULL;
    }
    lw_rules_t *rs = lw_rules_parse(buf, path, errstr, errstr_size);
    free(buf);
    if (rs && rs->n == 0) {
        snprintf(errstr, errstr_size, "%s: no rules (comment them out deliberately? give one)",
                 path);
        lw_rules_destroy(rs);
        return NULL;
    }
    return rs;
}

/*
 * render.c - what loanwire-query answers with: the exposure document, the
 * alert list, the Prometheus text, plus the Redis connection it reads with.
 *
 * Everything here takes an lw_rcluster_t the caller owns (one per worker
 * thread in the server, one for --borrower), made from the URL of a single
 * Redis or of any node of a Redis Cluster: every key is routed by its slot, so
 * the answers are the same bytes on both. Amounts stay int64 fen end to end;
 * jansson prints them as JSON integers.
 */
#include "loanwire/id.h"
#include "loanwire/query.h"
#include "loanwire/redis.h"
#include "loanwire/streams.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/* How many entries /v1/alerts?rule= examines at most before answering. */
#define LW_ALERTS_SCAN_MAX 100000

lw_rcluster_t *lw_query_redis_connect(const lw_redis_url_t *url, char *errstr, size_t errstr_size)
{
    lw_rcluster_opts_t o;
    lw_rcluster_t *cl = NULL;
    lw_rcluster_opts_init(&o);
    o.timeout_ms = 2000;
    /* A request rides out a failover (cluster-node-timeout plus the election,
     * ~5 s with the stack's 3000 ms) but not a long outage: then 503. */
    o.retry_ms = LW_QUERY_REDIS_RETRY_MS;
    if (lw_rcluster_new(url, &o, &cl, errstr, errstr_size) != LW_RCLUSTER_OK)
        return NULL;
    return cl;
}

/* ---- Exposure ------------------------------------------------------------ */

/*
 * A JSON string for a name or id read from Redis. The producer only sends
 * UTF-8, but the state and the lw:strings table are bytes anyone with write
 * access to Redis may change, and jansson refuses a string that is not
 * UTF-8: json_pack() then fails, and the loan used to vanish from the answer
 * while the totals still counted it. Such a string is rendered escaped
 * instead: each byte that is not part of valid UTF-8 as \xNN, and a
 * backslash as \\ (so the escaped form is unambiguous), and *escaped is set
 * so the caller can log it. NULL only when out of memory.
 */
static json_t *lw_json_str(const char *s, bool *escaped)
{
    json_t *j = json_string(s);
    char *buf, *o;

    if (j)
        return j;
    buf = malloc(strlen(s) * 4 + 1);
    if (!buf)
        return NULL;
    o = buf;
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        size_t n = *c < 0x80   ? 1
                   : *c < 0xc2 ? 0
                   : *c < 0xe0 ? 2
                   : *c < 0xf0 ? 3
                   : *c < 0xf5 ? 4
                               : 0;
        for (size_t k = 1; k < n; k++)
            if ((c[k] & 0xc0) != 0x80) /* also stops at the NUL */
                n = 0;
        /* overlong 3- and 4-byte forms, surrogates, beyond U+10FFFF */
        if ((n == 3 && ((c[0] == 0xe0 && c[1] < 0xa0) || (c[0] == 0xed && c[1] >= 0xa0))) ||
            (n == 4 && ((c[0] == 0xf0 && c[1] < 0x90) || (c[0] == 0xf4 && c[1] >= 0x90))))
            n = 0;
        if (n == 0) {
            o += sprintf(o, "\\x%02x", *c);
            c++;
        } else if (*c == '\\') {
            *o++ = '\\';
            *o++ = '\\';
            c++;
        } else {
            memcpy(o, c, n);
            o += n;
            c += n;
        }
    }
    *o = '\0';
    j = json_string(buf);
    free(buf);
    *escaped = true;
    return j;
}

static json_t *lw_loan_to_json(const lw_loan_state_t *l, bool *escaped)
{
    const char *product = lw_product_name(l->product);
    const char *status = lw_loan_status_name(l->status);

    return json_pack("{s:o, s:o, s:o, s:s?, s:s?, s:I, s:I, s:i, s:I, s:I, s:I}", "platform_id",
                     lw_json_str(l->platform_id, escaped), "loan_id",
                     lw_json_str(l->loan_id, escaped), "lender_id",
                     lw_json_str(l->lender_id, escaped), "product", product, "status", status,
                     "outstanding_fen", (json_int_t)l->outstanding_fen, "credit_limit_fen",
                     (json_int_t)l->credit_limit_fen, "days_past_due", (int)l->days_past_due,
                     "past_due_fen", (json_int_t)l->past_due_fen, "sequence",
                     (json_int_t)l->sequence, "updated_at", (json_int_t)l->updated_at);
}

/* Field value of a stream entry's flat [f1, v1, f2, v2...] array, or NULL. */
static const char *lw_entry_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i], *v = fields->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
            strcmp(f->str, name) == 0)
            return v->str;
    }
    return NULL;
}

/* Attaches each open rule's alert object. loanwire-exposure keeps it in the
 * borrower's open-alert hash "a:{<id>}" under the rule id (consumers/README.md),
 * where lw_state_read() finds the open rules, so one HMGET fetches them all. */
static lw_err_t lw_open_alerts_fill(lw_rcluster_t *cl, const char *borrower_id, json_t *arr,
                                    const lw_borrower_state_t *st, char *errstr, size_t errstr_size)
{
    size_t n = json_array_size(arr), i;
    const char **argv;
    char key[64], why[256] = "";
    char(*fields)[LW_ID_MAX + 2];
    redisReply *r = NULL;
    lw_rcluster_err_t ce;
    json_t *oa;
    lw_err_t err = LW_OK;

    if (n == 0)
        return LW_OK;
    argv = calloc(n + 2, sizeof *argv);
    fields = calloc(n, sizeof *fields);
    if (!argv || !fields) {
        free(argv);
        free(fields);
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    snprintf(key, sizeof key, "a:{%s}", borrower_id);
    argv[0] = "HMGET";
    argv[1] = key;
    /* The stored rule ids, not the JSON's: those may be escaped. */
    for (i = 0; i < n; i++) {
        snprintf(fields[i], sizeof fields[i], "%s", st->open_alerts[i]);
        argv[i + 2] = fields[i];
    }
    ce = lw_rcluster_command_argv(cl, lw_rcluster_keyslot(key, strlen(key)), (int)(n + 2), argv,
                                  NULL, &r, why, sizeof why);
    if (ce != LW_RCLUSTER_OK || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        snprintf(errstr, errstr_size, "redis HMGET %s: %s", key,
                 ce != LW_RCLUSTER_OK           ? why
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "unexpected reply");
        err = LW_ERR_REDIS;
    } else {
        json_array_foreach(arr, i, oa)
        {
            json_t *al;
            if (r->element[i]->type == REDIS_REPLY_STRING &&
                (al = json_loads(r->element[i]->str, 0, NULL)) != NULL)
                json_object_set_new(oa, "alert", al);
        }
    }
    if (r)
        freeReplyObject(r);
    free(argv);
    free(fields);
    return err;
}

static json_t *lw_window_json(const lw_borrower_state_t *st, int w)
{
    return json_pack("{s:i, s:i, s:i}", "new_loans", (int)st->new_loans[w], "applications",
                     (int)st->applications[w], "distinct_lenders", (int)st->distinct_lenders[w]);
}

/* The last recorded inquiries, newest first: shown whatever their purpose
 * (post-loan management and the borrower's own requests are never counted). */
static json_t *lw_inquiries_json(const lw_borrower_state_t *st)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < st->n_inquiries; i++) {
        const lw_inquiry_state_t *q = &st->inquiries[i];
        bool escaped = false;
        if (json_array_append_new(arr, json_pack("{s:o, s:s, s:I}", "institution_id",
                                                 lw_json_str(q->institution_id, &escaped),
                                                 "purpose", lw_purpose_name(q->purpose),
                                                 "inquired_at", (json_int_t)q->inquired_at))) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

lw_err_t lw_query_exposure_json(lw_rcluster_t *cl, const char *borrower_id, char **json,
                                bool *found, char *errstr, size_t errstr_size)
{
    lw_borrower_state_t st;
    lw_err_t err;

    *json = NULL;
    *found = false;
    if (!borrower_id || !lw_borrower_id_is_valid(borrower_id)) {
        snprintf(errstr, errstr_size, "borrower_id must be 22 base64url characters");
        return LW_ERR_INVALID_ARG;
    }
    memset(&st, 0, sizeof st);
    err = lw_state_read(cl, borrower_id, &st, found, errstr, errstr_size);
    if (err != LW_OK || !*found) {
        lw_borrower_state_clear(&st);
        return err;
    }
    return lw_query_exposure_render(cl, borrower_id, &st, json, errstr, errstr_size);
}

lw_err_t lw_query_exposure_render(lw_rcluster_t *cl, const char *borrower_id,
                                  lw_borrower_state_t *st_in, char **json, char *errstr,
                                  size_t errstr_size)
{
    lw_borrower_state_t st = *st_in; /* ours now: cleared below */
    lw_err_t err;
    json_t *doc, *loans, *open;

    memset(st_in, 0, sizeof *st_in);
    *json = NULL;

    /* Every loan the totals count is in the answer, or there is no answer:
     * a loan that cannot be rendered fails the request (out of memory). */
    loans = json_array();
    open = json_array();
    if (!loans || !open) {
        err = LW_ERR_NOMEM;
        snprintf(errstr, errstr_size, "out of memory building JSON");
        goto fail;
    }
    for (size_t i = 0; i < st.n_loans; i++) {
        bool escaped = false;
        if (json_array_append_new(loans, lw_loan_to_json(&st.loans[i], &escaped)) != 0) {
            err = LW_ERR_NOMEM;
            snprintf(errstr, errstr_size, "out of memory building JSON (loan %zu)", i);
            goto fail;
        }
        if (escaped)
            fprintf(stderr,
                    "WARN loanwire-query: borrower %s: loan %zu has a platform, loan or lender "
                    "id that is not UTF-8; answered with it escaped (\\xNN)\n",
                    borrower_id, i);
    }
    for (size_t i = 0; i < st.n_open_alerts; i++) {
        bool escaped = false;
        if (json_array_append_new(open, json_pack("{s:o, s:n}", "rule_id",
                                                  lw_json_str(st.open_alerts[i], &escaped),
                                                  "alert")) != 0) {
            err = LW_ERR_NOMEM;
            snprintf(errstr, errstr_size, "out of memory building JSON (open alert %zu)", i);
            goto fail;
        }
        if (escaped)
            fprintf(stderr,
                    "WARN loanwire-query: borrower %s: open alert %zu has a rule id that is not "
                    "UTF-8; answered with it escaped (\\xNN)\n",
                    borrower_id, i);
    }
    err = lw_open_alerts_fill(cl, borrower_id, open, &st, errstr, errstr_size);
    if (err != LW_OK)
        goto fail;

    doc = json_pack(
        "{s:s, s:I, s:I, s:i, s:i, s:i, s:I, s:o, s:{s:o, s:o, s:o}, s:o, s:o, s:i, s:i, s:i, s:o}",
        "borrower_id", borrower_id, "as_of", (json_int_t)st.last_event_at, "total_outstanding_fen",
        (json_int_t)st.total_outstanding_fen, "active_loans", (int)st.active_loans,
        "active_lenders", (int)st.active_lenders, "active_platforms", (int)st.active_platforms,
        "past_due_fen", (json_int_t)st.past_due_fen, "annual_income_fen",
        st.has_annual_income ? json_integer(st.annual_income_fen) : json_null(), "windows", "24h",
        lw_window_json(&st, LW_WIN_24H), "7d", lw_window_json(&st, LW_WIN_7D), "30d",
        lw_window_json(&st, LW_WIN_30D), "loans", loans, "open_alerts", open, "inquiries_30d",
        (int)st.inquiries_30d, "inquiries_90d", (int)st.inquiries_90d, "inquiry_institutions_30d",
        (int)st.inquiry_institutions_30d, "inquiries", lw_inquiries_json(&st));
    lw_borrower_state_clear(&st);
    if (!doc) {
        snprintf(errstr, errstr_size, "out of memory building JSON");
        return LW_ERR_NOMEM;
    }
    *json = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!*json) {
        snprintf(errstr, errstr_size, "out of memory building JSON");
        return LW_ERR_NOMEM;
    }
    return LW_OK;
fail:
    json_decref(loans);
    json_decref(open);
    lw_borrower_state_clear(&st);
    return err;
}

/* ---- Alerts -------------------------------------------------------------- */

/*
 * The alerts are read through the stream merge (loanwire/streams.h), one
 * code path for both deployments:
 *
 *   - a single Redis has one stream, lw:alerts: the merge asks it for pages
 *     of `limit` entries (1000 with rule=), as the reads always did, and the
 *     answer is byte for byte what it was;
 *   - a cluster has one stream per hash slot, lw:alerts:{TAG}. One call
 *     costs TIME on every master (the watermark, below), then a first round
 *     of one XREVRANGE (XRANGE with since=) per slot, COUNT 1: 16384
 *     commands, pipelined on each master for the slots it serves (about 5461
 *     per master of three), all masters at once, one round trip; it returns
 *     one entry per non-empty stream. Then a few small rounds (usually one or
 *     two, at most ~11 for one hot stream) read further only the streams
 *     whose next entries can still be among the answer. Bytes: one entry per
 *     non-empty stream plus about twice the answer.
 *
 * On a cluster two slots' streams may hold the same entry id, so the order is
 * by (id, slot) and stream_id names the slot ("<ms>-<seq>:<slot>"): passed
 * back as since, paging resumes exactly after it, ties included. And only
 * entries below the masters' smallest clock are shown (the watermark), since
 * a master may still record an entry below one another master already gave.
 */
lw_err_t lw_query_alerts_json(lw_rcluster_t *cl, const lw_alerts_params_t *p, char **json,
                              char *errstr, size_t errstr_size)
{
    json_t *out = json_array();
    bool reverse = !p->has_since, cluster = lw_rcluster_is_cluster(cl);
    size_t scanned = 0, batch = p->has_rule ? 1000 : (size_t)p->limit;
    lw_alert_merge_t *am = out ? lw_alert_merge_new(cl, reverse) : NULL;
    lw_err_t err = LW_OK;

    *json = NULL;
    if (!am) {
        json_decref(out);
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    lw_smerge_t *m = lw_alert_merge_engine(am);
    /* On a cluster only entries below the masters' smallest clock are shown:
     * one master may still record an entry with an id below one another
     * master already gave, and a client paging with since= past it would
     * never see it. What is held back (a few ms' worth) shows in the next
     * call. A single stream's ids only grow, so a single Redis needs none. */
    lw_sid_t bound = {UINT64_MAX, 0};
    if (cluster) {
        uint64_t now;
        err = lw_alert_streams_clock(cl, &now, errstr, errstr_size);
        if (err != LW_OK) {
            lw_alert_merge_destroy(am);
            json_decref(out);
            return err == LW_ERR_NOMEM ? err : LW_ERR_REDIS;
        }
        bound = (lw_sid_t){now, 0};
        if (reverse) /* newest first: start below the watermark */
            lw_smerge_start(m, LW_SFROM_INCL, (lw_sid_t){now ? now - 1 : 0, UINT64_MAX});
    }
    /* Without since: the newest `limit` alerts (read backwards, then turned
     * round); with since: forwards from it. Either way the answer is oldest
     * first, so a client pages by passing the last stream_id as since. */
    if (!reverse) {
        lw_sid_t from;
        if (!lw_sid_parse(p->since_id, strlen(p->since_id), &from)) {
            snprintf(errstr, errstr_size, "since: bad stream id");
            lw_alert_merge_destroy(am);
            json_decref(out);
            return LW_ERR_INVALID_ARG;
        }
        lw_smerge_start(m, p->since_exclusive ? LW_SFROM_AFTER : LW_SFROM_INCL, from);
        /* after (id, slot): a later slot's entry with the same id comes next */
        if (p->since_exclusive && cluster && p->since_stream >= 0)
            for (size_t i = (size_t)p->since_stream + 1; i < lw_alert_streams_count(cl); i++)
                lw_smerge_start_stream(m, i, LW_SFROM_INCL, from);
    }
    lw_smerge_first_page(m, cluster ? 1 : batch);
    while (json_array_size(out) < (size_t)p->limit && scanned < LW_ALERTS_SCAN_MAX) {
        lw_sid_t id;
        size_t stream;
        const redisReply *e;
        bool end;
        char sid[72], key[64];
        const char *rule, *js;
        json_t *al;

        lw_smerge_hint(m, p->has_rule ? batch : (size_t)p->limit - json_array_size(out));
        err = lw_alert_merge_next(am, cluster && !reverse ? &bound : NULL, &id, &stream, &e, &end,
                                  errstr, errstr_size);
        if (err != LW_OK || end)
            break;
        scanned++;
        rule = lw_entry_field(e->element[1], "rule_id");
        js = lw_entry_field(e->element[1], "json");
        if (p->has_rule && (!rule || strcmp(rule, p->rule) != 0))
            continue;
        if (!js || !(al = json_loads(js, 0, NULL)) || !json_is_object(al)) {
            /* Not ours to repair; visible in the stream under this id. */
            if (!lw_alert_stream_key(cl, stream, key, sizeof key))
                snprintf(key, sizeof key, "%s", LW_REDIS_ALERT_STREAM);
            fprintf(stderr, "WARN loanwire-query: %s entry %s has no valid json field\n", key,
                    e->element[0]->str);
            continue;
        }
        if (cluster)
            snprintf(sid, sizeof sid, "%s:%zu", e->element[0]->str, stream);
        else
            snprintf(sid, sizeof sid, "%s", e->element[0]->str);
        json_object_set_new(al, "stream_id", json_string(sid));
        json_array_append_new(out, al);
    }
    lw_alert_merge_destroy(am);
    if (err != LW_OK) {
        json_decref(out);
        return err == LW_ERR_NOMEM ? err : LW_ERR_REDIS;
    }
    if (reverse) {
        size_t n = json_array_size(out);
        json_t *rev = json_array();
        for (size_t i = n; i > 0; i--)
            json_array_append(rev, json_array_get(out, i - 1));
        json_decref(out);
        out = rev;
    }
    *json = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(out);
    if (!*json) {
        snprintf(errstr, errstr_size, "out of memory building JSON");
        return LW_ERR_NOMEM;
    }
    return LW_OK;
}

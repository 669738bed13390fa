/*
 * run.c - lw_recon_run(): a snapshot streamed against the bureau.
 *
 * Memory stays flat however long the snapshot: lines are read through a
 * fixed buffer (a line longer than LW_SNAP_LINE_MAX is refused, not
 * grown into), and loans are compared a batch at a time. A batch's
 * distinct borrowers are read in one lw_state_read_many() call, which
 * lw_rcluster turns into one pipeline per master, so the cost is a round
 * trip per batch and node rather than per loan; the reader keeps the
 * platform and lender names, so after the first batches no HMGET of
 * lw:strings remains.
 *
 * --full adds the one thing that cannot stream: which loans the snapshot
 * had. Their fingerprints go into a set (reconcile_int.h: about 11 to 21
 * bytes per loan), then every master is walked with SCAN MATCH b:{*,
 * through a second handle whose node list no read on the first can
 * reshuffle, and the borrowers found are read in batches as above; an
 * active loan of the platform that the set lacks is unknown to the
 * platform. The bureau keeps no index of loans by platform, so the walk
 * reads every borrower: its cost is the bureau's size, not the snapshot's.
 */
#include "loanwire/conf.h"
#include "loanwire/hash.h"
#include "loanwire/log.h"
#include "loanwire/rcluster.h"
#include "loanwire/reconcile.h"
#include "reconcile_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READ_BUF (64 * 1024)

/* A snapshot read through a fixed buffer, line by line. */
typedef struct lw_lines {
    FILE *fp;
    char buf[READ_BUF];
    size_t pos, len;
    bool eof;
    char line[LW_SNAP_LINE_MAX + 1];
} lw_lines_t;

/* Next line into l->line (no newline, no '\r'): 1 a line, 0 end, -1 read
 * error. *too_long: the line passed LW_SNAP_LINE_MAX and was skipped whole. */
static int next_line(lw_lines_t *l, size_t *len, bool *too_long)
{
    size_t n = 0;
    bool got = false;
    *too_long = false;
    for (;;) {
        if (l->pos == l->len) {
            if (l->eof)
                break;
            l->len = fread(l->buf, 1, sizeof l->buf, l->fp);
            l->pos = 0;
            if (l->len < sizeof l->buf) {
                if (ferror(l->fp))
                    return -1;
                l->eof = true;
            }
            if (l->len == 0)
                break;
        }
        got = true;
        const char *s = l->buf + l->pos;
        const char *nl = memchr(s, '\n', l->len - l->pos);
        size_t take = nl ? (size_t)(nl - s) : l->len - l->pos;
        if (!*too_long && n + take <= LW_SNAP_LINE_MAX) {
            memcpy(l->line + n, s, take);
            n += take;
        } else {
            *too_long = true;
        }
        l->pos += take + (nl ? 1 : 0);
        if (nl)
            break;
    }
    if (!got)
        return 0;
    if (n && l->line[n - 1] == '\r')
        n--;
    l->line[n] = '\0';
    *len = n;
    return 1;
}

typedef struct item {
    lw_snap_loan_t loan;
    uint64_t line;
    uint32_t b; /* index of its borrower in the batch */
} item_t;

typedef struct run {
    const lw_recon_conf_t *conf;
    lw_recon_stats_t *st;
    const char *name; /* the snapshot, for error lines */
    FILE *out, *err;
    lw_rcluster_t *cl;
    lw_state_reader_t *reader;
    size_t batch;
    item_t *items;
    size_t n_items;
    const char **ids;
    char (*scan_ids)[LW_BORROWER_ID_LEN + 1];
    lw_borrower_state_t *states;
    bool *found;
    size_t n_ids;
    uint32_t *idx; /* borrower id -> ids index + 1, for one batch */
    size_t idx_mask;
    lw_fpset_t set;
    char *errstr;
    size_t errstr_size;
} run_t;

static lw_err_t emit(run_t *r, lw_recon_kind_t k, const char *bid, const char *loan_id,
                     const lw_snap_loan_t *s, uint64_t line, const lw_loan_state_t *b)
{
    char buf[1024];
    int n = lw_recon_diff_json(k, r->conf->platform, bid, loan_id, s, line, b, buf, sizeof buf);
    if (n < 0) {
        snprintf(r->errstr, r->errstr_size, "discrepancy line too long");
        return LW_ERR_IO;
    }
    if (fwrite(buf, 1, (size_t)n, r->out) != (size_t)n) {
        snprintf(r->errstr, r->errstr_size, "writing the discrepancies: %s", strerror(errno));
        return LW_ERR_IO;
    }
    r->st->kinds[k]++;
    r->st->discrepancies++;
    return LW_OK;
}

static void reject(run_t *r, uint64_t line, const char *field, const char *why)
{
    lw_recon_stats_t *st = r->st;
    st->rejected++;
    if (st->rejected <= r->conf->max_line_errors)
        fprintf(r->err, "loanwire-reconcile: %s:%" PRIu64 ": %s%s%s (line not compared)\n", r->name,
                line, field, field[0] ? ": " : "", why);
    else if (st->rejected == r->conf->max_line_errors + 1)
        fprintf(r->err, "loanwire-reconcile: more bad lines: counted in the summary, not shown\n");
}

static void clear_states(run_t *r)
{
    for (size_t i = 0; i < r->n_ids; i++)
        lw_borrower_state_clear(&r->states[i]);
    r->n_ids = 0;
}

static lw_err_t read_states(run_t *r)
{
    lw_err_t err = lw_state_read_many(r->reader, r->ids, r->n_ids, r->states, r->found, r->errstr,
                                      r->errstr_size);
    if (err == LW_ERR_INVALID_ARG || err == LW_ERR_TRANSIENT)
        err = LW_ERR_REDIS;
    return err;
}

/* The batch's loans against their borrowers, read in one call. */
static lw_err_t flush(run_t *r)
{
    if (r->n_items == 0)
        return LW_OK;
    lw_err_t err = read_states(r);
    for (size_t i = 0; i < r->n_items && err == LW_OK; i++) {
        const item_t *it = &r->items[i];
        const lw_borrower_state_t *st = r->found[it->b] ? &r->states[it->b] : NULL;
        const lw_loan_state_t *b = lw_recon_find(st, r->conf->platform, it->loan.loan_id);
        lw_recon_kind_t k = lw_recon_compare(&it->loan, b);
        if (k != LW_RECON_MATCH)
            err = emit(r, k, it->loan.borrower_id, it->loan.loan_id, &it->loan, it->line, b);
    }
    if (err == LW_OK) {
        r->st->loans += r->n_items;
        r->st->borrowers += r->n_ids;
    }
    clear_states(r);
    r->n_items = 0;
    memset(r->idx, 0, (r->idx_mask + 1) * sizeof *r->idx);
    return err;
}

/* Adds a parsed loan to the batch, its borrower once. */
static void add_item(run_t *r, const lw_snap_loan_t *loan, uint64_t line)
{
    item_t *it = &r->items[r->n_items++];
    it->loan = *loan;
    it->line = line;
    size_t h = (size_t)lw_hash_str(loan->borrower_id) & r->idx_mask;
    for (;; h = (h + 1) & r->idx_mask) {
        uint32_t v = r->idx[h];
        if (v == 0) {
            r->ids[r->n_ids] = it->loan.borrower_id;
            r->idx[h] = (uint32_t)++r->n_ids;
            it->b = (uint32_t)(r->n_ids - 1);
            return;
        }
        if (strcmp(r->ids[v - 1], loan->borrower_id) == 0) {
            it->b = v - 1;
            return;
        }
    }
}

static lw_err_t stream(run_t *r, lw_lines_t *l)
{
    lw_recon_stats_t *st = r->st;
    lw_err_t err = LW_OK;
    size_t len;
    bool too_long;
    int got;
    while (err == LW_OK && (got = next_line(l, &len, &too_long)) == 1) {
        uint64_t line = ++st->lines;
        if (too_long) {
            char why[64];
            snprintf(why, sizeof why, "longer than %d bytes", LW_SNAP_LINE_MAX);
            reject(r, line, "", why);
            continue;
        }
        size_t i = 0;
        while (i < len && (l->line[i] == ' ' || l->line[i] == '\t'))
            i++;
        if (i == len)
            continue; /* a blank line */
        lw_snap_loan_t loan;
        lw_field_error_t fe;
        if (lw_snap_parse(l->line, len, r->conf->platform, &loan, &fe) != LW_OK) {
            reject(r, line, fe.field, fe.reason);
            continue;
        }
        if (r->conf->full) {
            int a = lw_fpset_add(&r->set, lw_recon_fingerprint(loan.borrower_id, loan.loan_id));
            if (a < 0) {
                snprintf(r->errstr, r->errstr_size,
                         "out of memory keeping the snapshot's loans for --full (%zu held)",
                         r->set.n);
                return LW_ERR_NOMEM;
            }
            if (a == 0) {
                reject(r, line, "loan_id",
                       "the same loan (borrower, loan_id) is on an earlier line");
                continue;
            }
        }
        add_item(r, &loan, line);
        if (r->n_items == r->batch) {
            err = flush(r);
            if (err == LW_OK && lw_stop_requested()) {
                snprintf(r->errstr, r->errstr_size, "interrupted after %" PRIu64 " lines",
                         st->lines);
                return LW_ERR_TRANSIENT;
            }
        }
    }
    if (err != LW_OK)
        return err;
    if (got < 0 && lw_stop_requested()) {
        snprintf(r->errstr, r->errstr_size, "interrupted after %" PRIu64 " lines", st->lines);
        return LW_ERR_TRANSIENT;
    }
    if (got < 0) {
        snprintf(r->errstr, r->errstr_size, "reading %s: %s", r->name, strerror(errno));
        return LW_ERR_IO;
    }
    return flush(r);
}

/* Scanned borrowers: every active loan of the platform the snapshot lacks. */
static lw_err_t check_scanned(run_t *r)
{
    if (r->n_ids == 0)
        return LW_OK;
    lw_err_t err = read_states(r);
    const char *p = r->conf->platform;
    for (size_t i = 0; i < r->n_ids && err == LW_OK; i++) {
        if (!r->found[i])
            continue; /* deleted since the SCAN saw it */
        const lw_borrower_state_t *s = &r->states[i];
        for (size_t j = 0; j < s->n_loans && err == LW_OK; j++) {
            const lw_loan_state_t *b = &s->loans[j];
            if (lw_recon_is_active(b) && strcmp(b->platform_id, p) == 0 &&
                !lw_fpset_has(&r->set, lw_recon_fingerprint(r->ids[i], b->loan_id)))
                err = emit(r, LW_RECON_UNKNOWN_TO_PLATFORM, r->ids[i], b->loan_id, NULL, 0, b);
        }
    }
    if (err == LW_OK)
        r->st->scanned += r->n_ids;
    clear_states(r);
    return err;
}

/* "b:{" + 22 + "}": a borrower's state key; its id into dst. */
static bool borrower_of_key(const char *k, size_t len, char *dst)
{
    if (len != LW_BORROWER_ID_LEN + 4 || memcmp(k, "b:{", 3) != 0 || k[len - 1] != '}')
        return false;
    memcpy(dst, k + 3, LW_BORROWER_ID_LEN);
    dst[LW_BORROWER_ID_LEN] = '\0';
    return true;
}

static lw_err_t scan_bureau(run_t *r, const lw_redis_url_t *url)
{
    lw_rcluster_t *sc = NULL;
    char why[256];
    lw_rcluster_err_t ce = lw_rcluster_new(url, NULL, &sc, why, sizeof why);
    if (ce != LW_RCLUSTER_OK) {
        snprintf(r->errstr, r->errstr_size, "Redis (scan): %s", why);
        return LW_ERR_REDIS;
    }
    lw_err_t err = LW_OK;
    int masters = lw_rcluster_master_count(sc);
    r->st->masters = masters;
    char count[24];
    snprintf(count, sizeof count, "%zu", r->batch < 100 ? (size_t)100 : r->batch);
    for (int m = 0; m < masters && err == LW_OK; m++) {
        const char *host = "?";
        int port = 0;
        lw_rcluster_master(sc, m, &host, &port);
        redisContext *ctx = lw_rcluster_master_context(sc, m, why, sizeof why);
        if (!ctx) {
            snprintf(r->errstr, r->errstr_size, "Redis %s:%d (scan): %s", host, port, why);
            err = LW_ERR_REDIS;
            break;
        }
        char cursor[32] = "0";
        do {
            if (lw_stop_requested()) {
                snprintf(r->errstr, r->errstr_size, "interrupted while scanning %s:%d", host, port);
                err = LW_ERR_TRANSIENT;
                break;
            }
            redisReply *rep = redisCommand(ctx, "SCAN %s MATCH b:{* COUNT %s", cursor, count);
            if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
                rep->element[0]->type != REDIS_REPLY_STRING ||
                rep->element[0]->len >= sizeof cursor ||
                rep->element[1]->type != REDIS_REPLY_ARRAY) {
                snprintf(r->errstr, r->errstr_size, "Redis %s:%d SCAN: %s", host, port,
                         !rep ? (ctx->errstr[0] ? ctx->errstr : "no reply")
                         : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                          : "unexpected reply");
                freeReplyObject(rep);
                err = LW_ERR_REDIS;
                break;
            }
            memcpy(cursor, rep->element[0]->str, rep->element[0]->len + 1);
            const redisReply *keys = rep->element[1];
            for (size_t i = 0; i < keys->elements && err == LW_OK; i++) {
                const redisReply *k = keys->element[i];
                if (k->type != REDIS_REPLY_STRING ||
                    !borrower_of_key(k->str, k->len, r->scan_ids[r->n_ids]))
                    continue;
                r->ids[r->n_ids] = r->scan_ids[r->n_ids];
                if (++r->n_ids == r->batch)
                    err = check_scanned(r);
            }
            freeReplyObject(rep);
        } while (err == LW_OK && strcmp(cursor, "0") != 0);
    }
    if (err == LW_OK)
        err = check_scanned(r);
    clear_states(r);
    lw_rcluster_destroy(sc);
    return err;
}

void lw_recon_conf_init(lw_recon_conf_t *c)
{
    memset(c, 0, sizeof *c);
    c->batch = 1000;
    c->max_line_errors = 100;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

lw_err_t lw_recon_run(const lw_recon_conf_t *conf, lw_recon_stats_t *stats, char *errstr,
                      size_t errstr_size)
{
    memset(stats, 0, sizeof *stats);
    double t0 = now_s();
    run_t r = {.conf = conf, .st = stats, .errstr = errstr, .errstr_size = errstr_size};
    r.out = conf->out ? conf->out : stdout;
    r.err = conf->err ? conf->err : stderr;
    r.batch = conf->batch ? conf->batch : 1000;
    lw_fpset_init(&r.set);
    lw_lines_t *lines = NULL;
    lw_err_t err = LW_OK;
    FILE *in = NULL;
    bool own_in = false;
    if (!conf->platform || !conf->platform[0]) {
        snprintf(errstr, errstr_size, "no platform (--platform)");
        return LW_ERR_CONFIG;
    }
    if (r.batch > 1000000) {
        snprintf(errstr, errstr_size, "batch %zu is above 1000000", r.batch);
        return LW_ERR_CONFIG;
    }
    lw_redis_url_t url;
    if (lw_redis_url_parse(conf->redis_url ? conf->redis_url : LW_DEFAULT_REDIS, &url, errstr,
                           errstr_size) != LW_OK)
        return LW_ERR_CONFIG;
    if (!conf->input || strcmp(conf->input, "-") == 0) {
        in = conf->in ? conf->in : stdin;
        r.name = "(stdin)";
    } else if (!(in = fopen(conf->input, "rb"))) {
        snprintf(errstr, errstr_size, "%s: %s", conf->input, strerror(errno));
        return LW_ERR_IO;
    } else {
        own_in = true;
        r.name = conf->input;
    }
    size_t cap = 1;
    while (cap < 2 * r.batch)
        cap <<= 1;
    r.idx_mask = cap - 1;
    lines = calloc(1, sizeof *lines);
    r.items = malloc(r.batch * sizeof *r.items);
    r.ids = malloc(r.batch * sizeof *r.ids);
    r.scan_ids = conf->full ? malloc(r.batch * sizeof *r.scan_ids) : NULL;
    r.states = calloc(r.batch, sizeof *r.states);
    r.found = calloc(r.batch, sizeof *r.found);
    r.idx = calloc(cap, sizeof *r.idx);
    if (!lines || !r.items || !r.ids || !r.states || !r.found || !r.idx ||
        (conf->full && !r.scan_ids)) {
        snprintf(errstr, errstr_size, "out of memory");
        err = LW_ERR_NOMEM;
        goto done;
    }
    lines->fp = in;
    char why[256];
    lw_rcluster_err_t ce = lw_rcluster_new(&url, NULL, &r.cl, why, sizeof why);
    if (ce != LW_RCLUSTER_OK) {
        snprintf(errstr, errstr_size, "Redis: %s", why);
        err = LW_ERR_REDIS;
        goto done;
    }
    if (!(r.reader = lw_state_reader_new(r.cl, LW_STATE_READ_NO_ALERTS))) {
        snprintf(errstr, errstr_size, "out of memory");
        err = LW_ERR_NOMEM;
        goto done;
    }
    err = stream(&r, lines);
    stats->set_bytes = lw_fpset_bytes(&r.set);
    if (err == LW_OK && conf->full)
        err = scan_bureau(&r, &url);
    if (fflush(r.out) != 0 && err == LW_OK) {
        snprintf(errstr, errstr_size, "writing the discrepancies: %s", strerror(errno));
        err = LW_ERR_IO;
    }
done:
    clear_states(&r);
    lw_state_reader_destroy(r.reader);
    lw_rcluster_destroy(r.cl);
    lw_fpset_free(&r.set);
    free(lines);
    free(r.items);
    free(r.ids);
    free(r.scan_ids);
    free(r.states);
    free(r.found);
    free(r.idx);
    if (own_in)
        fclose(in);
    memset(url.password, 0, sizeof url.password);
    stats->seconds = now_s() - t0;
    return err;
}

void lw_recon_summary(const lw_recon_conf_t *conf, const lw_recon_stats_t *st, FILE *fp)
{
    double rate = st->seconds > 0 ? (double)st->loans / st->seconds : 0;
    fprintf(fp,
            "loanwire-reconcile: platform %s: %" PRIu64 " loans compared from %" PRIu64
            " lines (%" PRIu64 " rejected), %" PRIu64 " borrowers read, %.2f s, %.0f loans/s\n",
            conf->platform ? conf->platform : "?", st->loans, st->lines, st->rejected,
            st->borrowers, st->seconds, rate);
    if (conf->full)
        fprintf(fp,
                "loanwire-reconcile: --full: %" PRIu64
                " borrower keys scanned on %d master(s); the snapshot's loan set took %.1f MiB\n",
                st->scanned, st->masters, (double)st->set_bytes / (1024.0 * 1024.0));
    fprintf(fp, "loanwire-reconcile: %" PRIu64 " discrepancies", st->discrepancies);
    const char *sep = ": ";
    for (int k = 1; k < LW_RECON__CNT; k++) {
        if (k == LW_RECON_UNKNOWN_TO_PLATFORM && !conf->full)
            continue;
        fprintf(fp, "%s%s %" PRIu64, sep, lw_recon_kind_name((lw_recon_kind_t)k), st->kinds[k]);
        sep = ", ";
    }
    fprintf(fp, "\n");
}

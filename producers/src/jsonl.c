/*
 * jsonl.c - reads JSON Lines events and produces them, accounting for every
 * line: loanwire-produce is a thin shell around lw_jsonl_run().
 *
 * Each event line ends in exactly one place: acknowledged by Kafka, or in a
 * rejects file after a "# source:line: field: reason" comment. Rejected lines
 * are copied byte for byte; an event that failed delivery is written back as
 * JSON (decoded from the failed message, so nothing is kept per message: the
 * message opaque carries only the input number and line number).
 */
#include "jsonl.h"

#include "loanwire/json.h"
#include "loanwire/log.h"
#include "loanwire/validate.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LW_LINE_MAX       (1024 * 1024) /* longer lines are refused, still copied */
#define LW_WARN_MAX       100           /* reject messages on stderr before going quiet */
#define LW_LINE_BITS      40            /* opaque = input index << 40 | line number */
#define LW_MAX_INPUTS     (1 << 20)
#define LW_PROGRESS_EVERY 256

typedef struct lw_rejects {
    char *path;
    FILE *fp;
    int shared_with; /* index of the entry that owns fp, or -1 */
} lw_rejects_t;

struct lw_jsonl_s {
    lw_jsonl_opts_t opts;
    const char *const *inputs;
    int n_inputs;
    lw_rejects_t *rej; /* one per input (all the same file with --rejects) */
    lw_jsonl_summary_t sum;
    uint64_t enqueue_failed;
    uint64_t warned;
    lw_progress_t pg;
};

static const char *lw_src_name(const char *input)
{
    return strcmp(input, "-") == 0 ? "<stdin>" : input;
}

lw_jsonl_t *lw_jsonl_new(const lw_jsonl_opts_t *opts)
{
    lw_jsonl_t *j = calloc(1, sizeof *j);

    if (!j)
        return NULL;
    if (opts)
        j->opts = *opts;
    if (j->opts.stop_flush_ms <= 0)
        j->opts.stop_flush_ms = 10000;
    return j;
}

static void lw_rejects_close(lw_jsonl_t *j)
{
    if (!j->rej)
        return;
    for (int i = 0; i < j->n_inputs; i++) {
        if (j->rej[i].fp && j->rej[i].shared_with < 0) {
            if (fclose(j->rej[i].fp) != 0) {
                lw_error("%s: %s", j->rej[i].path, strerror(errno));
                j->sum.io_error = true;
            }
        }
        free(j->rej[i].path);
    }
    free(j->rej);
    j->rej = NULL;
}

void lw_jsonl_destroy(lw_jsonl_t *j)
{
    if (!j)
        return;
    lw_rejects_close(j);
    free(j);
}

/* Opens (once) the rejects file of input idx. */
static FILE *lw_rejects_fp(lw_jsonl_t *j, int idx)
{
    lw_rejects_t *r = &j->rej[idx];

    if (r->fp)
        return r->fp;
    if (r->shared_with == -2) /* failed to open before: said so already */
        return NULL;
    for (int i = 0; i < j->n_inputs; i++) {
        if (i != idx && j->rej[i].fp && j->rej[i].shared_with < 0 &&
            strcmp(j->rej[i].path, r->path) == 0) {
            r->fp = j->rej[i].fp;
            r->shared_with = i;
            return r->fp;
        }
    }
    r->fp = fopen(r->path, "w");
    if (!r->fp) {
        lw_error("cannot write rejects file %s: %s", r->path, strerror(errno));
        j->sum.io_error = true;
        r->shared_with = -2;
        return NULL;
    }
    r->shared_with = -1;
    return r->fp;
}

/* Writes "# src:line: reason" and the line itself to the rejects file. */
static void lw_reject(lw_jsonl_t *j, int idx, uint64_t lineno, const char *field,
                      const char *reason, const char *text, size_t len)
{
    char why[400];
    FILE *fp;

    if (field && *field)
        snprintf(why, sizeof why, "%s: %s", field, reason);
    else
        snprintf(why, sizeof why, "%s", reason);
    for (char *c = why; *c; c++) /* the comment must stay one line */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    if (j->warned < LW_WARN_MAX)
        lw_warn("%s:%" PRIu64 ": %s", lw_src_name(j->inputs[idx]), lineno, why);
    else if (j->warned == LW_WARN_MAX)
        lw_warn("more rejects: see the rejects file");
    j->warned++;

    fp = lw_rejects_fp(j, idx);
    if (!fp)
        return;
    if (fprintf(fp, "# %s:%" PRIu64 ": %s\n", lw_src_name(j->inputs[idx]), lineno, why) < 0 ||
        fwrite(text, 1, len, fp) != len || fputc('\n', fp) == EOF) {
        if (!j->sum.io_error)
            lw_error("writing rejects file %s: %s", j->rej[idx].path, strerror(errno));
        j->sum.io_error = true;
        return;
    }
    j->sum.rejects_written++;
}

static void lw_jsonl_failed_cb(const lw_event_t *ev, lw_err_t err, const char *reason, void *opaque,
                               void *cb_opaque)
{
    lw_jsonl_t *j = cb_opaque;
    uintptr_t o = (uintptr_t)opaque;
    int idx = (int)(o >> LW_LINE_BITS);
    uint64_t lineno = o & ((UINT64_C(1) << LW_LINE_BITS) - 1);
    char json[4096], why[600];
    int n;

    (void)err;
    if (!j->rej) { /* a report after lw_jsonl_run() returned: say it at least */
        lw_error("event %s (borrower %s) not delivered: %s", ev->event_id, ev->borrower_id, reason);
        j->sum.failed++;
        return;
    }
    if (idx < 0 || idx >= j->n_inputs)
        idx = 0;
    n = lw_event_to_json(ev, json, sizeof json);
    if (n < 0) {
        snprintf(json, sizeof json, "{}");
        n = 2;
    }
    snprintf(why, sizeof why, "not delivered: %s", reason);
    lw_reject(j, idx, lineno, "delivery", why, json, (size_t)n);
}

void lw_jsonl_producer_callbacks(lw_jsonl_t *j, lw_producer_conf_t *conf)
{
    lw_producer_conf_set_callbacks(conf, NULL, lw_jsonl_failed_cb, j);
}

static void lw_jsonl_progress(lw_jsonl_t *j, lw_producer_t *p)
{
    lw_producer_stats_t st;
    char extra[160];

    if (!j->pg.enabled)
        return;
    lw_producer_stats(p, &st);
    snprintf(extra, sizeof extra, "delivered %" PRIu64 "  rejected %" PRIu64 "  failed %" PRIu64,
             st.delivered, j->sum.rejected, st.failed + j->enqueue_failed);
    lw_progress_update(&j->pg, "events", j->sum.read, 0, extra);
}

/* One event line: parse, pseudonymise, validate, send. */
static void lw_jsonl_line(lw_jsonl_t *j, lw_producer_t *p, int idx, uint64_t lineno,
                          const char *line, size_t len)
{
    lw_event_t ev;
    lw_field_error_t ferr;
    char raw_id[LW_ID_MAX + 1], norm[LW_ID_MAX + 1], err[400];
    lw_err_t e;

    raw_id[0] = '\0';
    e = lw_event_from_json(line, len, &ev, raw_id, &ferr); /* clears ferr first */
    if (e != LW_OK) {
        j->sum.rejected++;
        lw_reject(j, idx, lineno, ferr.field, ferr.reason[0] ? ferr.reason : lw_err2str(e), line,
                  len);
        return;
    }
    if (raw_id[0]) {
        if (ev.borrower_id[0]) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, LW_RAW_ID_FIELD,
                      "give either national_id or borrower_id, not both", line, len);
            return;
        }
        /* A bad id is worth reporting as such even when no key was given. */
        if (lw_id_normalise(raw_id, norm, sizeof norm, err, sizeof err) != LW_OK) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, LW_RAW_ID_FIELD, err, line, len);
            return;
        }
        if (!j->opts.id_key) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, LW_RAW_ID_FIELD,
                      "raw national id given but no --id-key to pseudonymise it", line, len);
            return;
        }
        if (lw_id_pseudonymise(j->opts.id_key, raw_id, ev.borrower_id, err, sizeof err) != LW_OK) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, LW_RAW_ID_FIELD, err, line, len);
            return;
        }
    }
    if (j->opts.dry_run || !p) {
        if (lw_event_validate(&ev, &ferr) != LW_OK) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, ferr.field, ferr.reason, line, len);
        }
        return;
    }
    e = lw_producer_send(p, &ev, (void *)(((uintptr_t)idx << LW_LINE_BITS) | (uintptr_t)lineno),
                         err, sizeof err);
    if (e == LW_ERR_VALIDATION) {
        j->sum.rejected++;
        lw_reject(j, idx, lineno, NULL, err, line, len); /* err is "field: reason" */
    } else if (e != LW_OK) {
        j->enqueue_failed++;
        lw_reject(j, idx, lineno, "produce", err, line, len);
    }
}

/* Input lines come out of one big buffer: read(2) straight into it and
 * memchr for the newline, instead of getline() copying each line out of
 * stdio's buffer. read() returns whatever a pipe has, so a live feed on stdin
 * is still handled line by line as it arrives. The buffer grows for a line
 * longer than itself (such a line is refused, but copied whole). */
#define LW_READ_BUF (1 << 20)

typedef struct lw_linebuf {
    char *buf;
    size_t cap, start, end; /* unread bytes are buf[start..end) */
    size_t scanned;         /* buf[start..scanned) holds no newline */
    bool eof;
} lw_linebuf_t;

/* Next line without its '\n' (a last line may lack one). Returns 1 with a
 * line, 0 at the end of input, -1 on a read error or out of memory (errno). */
static int lw_next_line(int fd, lw_linebuf_t *b, const char **line, size_t *len)
{
    for (;;) {
        char *nl =
            b->scanned < b->end ? memchr(b->buf + b->scanned, '\n', b->end - b->scanned) : NULL;
        if (nl) {
            *line = b->buf + b->start;
            *len = (size_t)(nl - *line);
            b->start = b->scanned = (size_t)(nl - b->buf) + 1;
            return 1;
        }
        b->scanned = b->end;
        if (b->eof) {
            if (b->start == b->end)
                return 0;
            *line = b->buf + b->start;
            *len = b->end - b->start;
            b->start = b->scanned = b->end;
            return 1;
        }
        if (b->start > 0) { /* keep the partial line, make room after it */
            memmove(b->buf, b->buf + b->start, b->end - b->start);
            b->end -= b->start;
            b->scanned -= b->start;
            b->start = 0;
        }
        if (b->end == b->cap) {
            char *nb = b->cap < SIZE_MAX / 2 ? realloc(b->buf, b->cap * 2) : NULL;
            if (!nb) {
                errno = ENOMEM;
                return -1;
            }
            b->buf = nb;
            b->cap *= 2;
        }
        ssize_t n = read(fd, b->buf + b->end, b->cap - b->end);
        if (n < 0) {
            if (errno == EINTR && !lw_stop_requested())
                continue;
            return -1;
        }
        if (n == 0)
            b->eof = true;
        b->end += (size_t)n;
    }
}

/* Reads one input to its end (or a stop request). */
static void lw_jsonl_input(lw_jsonl_t *j, lw_producer_t *p, int idx)
{
    const char *name = j->inputs[idx];
    bool is_stdin = strcmp(name, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(name, O_RDONLY | O_CLOEXEC);
    lw_linebuf_t lb = {0};
    const char *line;
    uint64_t lineno = 0;
    int rc;

    if (fd < 0) {
        lw_error("cannot read %s: %s", name, strerror(errno));
        j->sum.io_error = true;
        return;
    }
    lb.cap = LW_READ_BUF;
    lb.buf = malloc(lb.cap);
    if (!lb.buf) {
        lw_error("reading %s: %s", lw_src_name(name), strerror(ENOMEM));
        j->sum.io_error = true;
        if (!is_stdin)
            close(fd);
        return;
    }
    while (!lw_stop_requested()) {
        size_t len, k;

        rc = lw_next_line(fd, &lb, &line, &len);
        if (rc <= 0) {
            if (rc < 0 && !lw_stop_requested()) {
                lw_error("reading %s: %s", lw_src_name(name), strerror(errno));
                j->sum.io_error = true;
            }
            break;
        }
        lineno++;
        if (len && line[len - 1] == '\r')
            len--;
        /* Blank lines and '#' comments are not events (rejects files feed back). */
        for (k = 0; k < len && (line[k] == ' ' || line[k] == '\t'); k++)
            ;
        if (k == len || line[k] == '#')
            continue;
        j->sum.read++;
        if (memchr(line, '\0', len)) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, NULL, "line contains a NUL byte", line, len);
        } else if (len > LW_LINE_MAX) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, NULL, "line longer than 1 MiB", line, len);
        } else {
            lw_jsonl_line(j, p, idx, lineno, line, len);
        }
        if (j->sum.read % LW_PROGRESS_EVERY == 0)
            lw_jsonl_progress(j, p);
    }
    free(lb.buf);
    if (!is_stdin)
        close(fd);
}

void lw_jsonl_run(lw_jsonl_t *j, lw_producer_t *p, const char *const *inputs, int n_inputs,
                  lw_jsonl_summary_t *sum)
{
    static const char *const stdin_only[] = {"-"};
    int64_t stop_deadline = 0;
    lw_producer_stats_t st;

    if (n_inputs <= 0) {
        inputs = stdin_only;
        n_inputs = 1;
    }
    if (n_inputs > LW_MAX_INPUTS) {
        lw_error("too many inputs (%d, at most %d)", n_inputs, LW_MAX_INPUTS);
        j->sum.io_error = true;
        goto out;
    }
    j->inputs = inputs;
    j->n_inputs = n_inputs;
    j->rej = calloc((size_t)n_inputs, sizeof *j->rej);
    if (!j->rej) {
        j->sum.io_error = true;
        goto out;
    }
    for (int i = 0; i < n_inputs; i++) {
        const char *path = j->opts.rejects_path;
        char buf[4096];
        if (!path) {
            if (strcmp(inputs[i], "-") == 0)
                path = "loanwire-rejects.jsonl";
            else {
                snprintf(buf, sizeof buf, "%s.rejects", inputs[i]);
                path = buf;
            }
        }
        j->rej[i].path = strdup(path);
        j->rej[i].shared_with = -1;
        if (!j->rej[i].path) {
            j->sum.io_error = true;
            goto out;
        }
    }
    if (j->opts.progress)
        lw_progress_init(&j->pg);

    for (int i = 0; i < n_inputs && !lw_stop_requested(); i++)
        lw_jsonl_input(j, p, i);
    j->sum.interrupted = lw_stop_requested();

    /* Every sent event must end delivered or failed: wait for all reports.
     * librdkafka bounds this by message.timeout.ms; after a stop request we
     * wait at most stop_flush_ms, then purge (purged events are reported). */
    while (p) {
        lw_producer_stats(p, &st);
        if (st.in_flight == 0)
            break;
        if (lw_stop_requested()) {
            if (!stop_deadline)
                stop_deadline = lw_mono_ms() + j->opts.stop_flush_ms;
            if (lw_mono_ms() >= stop_deadline) {
                lw_warn("stopping: giving up on %" PRIu64 " events not yet acknowledged",
                        st.in_flight);
                lw_producer_purge(p);
                break;
            }
        }
        lw_producer_flush(p, 200);
        lw_jsonl_progress(j, p);
    }
    if (j->opts.progress)
        lw_progress_finish(&j->pg);
out:
    if (p) {
        lw_producer_stats(p, &st);
        j->sum.sent = st.sent;
        j->sum.delivered = st.delivered;
        j->sum.failed = st.failed + j->enqueue_failed;
    } else {
        j->sum.failed = j->enqueue_failed;
    }
    lw_rejects_close(j);
    if (sum)
        *sum = j->sum;
}

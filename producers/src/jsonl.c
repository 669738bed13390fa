/*
 * jsonl.c - reads JSON Lines events and produces them, accounting for every
 * line: loanwire-produce is a thin shell around lw_jsonl_run().
 *
 * Each event line ends in exactly one place: acknowledged by Kafka, or in a
 * rejects file after a "# source:line: field: reason" comment. Rejected lines
 * are copied byte for byte; an event that failed delivery is written back as
 * JSON (decoded from the failed message, so nothing is kept per message: the
 * message opaque carries only the input number and line number).
 *
 * Two threads when producing: a reader thread reads, parses, validates and
 * encodes, and hands blocks of encoded events to the calling thread, which
 * enqueues them in librdkafka and serves the delivery reports. Parsing and
 * enqueueing cost about the same per event, so each gets a core when the
 * machine has one to spare; the order of the events is kept, so is the
 * order per partition. The rejects file is shared under a mutex.
 */
#include "jsonl.h"

#include "loanwire/codec.h"
#include "loanwire/json.h"
#include "loanwire/log.h"
#include "loanwire/validate.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longer lines are refused without being kept: the reader skips to the next
 * newline, so its buffer never holds more than about twice this. */
#define LW_LINE_MAX       (1024 * 1024)
#define LW_WARN_MAX       100           /* reject messages on stderr before going quiet */
#define LW_LINE_BITS      40            /* opaque = input index << 40 | line number */
#define LW_MAX_INPUTS     (1 << 20)
#define LW_PROGRESS_EVERY 256
#define LW_PIPE_BLOCK     (64 * 1024) /* bytes of encoded events per hand-over */
#define LW_PIPE_BLOCKS    8           /* hand-overs in flight: bounds the reader's lead */
#define LW_PIPE_WAIT_MS   5           /* the sender serves reports this often when idle */
/* An entry in a block: opaque (8 bytes), payload length (2), key, payload. */
#define LW_ENTRY_HDR (8 + 2 + LW_BORROWER_ID_LEN)

typedef struct lw_rejects {
    char *path;
    FILE *fp;
    int shared_with; /* index of the entry that owns fp, or -1 */
} lw_rejects_t;

typedef struct lw_block {
    size_t used;
    unsigned char data[LW_PIPE_BLOCK];
} lw_block_t;

/* Encoded events on their way from the reader thread to the sending one. */
typedef struct lw_pipe {
    pthread_mutex_t mu;
    pthread_cond_t ready, space;
    lw_block_t ring[LW_PIPE_BLOCKS];
    int head, count; /* published blocks: ring[head .. head + count) */
    int w;           /* the block the reader fills: ring[(head + count) % N] */
    bool done;       /* the reader published its last block */
    lw_codec_t *enc; /* the reader's (a codec serves one thread) */
    lw_codec_t *dec; /* the sender's, to write back what it could not enqueue */
} lw_pipe_t;

struct lw_jsonl_s {
    lw_jsonl_opts_t opts;
    const char *const *inputs;
    int n_inputs;
    lw_rejects_t *rej; /* one per input (all the same file with --rejects) */
    lw_jsonl_summary_t sum;
    _Atomic uint64_t enqueue_failed;
    uint64_t warned;
    lw_progress_t pg;
    pthread_mutex_t rej_mu; /* rejects files, warned, rejects_written, io_error */
    lw_producer_t *p;
    lw_pipe_t *pipe; /* NULL: one thread (dry run) */
    pthread_t reader;
    sigset_t sigmask; /* the caller's, restored after the reader is joined */
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
    pthread_mutex_init(&j->rej_mu, NULL);
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
    pthread_mutex_destroy(&j->rej_mu);
    free(j);
}

static void lw_jsonl_io_error(lw_jsonl_t *j)
{
    pthread_mutex_lock(&j->rej_mu);
    j->sum.io_error = true;
    pthread_mutex_unlock(&j->rej_mu);
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
    /* Refused lines are kept verbatim, raw national ids included: the file
     * is created 0600 whatever the umask, and an existing regular file that
     * group or others may read is narrowed to its owner (never chmod a
     * device such as /dev/null). */
    int fd = open(r->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) &&
        fchmod(fd, st.st_mode & 0700) != 0) {
        lw_error("rejects file %s is accessible by group or others (mode %03o) and cannot be "
                 "narrowed: %s",
                 r->path, (unsigned)(st.st_mode & 0777), strerror(errno));
        close(fd);
        j->sum.io_error = true;
        r->shared_with = -2;
        return NULL;
    }
    r->fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!r->fp) {
        lw_error("cannot write rejects file %s: %s", r->path, strerror(errno));
        if (fd >= 0)
            close(fd);
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
    pthread_mutex_lock(&j->rej_mu);
    if (j->warned < LW_WARN_MAX)
        lw_warn("%s:%" PRIu64 ": %s", lw_src_name(j->inputs[idx]), lineno, why);
    else if (j->warned == LW_WARN_MAX)
        lw_warn("more rejects: see the rejects file");
    j->warned++;

    fp = lw_rejects_fp(j, idx);
    if (!fp) {
        pthread_mutex_unlock(&j->rej_mu);
        return;
    }
    /* text NULL: a line too long to keep; the comment alone accounts for it. */
    if (fprintf(fp, "# %s:%" PRIu64 ": %s\n", lw_src_name(j->inputs[idx]), lineno, why) < 0 ||
        (text && (fwrite(text, 1, len, fp) != len || fputc('\n', fp) == EOF))) {
        if (!j->sum.io_error)
            lw_error("writing rejects file %s: %s", j->rej[idx].path, strerror(errno));
        j->sum.io_error = true;
    } else {
        j->sum.rejects_written++;
    }
    pthread_mutex_unlock(&j->rej_mu);
}

static uint64_t lw_line_opaque(int idx, uint64_t lineno)
{
    return (uint64_t)idx << LW_LINE_BITS | lineno;
}

/* Writes an event that was read but not delivered to the rejects file of the
 * line it came from, as JSON ("{}" when it is not recoverable: ev NULL). */
static void lw_reject_event(lw_jsonl_t *j, uint64_t opaque, const char *field, const char *reason,
                            const lw_event_t *ev)
{
    int idx = (int)(opaque >> LW_LINE_BITS);
    uint64_t lineno = opaque & ((UINT64_C(1) << LW_LINE_BITS) - 1);
    char json[4096];
    int n = ev ? lw_event_to_json(ev, json, sizeof json) : -1;

    if (n < 0) {
        snprintf(json, sizeof json, "{}");
        n = 2;
    }
    lw_reject(j, idx < j->n_inputs ? idx : 0, lineno, field, reason, json, (size_t)n);
}

static void lw_jsonl_failed_cb(const lw_event_t *ev, lw_err_t err, const char *reason, void *opaque,
                               void *cb_opaque)
{
    lw_jsonl_t *j = cb_opaque;
    char why[600];

    (void)err;
    if (!j->rej) { /* a report after lw_jsonl_run() returned: say it at least */
        lw_error("event %s (borrower %s) not delivered: %s", ev->event_id, ev->borrower_id, reason);
        j->sum.failed++;
        return;
    }
    snprintf(why, sizeof why, "not delivered: %s", reason);
    lw_reject_event(j, (uintptr_t)opaque, "delivery", why, ev);
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
             st.delivered, j->sum.rejected, st.failed + atomic_load(&j->enqueue_failed));
    lw_progress_update(&j->pg, "events", j->sum.read, 0, extra);
}

/* ---- the hand-over between the reader and the sending thread ---- */

/* Reader: hands the block it filled to the sender, then waits for a free one. */
static void lw_pipe_publish(lw_pipe_t *q)
{
    if (q->ring[q->w].used == 0)
        return;
    pthread_mutex_lock(&q->mu);
    q->count++;
    pthread_cond_signal(&q->ready);
    while (q->count == LW_PIPE_BLOCKS)
        pthread_cond_wait(&q->space, &q->mu);
    q->w = (q->head + q->count) % LW_PIPE_BLOCKS;
    pthread_mutex_unlock(&q->mu);
    q->ring[q->w].used = 0;
}

/* Reader: validates and encodes ev into the current block, as
 * lw_producer_send() would (same refusals, same words). */
static lw_err_t lw_pipe_put(lw_pipe_t *q, const lw_event_t *ev, uint64_t opaque, char *errstr,
                            size_t errstr_size)
{
    lw_block_t *b = &q->ring[q->w];
    size_t n = 0;
    uint16_t n16;
    lw_err_t e;

    if (sizeof b->data - b->used < LW_ENTRY_HDR + LW_CODEC_MAX_EVENT) {
        lw_pipe_publish(q);
        b = &q->ring[q->w];
    }
    e = lw_producer_encode(q->enc, ev, b->data + b->used + LW_ENTRY_HDR, LW_CODEC_MAX_EVENT, &n,
                           errstr, errstr_size);
    if (e != LW_OK)
        return e;
    n16 = (uint16_t)n; /* n <= LW_CODEC_MAX_EVENT */
    memcpy(b->data + b->used, &opaque, 8);
    memcpy(b->data + b->used + 8, &n16, 2);
    memcpy(b->data + b->used + 10, ev->borrower_id, LW_BORROWER_ID_LEN);
    b->used += LW_ENTRY_HDR + n;
    return LW_OK;
}

/* Sender: an event librdkafka would not take goes to the rejects file as
 * JSON decoded from its encoding (the input line stayed with the reader). */
static void lw_pipe_refused(lw_jsonl_t *j, uint64_t opaque, const unsigned char *payload, size_t n,
                            const char *reason)
{
    char derr[200];
    lw_event_t ev;
    bool ok = lw_codec_decode_event(j->pipe->dec, payload, n, &ev, derr, sizeof derr) == LW_OK;

    atomic_fetch_add(&j->enqueue_failed, 1);
    lw_reject_event(j, opaque, "produce", reason, ok ? &ev : NULL);
}

/* Sender: enqueues every published block until the reader is done, serving
 * delivery reports while it waits. */
static void lw_pipe_drain(lw_jsonl_t *j, lw_producer_t *p)
{
    lw_pipe_t *q = j->pipe;
    char err[400];

    for (;;) {
        lw_block_t *b;
        pthread_mutex_lock(&q->mu);
        while (q->count == 0 && !q->done) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += LW_PIPE_WAIT_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&q->ready, &q->mu, &ts) != 0 && q->count == 0) {
                pthread_mutex_unlock(&q->mu);
                lw_producer_poll(p, 0);
                pthread_mutex_lock(&q->mu);
            }
        }
        if (q->count == 0) { /* and done */
            pthread_mutex_unlock(&q->mu);
            return;
        }
        b = &q->ring[q->head];
        pthread_mutex_unlock(&q->mu);

        for (size_t off = 0; off < b->used;) {
            const unsigned char *e = b->data + off;
            uint64_t opaque;
            uint16_t n;
            memcpy(&opaque, e, 8);
            memcpy(&n, e + 8, 2);
            off += LW_ENTRY_HDR + n;
            if (lw_producer_send_encoded(p, (const char *)e + 10, e + LW_ENTRY_HDR, n,
                                         (void *)(uintptr_t)opaque, err, sizeof err) != LW_OK)
                lw_pipe_refused(j, opaque, e + LW_ENTRY_HDR, n, err);
        }

        pthread_mutex_lock(&q->mu);
        b->used = 0;
        q->head = (q->head + 1) % LW_PIPE_BLOCKS;
        q->count--;
        pthread_cond_signal(&q->space);
        pthread_mutex_unlock(&q->mu);
    }
}

/* One event line: parse, pseudonymise, validate, send. */
static void lw_jsonl_line(lw_jsonl_t *j, lw_producer_t *p, int idx, uint64_t lineno,
                          const char *line, size_t len)
{
    lw_event_t ev;
    lw_field_error_t ferr;
    char raw_id[LW_ID_MAX + 1], norm[LW_ID_MAX + 1], err[400];
    uint64_t opaque;
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
    if (!j->pipe && (j->opts.dry_run || !p)) {
        if (lw_event_validate(&ev, &ferr) != LW_OK) {
            j->sum.rejected++;
            lw_reject(j, idx, lineno, ferr.field, ferr.reason, line, len);
        }
        return;
    }
    opaque = lw_line_opaque(idx, lineno);
    e = j->pipe ? lw_pipe_put(j->pipe, &ev, opaque, err, sizeof err)
                : lw_producer_send(p, &ev, (void *)(uintptr_t)opaque, err, sizeof err);
    if (e == LW_ERR_VALIDATION) {
        j->sum.rejected++;
        lw_reject(j, idx, lineno, NULL, err, line, len); /* err is "field: reason" */
    } else if (e != LW_OK) {
        atomic_fetch_add(&j->enqueue_failed, 1);
        lw_reject(j, idx, lineno, "produce", err, line, len);
    }
}

/* Input lines come out of one big buffer: read(2) straight into it and
 * memchr for the newline, instead of getline() copying each line out of
 * stdio's buffer. read() returns whatever a pipe has, so a live feed on stdin
 * is still handled line by line as it arrives. A line longer than
 * LW_LINE_MAX is not kept: once that many bytes without a newline are in
 * the buffer they are dropped, and so is the rest of the line as it is read,
 * so memory stays bounded by a line without end (a 512 MB line once took
 * 1.1 GB). */
#define LW_READ_BUF (1 << 20)

typedef struct lw_linebuf {
    char *buf;
    size_t cap, start, end; /* unread bytes are buf[start..end) */
    size_t scanned;         /* buf[start..scanned) holds no newline */
    bool eof;
    bool skipping;    /* inside a line longer than LW_LINE_MAX: dropping it */
    uint64_t skipped; /* bytes of that line dropped so far */
    lw_pipe_t *pipe; /* published before each read(): a live feed must not wait in a block */
} lw_linebuf_t;

static size_t lw_len_add(uint64_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : (size_t)(a + b);
}

/* Next line without its '\n' (a last line may lack one). Returns 1 with a
 * line, 2 for a line longer than LW_LINE_MAX (dropped; *len its length, up to
 * SIZE_MAX), 0 at the end of input, -1 on a read error or out of memory
 * (errno). */
static int lw_next_line(int fd, lw_linebuf_t *b, const char **line, size_t *len)
{
    for (;;) {
        char *nl =
            b->scanned < b->end ? memchr(b->buf + b->scanned, '\n', b->end - b->scanned) : NULL;
        if (nl) {
            *line = b->buf + b->start;
            *len = (size_t)(nl - *line);
            b->start = b->scanned = (size_t)(nl - b->buf) + 1;
            if (b->skipping) {
                b->skipping = false;
                *len = lw_len_add(b->skipped, *len);
                *line = NULL;
                return 2;
            }
            return 1;
        }
        b->scanned = b->end;
        if (b->eof) {
            if (b->start == b->end && !b->skipping)
                return 0;
            *line = b->buf + b->start;
            *len = b->end - b->start;
            b->start = b->scanned = b->end;
            if (b->skipping) {
                b->skipping = false;
                *len = lw_len_add(b->skipped, *len);
                *line = NULL;
                return 2;
            }
            return 1;
        }
        if (b->end - b->start > LW_LINE_MAX + 1) { /* + 1: a CR before the newline */
            /* Too long to be an event: drop what we have, then the rest. */
            b->skipped = b->skipping ? b->skipped + (b->end - b->start) : b->end - b->start;
            b->skipping = true;
            b->start = b->scanned = b->end = 0;
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
        if (b->pipe)
            lw_pipe_publish(b->pipe);
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
        lw_jsonl_io_error(j);
        return;
    }
    lb.cap = LW_READ_BUF;
    lb.buf = malloc(lb.cap);
    lb.pipe = j->pipe;
    if (!lb.buf) {
        lw_error("reading %s: %s", lw_src_name(name), strerror(ENOMEM));
        lw_jsonl_io_error(j);
        if (!is_stdin)
            close(fd);
        return;
    }
    while (!lw_stop_requested()) {
        size_t len, k;

        rc = lw_next_line(fd, &lb, &line, &len);
        if (rc == 2) {
            char why[96];
            lineno++;
            j->sum.read++;
            j->sum.rejected++;
            snprintf(why, sizeof why, "line longer than %d bytes (%zu%s bytes), not copied",
                     LW_LINE_MAX, len, len == SIZE_MAX ? " or more" : "");
            lw_reject(j, idx, lineno, NULL, why, NULL, 0);
            continue;
        }
        if (rc <= 0) {
            if (rc < 0 && !lw_stop_requested()) {
                lw_error("reading %s: %s", lw_src_name(name), strerror(errno));
                lw_jsonl_io_error(j);
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
        } else if (len > LW_LINE_MAX) { /* LW_LINE_MAX + 1 bytes, the last not a CR */
            j->sum.rejected++;
            lw_reject(j, idx, lineno, NULL, "line longer than 1048576 bytes, not copied", NULL, 0);
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

/* Every input, in order. */
static void lw_jsonl_reads(lw_jsonl_t *j, lw_producer_t *p)
{
    for (int i = 0; i < j->n_inputs && !lw_stop_requested(); i++)
        lw_jsonl_input(j, p, i);
}

static void *lw_jsonl_reader(void *arg)
{
    lw_jsonl_t *j = arg;
    lw_pipe_t *q = j->pipe;
    sigset_t stop;

    /* SIGINT/SIGTERM come here: a read() of stdin blocked in this thread
     * must return EINTR to notice the stop (the sender only ever waits
     * with a timeout). */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
    lw_jsonl_reads(j, j->p);
    pthread_mutex_lock(&q->mu);
    if (q->ring[q->w].used > 0)
        q->count++;
    q->done = true;
    pthread_cond_signal(&q->ready);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

static void lw_pipe_free(lw_pipe_t *q)
{
    if (!q)
        return;
    lw_codec_destroy(q->enc);
    lw_codec_destroy(q->dec);
    pthread_cond_destroy(&q->ready);
    pthread_cond_destroy(&q->space);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* Starts the reader thread; false (nothing started) if it cannot, and the
 * caller reads on its own thread instead. */
static bool lw_pipe_start(lw_jsonl_t *j, lw_producer_t *p)
{
    lw_pipe_t *q = calloc(1, sizeof *q);
    char err[256];
    sigset_t stop, old;
    int rc;

    if (!q)
        return false;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->ready, NULL);
    pthread_cond_init(&q->space, NULL);
    q->enc = lw_codec_new(err, sizeof err);
    q->dec = lw_codec_new(err, sizeof err);
    if (!q->enc || !q->dec) {
        lw_pipe_free(q);
        return false;
    }
    j->pipe = q;
    j->p = p;
    /* The reader unblocks them again: only it gets the stop signals. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, &old);
    rc = pthread_create(&j->reader, NULL, lw_jsonl_reader, j);
    if (rc != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        j->pipe = NULL;
        lw_pipe_free(q);
        lw_warn("reader thread: %s; reading on this thread", strerror(rc));
        return false;
    }
    j->sigmask = old;
    return true;
}

static void lw_pipe_stop(lw_jsonl_t *j)
{
    pthread_join(j->reader, NULL);
    pthread_sigmask(SIG_SETMASK, &j->sigmask, NULL);
    lw_pipe_free(j->pipe);
    j->pipe = NULL;
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

    if (p && !j->opts.dry_run && lw_pipe_start(j, p)) {
        lw_pipe_drain(j, p); /* until the reader thread is done */
        lw_pipe_stop(j);
    } else {
        lw_jsonl_reads(j, p);
    }
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
        j->sum.failed = st.failed + atomic_load(&j->enqueue_failed);
    } else {
        j->sum.failed = atomic_load(&j->enqueue_failed);
    }
    lw_rejects_close(j);
    if (sum)
        *sum = j->sum;
}

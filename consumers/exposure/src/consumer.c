/*
 * consumer.c - loanwire-exposure's loop: a Kafka consumer-group member that
 * applies each poll batch to Redis in one flush (reads, apply, one write),
 * publishes alerts and dead letters, and stores a partition's offset only
 * after Redis (and, for alerts and dead letters, the broker) acknowledged
 * everything below it. Two batches are in the store at a time: the next one
 * is read and applied while Redis executes the write of the one before
 * ("A batch goes through three steps" below).
 *
 * Latency: a batch is whatever the first poll returned plus what is already
 * queued (never waits to fill --batch). The broker's acknowledgement of a
 * batch's alerts and dead letters is not waited for before the next poll:
 * each batch leaves an in-flight record (its offsets and how many deliveries
 * are pending) in a FIFO, and offsets are stored from the head of the FIFO
 * once its deliveries are all acknowledged, so they still trail Redis and
 * delivery. Revocation and stopping drain the FIFO first. One exception
 * keeps the alert guarantee: a batch whose write would change the alerts of
 * a borrower with an alert still unacknowledged waits for it before writing
 * to Redis (the store asks, once the batch is applied in memory); otherwise
 * a crash could lose an alert raised in one batch and overwritten in the
 * next (a redelivered trigger re-publishes only the alert Redis still holds,
 * open or as the last cleared "~rule"). A batch that leaves such a
 * borrower's alerts alone does not wait.
 *
 * Ownership: on assignment each partition gets a fresh epoch (INCR of
 * lw:epoch:<topic>:<p>) that every write carries; a FENCED answer means
 * someone newer may own the partition, so its in-flight events are dropped
 * uncommitted and its epoch key is read again ("Fences" below): a key still
 * at our epoch means the key went back (a restored Redis, lost epoch keys),
 * not a newer owner, and we take an epoch above the stamps and read again
 * from the last stored offsets; a key that moved on means a newer owner, and
 * the rebalance must take the partition from us within --stall-timeout, or
 * we exit non-zero rather than hold it unprocessed. On revocation the collected batch is applied
 * and the offsets committed before the partitions are let go (unless they were lost, e.g. after
 * max.poll.interval.ms, in which case the batch is dropped). Redis or Kafka away: back off (capped,
 * logged) and retry the same step of the same batch; nothing is committed meanwhile.
 * consumers/README.md explains why this gives exactly-once effect.
 *
 * Recorded inquiries (issue 20): loanwire-query keys each CreditInquiry by
 * borrower_id with the loan events' partitioner, and the inquiries topic
 * has as many partitions as the events topic (checked at start), so a
 * borrower's inquiries are in partition p of the inquiries topic when its
 * events are in partition p of the events topic. The group subscribes to
 * the events topic only; whoever is assigned events partition p also
 * assigns itself inquiries partition p ("Inquiries" below). Both go through
 * the same batches under events partition p's epoch and writer, so one
 * owner, one fence, one sequence of writes per borrower, as before; the
 * inquiries' offsets are stored and committed beside the events'.
 */
#include "exposure_int.h"
#include "obs_int.h"

#include "loanwire/codec.h"
#include "loanwire/conf.h"
#include "loanwire/hash.h"
#include "loanwire/id.h"
#include "loanwire/json.h"
#include "loanwire/latency.h"
#include "loanwire/log.h"
#include "loanwire/validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PARTS         4096
#define BACKOFF_MAX_MS    5000
#define INFLIGHT_MAX      64  /* batches applied to Redis whose deliveries may be pending */
#define CAUGHT_UP_IDLE_MS 100 /* --until-caught-up: quiet this long before checking the lag */

typedef struct part_state {
    bool owned, fenced, reset_done;
    bool recheck; /* fenced since its epoch key was last read */
    int64_t epoch;
    int64_t next_offset; /* next offset to apply, -1 unknown */
    int64_t first_seen;  /* first offset polled since the assignment, -1 none */
    int64_t lag;         /* -1 unknown */
    int64_t fenced_ms;   /* lw_mono_ms() when it was found fenced */
    int64_t inq_next;    /* inquiries partition p: next offset to apply, -1 unknown */
    int64_t inq_first;   /* inquiries partition p: first offset polled, -1 none */
    int64_t fence_above; /* the newest stamp epoch that refused it (0: the epoch key moved) */
} part_state_t;

/* A batch applied to Redis whose offsets wait for its alerts and dead letters
 * (and for every earlier batch) to be acknowledged by the broker. */
typedef struct inflight {
    uint64_t seq;                          /* delivery reports carry it as opaque */
    int pending;                           /* deliveries not yet reported */
    bool applied;                          /* Redis acknowledged the batch */
    rd_kafka_topic_partition_list_t *offs; /* next offset per touched partition */
    uint64_t *alerted;                     /* hashes of the borrower ids of its alerts */
    size_t nalerted, alerted_cap;
} inflight_t;

/* the counters /metrics serves (obs.c): written there once per loop turn */
typedef lw_obs_counts_t counters_t;

/* One poll batch, from the poll to its results. */
typedef struct batch {
    rd_kafka_message_t **msg;
    size_t n;
    lw_event_t *ev;   /* ev[i] decoded from msg[i] when ok[i] */
    lw_inquiry_t *iq; /* iq[i] instead when is_inq[i]: msg[i] is from the inquiries topic */
    bool *is_inq;
    bool *ok;       /* msg[i] decoded and valid */
    int64_t now_ms; /* the clock its events were validated against: one read a batch
                     * (a clock_gettime per event was 1.8 % of the consumer's CPU) */
    bool *used;     /* msg[i] was counted (its partition was ours at launch) */
    size_t *idx;    /* store entry -> msg index */
    size_t nev;     /* store entries */
    lw_apply_result_t *results;
    lw_flush_t *flush; /* the store's, from its begin to its end */
    uint64_t seq;      /* its in-flight record */
    uint64_t failed0;  /* produce failures before it */
} batch_t;

typedef struct exp_ctx {
    const lw_exposure_conf_t *conf;
    rd_kafka_t *rk, *prod;
    lw_store_t *store;
    lw_codec_t *codec;
    lw_rules_t *rules;
    char consumer_id[128];
    /* two batch buffers: the one the poll fills (then staged in the store)
     * and the one whose write Redis executes meanwhile (NULL when none) */
    batch_t bufs[2];
    batch_t *fill, *staged, *fly;
    part_state_t parts[MAX_PARTS];
    counters_t c;
    bool fatal;
    bool closing; /* rd_kafka_consumer_close() runs: assignments are let go */
    char fatal_msg[512];
    int64_t last_msg_ms;
    int64_t stalled_ms;       /* since when lag stood while nothing was consumed; 0 not */
    uint64_t consumed_at_lag; /* x->c.consumed at the last lag check */
    bool ever_assigned;
    int n_owned;                       /* partitions of the events topic we own now */
    lw_hist_t *lat_state, *lat_alert;  /* --latency-out only */
    inflight_t inflight[INFLIGHT_MAX]; /* FIFO, slot = seq % INFLIGHT_MAX */
    uint64_t if_head, if_tail;         /* seqs [if_head, if_tail) are in flight */
    rd_kafka_topic_t *warm[2];         /* alerts and dead-letter topics, looked up early */
    rd_kafka_topic_t *events; /* the consumer's topic, its leaders known before the assignment */
    uint64_t *pend_set;       /* open-addressing set of alerted borrowers still unacknowledged */
    const char *inq_topic;    /* the inquiries topic read beside the events ("" none) */
    size_t pend_cap;
    lw_obs_t *obs; /* --metrics-listen only */
    lw_mhttp_t *http;
} exp_ctx_t;

void lw_exposure_conf_init(lw_exposure_conf_t *c)
{
    memset(c, 0, sizeof *c);
    c->brokers = lw_conf_default_bootstrap();
    c->group = "loanwire-exposure";
    c->topic = LW_TOPIC_EVENTS;
    c->alerts_topic = LW_TOPIC_ALERTS;
    c->dlq_topic = LW_TOPIC_DEAD_LETTERS;
    c->inquiries_topic = NULL; /* LW_TOPIC_INQUIRIES beside the default events topic */
    c->redis_url = lw_conf_default_redis();
    c->status_every_s = 5;
    c->stall_s = 30;
    c->batch_max = 0; /* the store's: lw_store_batch_default() */
    lw_script_opts_init(&c->script);
}

static void backoff_sleep(int *ms)
{
    struct timespec ts = {*ms / 1000, (long)(*ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    *ms = *ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *ms * 2;
}

/* ---- Producing alerts and dead letters ------------------------------------ */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    exp_ctx_t *x = opaque;
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    inflight_t *f = &x->inflight[seq % INFLIGHT_MAX];
    (void)rk;
    if (seq >= x->if_head && seq < x->if_tail && f->seq == seq)
        f->pending--;
    if (m->err) {
        /* message.timeout.ms is 0: only a permanent error ends here; the
         * batch's offsets must never be stored */
        x->c.produce_failed++;
        lw_error("delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
                 rd_kafka_err2str(m->err));
        x->fatal = true;
        snprintf(x->fatal_msg, sizeof x->fatal_msg,
                 "alerts or dead letters not acknowledged by the broker; offsets not committed");
    }
}

static uint64_t borrower_hash(const char *id)
{
    uint64_t h = lw_hash_str(id);
    return h ? h : 1; /* 0 is kept for "empty" */
}

/* A delivery's opaque: the in-flight record (batch) it counts on. */
static void *inflight_opaque(uint64_t rec)
{
    return (void *)(uintptr_t)rec;
}

static void produce_dlq(exp_ctx_t *x, uint64_t rec, const rd_kafka_message_t *m, const char *reason)
{
    rd_kafka_headers_t *src = NULL, *h;
    if (rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR && src)
        h = rd_kafka_headers_copy(src);
    else
        h = rd_kafka_headers_new(4);
    char part[16], off[24];
    snprintf(part, sizeof part, "%" PRId32, m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    rd_kafka_header_add(h, "lw-error", -1, reason, -1);
    rd_kafka_header_add(h, "lw-source-topic", -1, rd_kafka_topic_name(m->rkt), -1);
    rd_kafka_header_add(h, "lw-source-partition", -1, part, -1);
    rd_kafka_header_add(h, "lw-source-offset", -1, off, -1);
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            x->prod, RD_KAFKA_V_TOPIC(x->conf->dlq_topic), RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_HEADERS(h),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(inflight_opaque(rec)),
            RD_KAFKA_V_END);
        if (!err)
            break;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(x->prod, 100);
            continue;
        }
        rd_kafka_headers_destroy(h);
        x->fatal = true;
        snprintf(x->fatal_msg, sizeof x->fatal_msg, "dead-letter produce: %s",
                 rd_kafka_err2str(err));
        return;
    }
    x->inflight[rec % INFLIGHT_MAX].pending++;
    x->c.dead_letters++;
    lw_warn("dead letter %s [%" PRId32 "] @%" PRId64 ": %s", rd_kafka_topic_name(m->rkt),
            m->partition, m->offset, reason);
}

static void produce_alert(exp_ctx_t *x, uint64_t rec, const lw_alert_t *al)
{
    unsigned char buf[LW_CODEC_MAX_ALERT];
    size_t n;
    if (lw_codec_encode_alert(x->codec, al, buf, sizeof buf, &n) != LW_OK) {
        x->c.produce_failed++;
        lw_error("alert %s does not encode", al->alert_id);
        return;
    }
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(x->prod, RD_KAFKA_V_TOPIC(x->conf->alerts_topic),
                              RD_KAFKA_V_KEY(al->borrower_id, strlen(al->borrower_id)),
                              RD_KAFKA_V_VALUE(buf, n), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_OPAQUE(inflight_opaque(rec)), RD_KAFKA_V_END);
        if (!err)
            break;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(x->prod, 100);
            continue;
        }
        x->fatal = true;
        snprintf(x->fatal_msg, sizeof x->fatal_msg, "alert produce: %s", rd_kafka_err2str(err));
        return;
    }
    inflight_t *f = &x->inflight[rec % INFLIGHT_MAX];
    f->pending++;
    uint64_t *na = lw_array_grow(f->alerted, &f->alerted_cap, f->nalerted + 1, sizeof *na, 16);
    if (!na) {
        x->fatal = true;
        snprintf(x->fatal_msg, sizeof x->fatal_msg, "out of memory");
        return;
    }
    f->alerted = na;
    f->alerted[f->nalerted++] = borrower_hash(al->borrower_id);
    for (size_t i = 0; i < lw_rules_count(x->rules); i++)
        if (!strcmp(lw_rules_get(x->rules, i)->id, al->rule_id))
            x->c.alerts_by_rule[i]++;
    x->c.alerts++;
}

/* ---- In-flight batches --------------------------------------------------- */

/* Opens the record of the batch being applied; the caller made room. */
static inflight_t *inflight_open(exp_ctx_t *x)
{
    inflight_t *f = &x->inflight[x->if_tail % INFLIGHT_MAX];
    f->seq = x->if_tail++;
    f->pending = 0;
    f->applied = false;
    f->nalerted = 0;
    if (f->offs)
        rd_kafka_topic_partition_list_destroy(f->offs);
    f->offs = NULL;
    return f;
}

/* Forgets in-flight batches without storing their offsets (fatal error,
 * lost partitions): what they hold is redelivered to the next owner. */
static void inflight_drop(exp_ctx_t *x)
{
    for (; x->if_head < x->if_tail; x->if_head++) {
        inflight_t *f = &x->inflight[x->if_head % INFLIGHT_MAX];
        if (f->offs)
            rd_kafka_topic_partition_list_destroy(f->offs);
        f->offs = NULL;
    }
}

static void inflight_free(exp_ctx_t *x)
{
    inflight_drop(x);
    for (int i = 0; i < INFLIGHT_MAX; i++)
        free(x->inflight[i].alerted);
    free(x->pend_set);
}

/* Stores the offsets of the completed batches at the head of the FIFO: the
 * ones Redis acknowledged whose deliveries were all acknowledged. In order,
 * so a partition's stored offset never passes a batch still waiting. */
static void inflight_settle(exp_ctx_t *x)
{
    rd_kafka_poll(x->prod, 0); /* serve delivery reports */
    while (!x->fatal && x->if_head < x->if_tail) {
        inflight_t *f = &x->inflight[x->if_head % INFLIGHT_MAX];
        if (!f->applied || f->pending > 0)
            return;
        rd_kafka_topic_partition_list_t *offs = f->offs;
        if (offs) {
            /* a partition fenced or let go meanwhile keeps its last stored offset */
            int k = 0;
            for (int i = 0; i < offs->cnt; i++) {
                int32_t p = offs->elems[i].partition;
                if (x->parts[p].fenced || !x->parts[p].owned)
                    continue;
                if (strcmp(offs->elems[i].topic, x->conf->topic))
                    x->parts[p].inq_next = offs->elems[i].offset; /* the inquiries topic */
                else
                    x->parts[p].next_offset = offs->elems[i].offset;
                offs->elems[k++] = offs->elems[i];
            }
            offs->cnt = k;
            if (k > 0) {
                rd_kafka_resp_err_t err = rd_kafka_offsets_store(x->rk, offs);
                if (err)
                    lw_warn("offsets_store: %s", rd_kafka_err2str(err));
            }
            rd_kafka_topic_partition_list_destroy(offs);
            f->offs = NULL;
        }
        x->if_head++;
    }
}

/* Waits until every in-flight batch is settled (before a commit, a
 * revocation, or to make room). false if that failed or was given up. */
static bool inflight_wait(exp_ctx_t *x, uint64_t upto)
{
    int64_t t0 = lw_mono_ms(), warned = 0;
    inflight_settle(x);
    while (!x->fatal && x->if_head < upto) {
        rd_kafka_flush(x->prod, 10); /* sends at once, whatever linger.ms says */
        inflight_settle(x);
        int64_t waited = lw_mono_ms() - t0;
        if (waited - warned > 10000) {
            warned = waited;
            lw_warn("waiting %" PRId64 " s for the broker to acknowledge %d alerts/dead letters",
                    waited / 1000, rd_kafka_outq_len(x->prod));
        }
        if (lw_stop_requested() && waited > 30000) {
            x->fatal = true;
            snprintf(x->fatal_msg, sizeof x->fatal_msg,
                     "alerts or dead letters not acknowledged by the broker; offsets not "
                     "committed");
        }
    }
    return !x->fatal && x->if_head >= upto;
}

/*
 * Whether one of the borrowers (whose alerts the batch with record seq `cur`
 * is about to change) has an alert of an earlier batch not yet acknowledged.
 * Builds a set of those borrowers, then probes it with each borrower.
 */
static bool alert_conflict(exp_ctx_t *x, uint64_t cur, const char *const *borrowers, size_t n)
{
    size_t na = 0;
    for (uint64_t s = x->if_head; s < cur; s++) {
        const inflight_t *f = &x->inflight[s % INFLIGHT_MAX];
        if (f->pending > 0)
            na += f->nalerted;
    }
    if (na == 0)
        return false;
    size_t cap = 64;
    while (cap < 2 * na)
        cap *= 2;
    if (cap > x->pend_cap) {
        uint64_t *ns = realloc(x->pend_set, cap * sizeof *ns);
        if (!ns)
            return true; /* cannot tell: wait, which is always safe */
        x->pend_set = ns;
        x->pend_cap = cap;
    }
    memset(x->pend_set, 0, cap * sizeof *x->pend_set);
    for (uint64_t s = x->if_head; s < cur; s++) {
        const inflight_t *f = &x->inflight[s % INFLIGHT_MAX];
        for (size_t i = 0; f->pending > 0 && i < f->nalerted; i++) {
            size_t j = f->alerted[i] & (cap - 1);
            while (x->pend_set[j] && x->pend_set[j] != f->alerted[i])
                j = (j + 1) & (cap - 1);
            x->pend_set[j] = f->alerted[i];
        }
    }
    for (size_t k = 0; k < n; k++) {
        uint64_t h = borrower_hash(borrowers[k]);
        for (size_t j = h & (cap - 1); x->pend_set[j]; j = (j + 1) & (cap - 1))
            if (x->pend_set[j] == h)
                return true;
    }
    return false;
}

/* lw_store_alerts_cb: before the store writes a batch (the flush's opaque)
 * that changes these borrowers' alerts, their earlier alerts must be
 * acknowledged. */
static lw_err_t store_alerts_cb(void *opaque, void *flush_opaque, const char *const *borrowers,
                                size_t n, char *errstr, size_t errstr_size)
{
    exp_ctx_t *x = opaque;
    const batch_t *b = flush_opaque;
    if (!alert_conflict(x, b->seq, borrowers, n) || inflight_wait(x, b->seq))
        return LW_OK;
    snprintf(errstr, errstr_size, "%s",
             x->fatal_msg[0] ? x->fatal_msg
                             : "alerts or dead letters not acknowledged by the broker; offsets "
                               "not committed");
    return LW_ERR_KAFKA;
}

/* ---- Applying a batch ----------------------------------------------------- */

/* ---- Inquiries ---------------------------------------------------------------- */

/* Whether m is from the inquiries topic (else the events topic). */
static bool is_inquiry_msg(const exp_ctx_t *x, const rd_kafka_message_t *m)
{
    return x->inq_topic && *x->inq_topic && !strcmp(rd_kafka_topic_name(m->rkt), x->inq_topic);
}

/* A CreditInquiry and what the state needs of it. */
static const char *decode_inquiry(exp_ctx_t *x, const rd_kafka_message_t *m, lw_inquiry_t *iq,
                                  char *why, size_t cap)
{
    char es[256];
    lw_err_t err = lw_codec_decode_inquiry(x->codec, m->payload, m->len, iq, es, sizeof es);
    if (err) {
        snprintf(why, cap, "decode: %s: %s", lw_err2str(err), es);
        return why;
    }
    if (!lw_borrower_id_is_valid(iq->borrower_id)) {
        snprintf(why, cap, "validation: borrower_id: not 22 base64url characters");
        return why;
    }
    if (!iq->inquiry_id[0] || !iq->institution_id[0]) {
        snprintf(why, cap, "validation: %s: empty",
                 iq->inquiry_id[0] ? "institution_id" : "inquiry_id");
        return why;
    }
    if (iq->inquired_at < 0 || iq->inquired_at >= LW_STATE_NUM_MAX) {
        snprintf(why, cap, "validation: inquired_at: %" PRId64 " is out of range", iq->inquired_at);
        return why;
    }
    return NULL;
}

/* The assignment the group gave (events partitions) and, beside each, the
 * same partition of the inquiries topic: a new list the caller destroys. */
static rd_kafka_topic_partition_list_t *with_inquiries(exp_ctx_t *x,
                                                       const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
    const char *it = x->inq_topic;
    if (!it || !*it)
        return l;
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        /* a partition read from the beginning has its inquiries read so too;
         * else the committed offset (auto.offset.reset earliest) */
        rd_kafka_topic_partition_list_add(l, it, tp->partition)->offset =
            tp->offset == RD_KAFKA_OFFSET_BEGINNING ? RD_KAFKA_OFFSET_BEGINNING
                                                    : RD_KAFKA_OFFSET_INVALID;
        if (tp->partition >= 0 && tp->partition < MAX_PARTS) {
            x->parts[tp->partition].inq_next = -1;
            x->parts[tp->partition].inq_first = -1;
        }
    }
    /* where they start: their committed offsets (the lag and a rewind need them) */
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = parts->cnt; i < l->cnt; i++)
        if (l->elems[i].offset != RD_KAFKA_OFFSET_BEGINNING && l->elems[i].partition >= 0 &&
            l->elems[i].partition < MAX_PARTS)
            rd_kafka_topic_partition_list_add(c, it, l->elems[i].partition);
    if (c->cnt && rd_kafka_committed(x->rk, c, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < c->cnt; i++)
            if (c->elems[i].offset >= 0)
                x->parts[c->elems[i].partition].inq_next = c->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(c);
    return l;
}

/* Refuses to start when the inquiries topic exists with another partition
 * count than the events topic: a borrower's inquiries would then land in
 * another partition than its events, under another owner. An inquiries
 * topic not there yet is only warned about (loanwire-topics creates it). */
static bool inquiries_check(exp_ctx_t *x, char *errstr, size_t errstr_size)
{
    const char *it = x->inq_topic;
    int cnt[2] = {-1, -1};
    const char *names[2] = {x->conf->topic, it};
    if (!it || !*it)
        return true;
    for (int k = 0; k < 2; k++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(x->rk, names[k], NULL);
        if (rkt && rd_kafka_metadata(x->rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            md->topic_cnt == 1 && !md->topics[0].err)
            cnt[k] = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (rkt)
            rd_kafka_topic_destroy(rkt);
    }
    if (cnt[1] < 0) {
        lw_warn("inquiries topic %s not found: no inquiry is counted until it exists "
                "(loanwire-topics create --inquiries-topic %s)",
                it, it);
        return true;
    }
    if (cnt[0] >= 0 && cnt[0] != cnt[1]) {
        snprintf(errstr, errstr_size,
                 "inquiries topic %s has %d partitions and events topic %s %d: they must have "
                 "as many, so that a borrower's inquiries land in the partition of its events "
                 "(loanwire-topics creates them so)",
                 it, cnt[1], x->conf->topic, cnt[0]);
        return false;
    }
    return true;
}

static const char *decode(exp_ctx_t *x, const rd_kafka_message_t *m, lw_event_t *ev, int64_t now_ms,
                          char *why, size_t cap)
{
    char es[256];
    lw_field_error_t ferr;
    lw_err_t err = lw_codec_decode_event(x->codec, m->payload, m->len, ev, es, sizeof es);
    if (err) {
        snprintf(why, cap, "decode: %s: %s", lw_err2str(err), es);
        return why;
    }
    if (lw_event_validate_at(ev, now_ms, &ferr) != LW_OK) {
        snprintf(why, cap, "validation: %s: %s", ferr.field, ferr.reason);
        return why;
    }
    /* what the exposure model cannot sum exactly or meaningfully */
    if (strcmp(ev->currency, "CNY")) {
        snprintf(why, cap, "validation: currency: '%s' is not CNY (exposure sums CNY fen only)",
                 ev->currency);
        return why;
    }
    return NULL;
}

/* Event-to-state time of one applied event: Redis's acknowledgement of its
 * script call minus the producer's send time (header lw-sent-us). */
static void record_latency(exp_ctx_t *x, const rd_kafka_message_t *m, const lw_apply_result_t *r)
{
    rd_kafka_headers_t *hs = NULL;
    const void *v = NULL;
    size_t n = 0;
    if (rd_kafka_message_headers(m, &hs) != RD_KAFKA_RESP_ERR_NO_ERROR || !hs ||
        rd_kafka_header_get_last(hs, "lw-sent-us", &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || !v ||
        n == 0 || n > 20)
        return;
    int64_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        char c = ((const char *)v)[i];
        if (c < '0' || c > '9')
            return;
        sent = sent * 10 + (c - '0');
    }
    lw_hist_record(x->lat_state, r->ack_us - sent);
    if (r->n_alerts > 0)
        lw_hist_record(x->lat_alert, r->ack_us - sent);
}

/* Writes the --latency-out file: {"state":{...},"alert":{...}}. */
static void write_latency(exp_ctx_t *x)
{
    char a[256], b[256];
    if (lw_hist_json(x->lat_state, a, sizeof a) < 0 || lw_hist_json(x->lat_alert, b, sizeof b) < 0)
        return;
    FILE *f = fopen(x->conf->latency_out, "w");
    if (!f || fprintf(f, "{\"state\":%s,\"alert\":%s}\n", a, b) < 0 || fclose(f) != 0) {
        lw_error("--latency-out %s: cannot write", x->conf->latency_out);
        return;
    }
    lw_info("latency: %" PRIu64 " events (p99 %" PRId64 " us), %" PRIu64
            " with alerts, written to %s",
            lw_hist_count(x->lat_state), lw_hist_percentile(x->lat_state, 99),
            lw_hist_count(x->lat_alert), x->conf->latency_out);
}

/*
 * A batch goes through three steps, so that the consumer applies one batch
 * while Redis executes the write of the one before:
 *
 *   prepare  decode and validate the polled messages (no Redis, no Kafka);
 *   launch   dead-letter the bad ones, queue the rest in the store and stage
 *            them (lw_store_flush_begin: reads, apply, the MULTI's body);
 *   land     end the write in flight (read its replies, redo it if needed),
 *            publish its alerts and record its offsets to store once
 *            delivered; then commit the staged batch, whose write goes out.
 *
 * The loop runs prepare(N+1), launch(N+1), land(N): N+1 is read and applied
 * while Redis executes N's write, and its write is sent only after N's
 * succeeded and N's alerts were published. A batch's record in the
 * in-flight FIFO is marked applied only when it lands, so its offsets never
 * run ahead of Redis.
 */

static void batch_prepare(exp_ctx_t *x, batch_t *b)
{
    char why[512];
    b->now_ms = lw_now_ms();
    for (size_t i = 0; i < b->n; i++) {
        b->is_inq[i] = is_inquiry_msg(x, b->msg[i]);
        b->ok[i] = b->is_inq[i] ? !decode_inquiry(x, b->msg[i], &b->iq[i], why, sizeof why)
                                : !decode(x, b->msg[i], &b->ev[i], b->now_ms, why, sizeof why);
    }
}

typedef enum store_step { STEP_BEGIN, STEP_COMMIT, STEP_END } store_step_t;

static lw_err_t store_step(exp_ctx_t *x, store_step_t step, batch_t *b, char *es, size_t es_size)
{
    switch (step) {
    case STEP_BEGIN:
        return lw_store_flush_begin(x->store, b->results, b, &b->flush, es, es_size);
    case STEP_COMMIT:
        return lw_store_flush_commit(x->store, b->flush, es, es_size);
    case STEP_END:
        return lw_store_flush_end(x->store, b->flush, es, es_size);
    }
    return LW_ERR_INVALID_ARG;
}

/* Runs a store step, and after a transient error reconnects and runs it
 * again (the store redoes it from the read) until Redis takes it, the error
 * is fatal, or we are stopped while Redis is away. */
static bool store_run(exp_ctx_t *x, store_step_t step, batch_t *b)
{
    char es[512];
    int backoff = 100;
    lw_err_t err = store_step(x, step, b, es, sizeof es);
    while (err != LW_OK) {
        if (err != LW_ERR_TRANSIENT) {
            x->fatal = true;
            snprintf(x->fatal_msg, sizeof x->fatal_msg, "%s", es);
            return false;
        }
        lw_warn("Redis unavailable (%s); retrying the batch of %zu in %d ms", es, b->nev, backoff);
        if (lw_stop_requested() && backoff >= BACKOFF_MAX_MS)
            goto stopped;
        backoff_sleep(&backoff);
        while (lw_store_reconnect(x->store, es, sizeof es) != LW_OK) {
            lw_warn("Redis reconnect: %s (next try in %d ms)", es, backoff);
            if (lw_stop_requested() && backoff >= BACKOFF_MAX_MS)
                goto stopped;
            backoff_sleep(&backoff);
        }
        lw_info("Redis reconnected; sending the batch again (repeats are absorbed)");
        err = store_step(x, step, b, es, sizeof es);
    }
    return true;
stopped:
    x->fatal = true;
    snprintf(x->fatal_msg, sizeof x->fatal_msg,
             "stopped while Redis was unavailable; nothing past the last acknowledged batch "
             "was committed");
    return false;
}

static void batch_release(batch_t *b)
{
    for (size_t i = 0; i < b->n; i++)
        rd_kafka_message_destroy(b->msg[i]);
    b->n = 0;
    b->nev = 0;
    b->flush = NULL;
}

/* ---- Fences ---------------------------------------------------------------- */

static void batch_drop(exp_ctx_t *x);

/* A write of partition p was refused: by its epoch key (stamp 0) or by a
 * borrower's fence stamp of the same topic and partition at a newer epoch. */
static void fence_note(exp_ctx_t *x, int32_t p, int64_t stamp)
{
    part_state_t *ps = &x->parts[p];
    if (!ps->fenced) {
        lw_warn("partition %" PRId32 " fenced (epoch %" PRId64 " is stale: %s %" PRId64
                "): dropping its in-flight events uncommitted, checking its epoch key",
                p, ps->epoch, stamp ? "a borrower's stamp holds epoch" : "its epoch key moved",
                stamp);
        ps->fenced = true;
        ps->recheck = true;
        ps->fenced_ms = lw_mono_ms();
        ps->fence_above = 0;
    }
    if (stamp > ps->fence_above)
        ps->fence_above = stamp;
}

/* Drops every batch not yet stored and reads each owned partition again from
 * its last stored offset (or the first it polled): what had landed in Redis
 * comes back as duplicates. For a partition whose epoch was raised. */
static void rewind_owned(exp_ctx_t *x)
{
    batch_drop(x);
    inflight_drop(x);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int32_t p = 0; p < MAX_PARTS; p++) {
        part_state_t *ps = &x->parts[p];
        int64_t at = ps->next_offset >= 0 ? ps->next_offset : ps->first_seen;
        if (ps->owned && at >= 0)
            rd_kafka_topic_partition_list_add(l, x->conf->topic, p)->offset = at;
        int64_t iat = ps->inq_next >= 0 ? ps->inq_next : ps->inq_first;
        if (ps->owned && iat >= 0 && x->inq_topic && *x->inq_topic)
            rd_kafka_topic_partition_list_add(l, x->inq_topic, p)->offset = iat;
    }
    rd_kafka_error_t *e = l->cnt ? rd_kafka_seek_partitions(x->rk, l, 10000) : NULL;
    if (e) {
        x->fatal = true;
        snprintf(x->fatal_msg, sizeof x->fatal_msg, "seek after an epoch raise: %s",
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    for (int i = 0; !x->fatal && i < l->cnt; i++) {
        if (l->elems[i].err) {
            x->fatal = true;
            snprintf(x->fatal_msg, sizeof x->fatal_msg, "seek partition %" PRId32 ": %s",
                     l->elems[i].partition, rd_kafka_err2str(l->elems[i].err));
        }
        lw_info("partition %" PRId32 ": reading again from offset %" PRId64, l->elems[i].partition,
                l->elems[i].offset);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Reads the epoch key of each newly fenced partition again. Still ours: the
 * key went back below the stamps (restored Redis, lost lw:epoch keys), so
 * it is raised above them and the partitions are read again. Moved on: a
 * newer owner; the rebalance takes the partition from us, and if it does not
 * within conf->stall_ms we stop with an error instead of stalling. */
static void fences_check(exp_ctx_t *x)
{
    char es[512];
    bool rewind = false;
    int64_t now = lw_mono_ms();
    for (int32_t p = 0; p < MAX_PARTS && !x->fatal; p++) {
        part_state_t *ps = &x->parts[p];
        if (!ps->owned || !ps->fenced)
            continue;
        if (ps->recheck) {
            bool ours = false;
            int64_t cur = 0, above = ps->fence_above > ps->epoch ? ps->fence_above : ps->epoch;
            if (lw_store_epoch_raise(x->store, x->conf->topic, p, ps->epoch, above, &ours, &cur, es,
                                     sizeof es) != LW_OK) {
                lw_warn("partition %" PRId32 ": reading its epoch key: %s (retrying)", p, es);
                continue;
            }
            ps->recheck = false;
            if (ours) {
                lw_warn("partition %" PRId32 ": its epoch key was still ours (%" PRId64
                        ") below a stamp of epoch %" PRId64 " (a restored Redis or lost "
                        "lw:epoch keys), not a newer owner: raised to %" PRId64,
                        p, ps->epoch, ps->fence_above, cur);
                ps->epoch = cur;
                ps->fenced = false;
                rewind = true;
                continue;
            }
            lw_warn("partition %" PRId32 ": epoch %" PRId64 " owns it now (ours %" PRId64
                    "): waiting for the rebalance to take it from us (at most %d s)",
                    p, cur, ps->epoch, x->conf->stall_s);
        }
        if (x->conf->stall_s > 0 && now - ps->fenced_ms > x->conf->stall_s * 1000LL) {
            x->fatal = true;
            snprintf(x->fatal_msg, sizeof x->fatal_msg,
                     "partition %" PRId32 " fenced for %d s but still assigned to us (our epoch "
                     "%" PRId64 ", newest stamp epoch %" PRId64 "): stopping rather than "
                     "holding it unprocessed; a restart takes a fresh epoch",
                     p, x->conf->stall_s, ps->epoch, ps->fence_above);
        }
    }
    if (rewind && !x->fatal)
        rewind_owned(x);
}

/* Settles the results of the batch whose write ended. */
static void batch_settle(exp_ctx_t *x, batch_t *b)
{
    int64_t store_off[MAX_PARTS], inq_off[MAX_PARTS];
    bool touched[MAX_PARTS], inq_touched[MAX_PARTS];

    for (size_t k = 0; k < b->nev; k++) {
        const lw_apply_result_t *r = &b->results[k];
        int32_t p = b->msg[b->idx[k]]->partition;
        bool inq = b->is_inq[b->idx[k]];
        switch (r->code) {
        case LW_APPLY_APPLIED:
            (*(inq ? &x->c.inq_applied : &x->c.applied))++;
            break;
        case LW_APPLY_DUPLICATE:
            (*(inq ? &x->c.inq_duplicates : &x->c.duplicates))++;
            break;
        case LW_APPLY_OUT_OF_ORDER:
            x->c.out_of_order++;
            break;
        case LW_APPLY_FENCED:
            x->c.fenced++;
            fence_note(x, p, r->fence_epoch);
            break;
        case LW_APPLY_REFUSED:
            /* a limit per borrower or an overflow: never dropped silently;
             * the offset moves on once the broker has the dead letter */
            x->c.refused++;
            produce_dlq(x, b->seq, b->msg[b->idx[k]], r->reason);
            break;
        }
        if (r->code != LW_APPLY_FENCED)
            for (size_t a = 0; a < r->n_alerts; a++)
                produce_alert(x, b->seq, &r->alerts[a]);
        if (x->lat_state && r->code == LW_APPLY_APPLIED)
            record_latency(x, b->msg[b->idx[k]], r);
    }
    if (!x->fatal && x->c.produce_failed != b->failed0) {
        /* an alert did not encode */
        x->fatal = true;
        snprintf(x->fatal_msg, sizeof x->fatal_msg,
                 "alerts or dead letters not acknowledged by the broker; offsets not committed");
    }
    if (x->fatal)
        return;

    memset(touched, 0, sizeof touched);
    memset(inq_touched, 0, sizeof inq_touched);
    for (size_t i = 0; i < b->n; i++) {
        const rd_kafka_message_t *m = b->msg[i];
        if (!b->used[i])
            continue;
        bool *t = b->is_inq[i] ? inq_touched : touched;
        int64_t *off = b->is_inq[i] ? inq_off : store_off;
        if (!t[m->partition] || m->offset + 1 > off[m->partition]) {
            t[m->partition] = true;
            off[m->partition] = m->offset + 1;
        }
    }
    inflight_t *f = &x->inflight[b->seq % INFLIGHT_MAX];
    f->offs = rd_kafka_topic_partition_list_new(8);
    for (int32_t p = 0; p < MAX_PARTS; p++) {
        if ((!touched[p] && !inq_touched[p]) || x->parts[p].fenced || !x->parts[p].owned)
            continue;
        if (touched[p])
            rd_kafka_topic_partition_list_add(f->offs, x->conf->topic, p)->offset = store_off[p];
        if (inq_touched[p])
            rd_kafka_topic_partition_list_add(f->offs, x->inq_topic, p)->offset = inq_off[p];
    }
    f->applied = true;
}

/* Ends the write in flight and settles its batch, then commits the staged
 * batch: its write goes out and it becomes the one in flight. */
static void batch_land(exp_ctx_t *x)
{
    batch_t *b = x->fly;
    if (b) {
        x->fly = NULL;
        /* a redo inside the end asks store_alerts_cb about this batch (the
         * flush's opaque): it may wait for older batches' alerts, never for
         * its own record */
        if (store_run(x, STEP_END, b))
            batch_settle(x, b);
        batch_release(b);
        if (x->fatal)
            return;
        inflight_settle(x);
    }
    b = x->staged;
    if (b) {
        if (!store_run(x, STEP_COMMIT, b))
            return;
        x->staged = NULL;
        x->fly = b;
    }
    x->fill = x->fly == &x->bufs[0] ? &x->bufs[1] : &x->bufs[0];
}

/* Queues the prepared fill batch in the store and stages it. */
static void batch_launch(exp_ctx_t *x)
{
    batch_t *b = x->fill;
    const lw_exposure_conf_t *cf = x->conf;
    char why[512];

    if (x->fatal || b->n == 0)
        return;
    /* room for this batch's record: wait for the oldest if the FIFO is full */
    if (x->if_tail - x->if_head >= INFLIGHT_MAX && !inflight_wait(x, x->if_tail - INFLIGHT_MAX + 1))
        return;
    inflight_t *f = inflight_open(x);
    b->seq = f->seq;
    b->flush = NULL;
    b->failed0 = x->c.produce_failed;
    b->nev = 0;
    x->c.batches++;
    for (size_t i = 0; i < b->n; i++) {
        rd_kafka_message_t *m = b->msg[i];
        int32_t p = m->partition;
        b->used[i] = p >= 0 && p < MAX_PARTS && x->parts[p].owned && !x->parts[p].fenced;
        if (!b->used[i])
            continue;
        (*(b->is_inq[i] ? &x->c.inq_consumed : &x->c.consumed))++;
        if (!b->ok[i]) {
            produce_dlq(x, b->seq, m,
                        b->is_inq[i] ? decode_inquiry(x, m, &b->iq[i], why, sizeof why)
                                     : decode(x, m, &b->ev[i], b->now_ms, why, sizeof why));
            continue;
        }
        /* an inquiry goes under the writer and epoch of its events partition */
        if ((b->is_inq[i]
                 ? lw_store_append_inquiry(x->store, &b->iq[i], cf->topic, p, x->parts[p].epoch)
                 : lw_store_append(x->store, &b->ev[i], cf->topic, p, x->parts[p].epoch)) !=
            LW_OK) {
            x->fatal = true;
            snprintf(x->fatal_msg, sizeof x->fatal_msg, "out of memory");
            return;
        }
        b->idx[b->nev++] = i;
    }
    inflight_settle(x);
    if (store_run(x, STEP_BEGIN, b))
        x->staged = b;
}

/* Applies everything polled so far and waits for Redis (revocation, stop). */
static void batch_drain(exp_ctx_t *x)
{
    if (!x->fatal && x->fill->n > 0) {
        batch_prepare(x, x->fill);
        batch_launch(x);
    }
    if (!x->fatal)
        batch_land(x); /* the write in flight; the staged batch goes out */
    if (!x->fatal)
        batch_land(x); /* and ends */
}

/* Drops every batch unapplied (fatal error, lost partitions). */
static void batch_drop(exp_ctx_t *x)
{
    lw_store_discard(x->store);
    x->fly = x->staged = NULL;
    batch_release(&x->bufs[0]);
    batch_release(&x->bufs[1]);
    x->fill = &x->bufs[0];
}

/* ---- Rebalances ----------------------------------------------------------- */

static void on_assign(exp_ctx_t *x, rd_kafka_topic_partition_list_t *parts)
{
    char es[512];
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (tp->partition < 0 || tp->partition >= MAX_PARTS) {
            lw_error("partition %" PRId32 " is beyond %d: not handled", tp->partition, MAX_PARTS);
            continue;
        }
        part_state_t *ps = &x->parts[tp->partition];
        int backoff = 100;
        int64_t epoch = 0;
        while (lw_store_epoch_next(x->store, tp->topic, tp->partition, &epoch, es, sizeof es) !=
               LW_OK) {
            lw_warn("partition epoch: %s (retry in %d ms)", es, backoff);
            backoff_sleep(&backoff);
            if (lw_store_reconnect(x->store, es, sizeof es) != LW_OK)
                continue;
        }
        x->n_owned += !ps->owned;
        ps->owned = true;
        ps->fenced = ps->recheck = false;
        ps->epoch = epoch;
        ps->next_offset = -1;
        ps->first_seen = -1;
        ps->lag = -1;
        if (x->conf->from_beginning && !ps->reset_done) {
            tp->offset = RD_KAFKA_OFFSET_BEGINNING;
            ps->reset_done = true;
        }
    }
    /* where we start: the committed offset, unless reset to the beginning */
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    if (rd_kafka_committed(x->rk, c, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < c->cnt; i++) {
            int32_t p = c->elems[i].partition;
            if (p >= 0 && p < MAX_PARTS && parts->elems[i].offset != RD_KAFKA_OFFSET_BEGINNING &&
                c->elems[i].offset >= 0)
                x->parts[p].next_offset = c->elems[i].offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(c);
    x->ever_assigned = true;
    lw_info("assigned %d partition(s) of %s", parts->cnt, x->conf->topic);
}

/*
 * Rebalancing is incremental (partition.assignment.strategy=cooperative-sticky):
 * an assignment or a revocation names only the partitions that move, and the
 * others keep being fetched and applied across it, so a member joining or
 * leaving does not stop the group. Under the eager protocol (a group whose
 * -X sets another strategy) the lists are the whole assignment, as before.
 *
 * On revocation what we hold is applied and committed before the partitions
 * are let go, so their next owner starts after it (its fresh epoch would
 * fence a late write of ours anyway). Our batches mix partitions, so the
 * whole pipeline is drained, the kept partitions' events with the revoked
 * ones': applying them early is harmless, and the kept partitions go on at
 * once after the callback. Lost partitions (session or poll interval expired)
 * are dropped uncommitted: someone else may already own them.
 */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    exp_ctx_t *x = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *ke = NULL;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && x->closing) {
        /* A member that left while we close hands us its partitions; the
         * close revokes them at once. Neither an epoch nor the committed
         * offsets: rd_kafka_committed() inside the close never got its
         * answer and waited out its 10 s, twice (events and inquiries),
         * which held a 9 s catch-up of two consumers for 29 s. */
        rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_copy(parts);
        if (x->inq_topic && *x->inq_topic)
            for (int i = 0; i < parts->cnt; i++)
                rd_kafka_topic_partition_list_add(all, x->inq_topic, parts->elems[i].partition);
        if (coop)
            ke = rd_kafka_incremental_assign(rk, all);
        else
            rd_kafka_assign(rk, all);
        rd_kafka_topic_partition_list_destroy(all);
        if (ke) {
            lw_error("incremental assign: %s", rd_kafka_error_string(ke));
            rd_kafka_error_destroy(ke);
        }
        lw_info("assigned %d partition(s) of %s while closing: let go unread", parts->cnt,
                x->conf->topic);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(x, parts);
        /* the inquiries partitions p go with the events partitions p */
        rd_kafka_topic_partition_list_t *all = with_inquiries(x, parts);
        if (coop)
            ke = rd_kafka_incremental_assign(rk, all);
        else
            rd_kafka_assign(rk, all);
        rd_kafka_topic_partition_list_destroy(all);
        if (ke) {
            lw_error("incremental assign: %s", rd_kafka_error_string(ke));
            rd_kafka_error_destroy(ke);
        }
        return;
    }
    /* revoke: finish what we hold, commit, let go */
    if (rd_kafka_assignment_lost(rk)) {
        lw_warn("partitions lost (session or poll interval expired): dropping %zu in-flight "
                "events uncommitted",
                x->fill->n + (x->staged ? x->staged->n : 0) + (x->fly ? x->fly->n : 0));
        batch_drop(x);
        inflight_drop(x);
    } else {
        batch_drain(x);
        if (!x->fatal)
            inflight_wait(x, x->if_tail);
        if (!x->fatal) {
            rd_kafka_resp_err_t ce = rd_kafka_commit(rk, NULL, 0);
            if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET)
                lw_warn("commit on revoke: %s", rd_kafka_err2str(ce));
        }
    }
    batch_drop(x);
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition >= 0 && parts->elems[i].partition < MAX_PARTS) {
            x->n_owned -= x->parts[parts->elems[i].partition].owned;
            x->parts[parts->elems[i].partition].owned = false;
        }
    if (coop) {
        rd_kafka_topic_partition_list_t *all = rd_kafka_topic_partition_list_copy(parts);
        if (x->inq_topic && *x->inq_topic)
            for (int i = 0; i < parts->cnt; i++)
                rd_kafka_topic_partition_list_add(all, x->inq_topic, parts->elems[i].partition);
        ke = rd_kafka_incremental_unassign(rk, all);
        rd_kafka_topic_partition_list_destroy(all);
    } else
        rd_kafka_assign(rk, NULL);
    if (ke) {
        lw_error("incremental unassign: %s", rd_kafka_error_string(ke));
        rd_kafka_error_destroy(ke);
    }
    lw_info("revoked %d partition(s)%s", parts->cnt, coop ? " (incremental)" : "");
}

/*
 * Wakes librdkafka's group thread while we own nothing. Two consumers started
 * together often meet in the middle of a join: the first one's SyncGroup gets
 * REBALANCE_IN_PROGRESS, and librdkafka 2.0 sends the JoinGroup again only
 * when its group thread next wakes, which its 1 s timer did just too early
 * for the 1 s rejoin interval: the group formed after 2.02 s in 7 of 8 runs
 * of a 2M-event catch-up. Any request to the group thread wakes it, and the
 * assignment query is a local one; the group then formed after 1.03 s and the
 * catch-up took 7.32 s against 7.92 s on average.
 */
static void group_nudge(exp_ctx_t *x)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (!rd_kafka_assignment(x->rk, &a))
        rd_kafka_topic_partition_list_destroy(a);
}

/* ---- Status and metrics --------------------------------------------------- */

static int fenced_count(const exp_ctx_t *x)
{
    int n = 0;
    for (int32_t p = 0; p < MAX_PARTS; p++)
        n += x->parts[p].owned && x->parts[p].fenced;
    return n;
}

/* Lag that stands or grows while nothing is consumed is an alarm: the status
 * line and the metrics (stalled_s) say how long it has lasted. */
static void stall_watch(exp_ctx_t *x, int64_t lag, int64_t now)
{
    bool moving = x->c.consumed != x->consumed_at_lag;
    x->consumed_at_lag = x->c.consumed;
    if (lag <= 0 || moving)
        x->stalled_ms = 0;
    else if (!x->stalled_ms)
        x->stalled_ms = now;
}

/* The lag of inquiries partition p (read beside events partition p): 0
 * without an inquiries topic; clears *caught_up while some are unread. */
static int64_t inquiries_lag(exp_ctx_t *x, int32_t p, bool *caught_up)
{
    const char *it = x->inq_topic;
    int64_t lo = -1, hi = -1;
    if (!it || !*it)
        return 0;
    rd_kafka_get_watermark_offsets(x->rk, it, p, &lo, &hi);
    if (hi < 0)
        return 0; /* not fetched yet, or no such topic: nothing known to wait for */
    const part_state_t *ps = &x->parts[p];
    int64_t lag = ps->inq_next >= 0 ? (hi > ps->inq_next ? hi - ps->inq_next : 0)
                                    : (lo >= 0 && hi > lo ? hi - lo : 0);
    if (lag > 0)
        *caught_up = false;
    return lag;
}

static void update_lag(exp_ctx_t *x, int64_t *total, bool *caught_up)
{
    *total = 0;
    *caught_up = x->ever_assigned;
    bool any = false;
    for (int32_t p = 0; p < MAX_PARTS; p++) {
        part_state_t *ps = &x->parts[p];
        if (!ps->owned)
            continue;
        any = true;
        int64_t lo = -1, hi = -1;
        rd_kafka_get_watermark_offsets(x->rk, x->conf->topic, p, &lo, &hi);
        if (hi < 0) {
            ps->lag = -1;
            *caught_up = false;
            continue;
        }
        if (ps->next_offset >= 0)
            ps->lag = hi > ps->next_offset ? hi - ps->next_offset : 0;
        else
            ps->lag = lo >= 0 && hi > lo ? hi - lo : 0;
        if (ps->fenced || ps->lag > 0 || (ps->next_offset < 0 && hi != lo))
            *caught_up = false;
        *total += ps->lag + inquiries_lag(x, p, caught_up);
    }
    if (!any)
        *caught_up = false;
}

/*
 * Whether the whole group is caught up, not only this member: partitions the
 * group gave to someone else (or to a member that died and whose session has
 * not expired yet) must have a committed offset at their high watermark.
 * Without this, --until-caught-up could stop with part of the topic unread.
 */
static bool group_caught_up(exp_ctx_t *x)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(x->rk, x->conf->topic, NULL);
    if (!rkt)
        return false;
    rd_kafka_resp_err_t err = rd_kafka_metadata(x->rk, 0, rkt, &md, 5000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        if (md)
            rd_kafka_metadata_destroy(md);
        return false;
    }
    rd_kafka_topic_partition_list_t *others = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        if (p < 0 || p >= MAX_PARTS || !x->parts[p].owned)
            rd_kafka_topic_partition_list_add(others, x->conf->topic, p);
    }
    rd_kafka_metadata_destroy(md);
    bool caught = true;
    if (others->cnt > 0 && rd_kafka_committed(x->rk, others, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        caught = false;
    for (int i = 0; caught && i < others->cnt; i++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_topic_partition_t *tp = &others->elems[i];
        if (rd_kafka_query_watermark_offsets(x->rk, tp->topic, tp->partition, &lo, &hi, 5000))
            caught = false;
        else if (hi > lo && tp->offset < hi) /* unread, or never committed */
            caught = false;
    }
    rd_kafka_topic_partition_list_destroy(others);
    return caught;
}

/* librdkafka's statistics (statistics.interval.ms), for /metrics */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    exp_ctx_t *x = opaque;
    if (x->obs)
        lw_obs_rdkafka_stats(x->obs, rd_kafka_type(rk) == RD_KAFKA_PRODUCER, json, len);
    return 0; /* librdkafka frees json */
}

/* The figures of /metrics that change per second (counters go every turn). */
static void observe(exp_ctx_t *x, bool redis_ok)
{
    if (!x->obs)
        return;
    for (int32_t p = 0; p < MAX_PARTS; p++)
        lw_obs_partition(x->obs, p, x->parts[p].owned, x->parts[p].lag);
    lw_obs_gauges(x->obs, fenced_count(x), x->stalled_ms, lw_store_last_rtt_us(x->store), redis_ok);
}

/* The "who is running" hash lw:metrics:<consumer> (a human-readable view that
 * expires 15 s after the consumer stops; not Prometheus counters: scrape
 * --metrics-listen for those). False when Redis did not answer. */
static bool publish_metrics(exp_ctx_t *x, double rate)
{
    char key[200];
    snprintf(key, sizeof key, "lw:metrics:%s", x->consumer_id);
    /* the hash and the registry may sit on two masters of a cluster */
    redisContext *rc = lw_store_redis_for(x->store, key);
    redisContext *rs = lw_store_redis_for(x->store, "lw:metrics:consumers");
    if (!rc || !rs)
        return false;
    enum { MAXA = 20 + 2 * LW_RULES_MAX + 2 * MAX_PARTS };
    static const char *argv[4 + MAXA * 2];
    static size_t lens[4 + MAXA * 2];
    static char vals[MAXA][32];
    static char names[MAXA][300];
    int a = 0, v = 0;
    argv[a++] = "HSET";
    argv[a++] = key;
#define PUT(name, fmt, val)                                                                        \
    do {                                                                                           \
        snprintf(names[v], sizeof names[v], "%s", name);                                           \
        snprintf(vals[v], sizeof vals[v], fmt, val);                                               \
        argv[a++] = names[v];                                                                      \
        argv[a++] = vals[v];                                                                       \
        v++;                                                                                       \
    } while (0)
    PUT("events_consumed", "%" PRIu64, x->c.consumed);
    PUT("events_applied", "%" PRIu64, x->c.applied);
    PUT("duplicates", "%" PRIu64, x->c.duplicates);
    PUT("out_of_order", "%" PRIu64, x->c.out_of_order);
    PUT("fenced", "%" PRIu64, x->c.fenced);
    PUT("dead_letters", "%" PRIu64, x->c.dead_letters);
    PUT("refused", "%" PRIu64, x->c.refused);
    PUT("alerts", "%" PRIu64, x->c.alerts);
    PUT("batches", "%" PRIu64, x->c.batches);
    PUT("produce_failed", "%" PRIu64, x->c.produce_failed);
    PUT("redis_rtt_us", "%" PRId64, lw_store_last_rtt_us(x->store));
    PUT("events_per_s", "%.0f", rate);
    PUT("updated_at_ms", "%" PRId64, lw_now_ms());
    for (size_t i = 0; i < lw_rules_count(x->rules); i++) {
        char n[128];
        snprintf(n, sizeof n, "alerts:%s", lw_rules_get(x->rules, i)->id);
        PUT(n, "%" PRIu64, x->c.alerts_by_rule[i]);
    }
    int64_t total = 0;
    for (int32_t p = 0; p < MAX_PARTS && v < MAXA - 1; p++) {
        if (!x->parts[p].owned || x->parts[p].lag < 0)
            continue;
        char n[300];
        snprintf(n, sizeof n, "lag:%s:%" PRId32, x->conf->topic, p);
        PUT(n, "%" PRId64, x->parts[p].lag);
        total += x->parts[p].lag;
    }
    PUT("lag_total", "%" PRId64, total);
    PUT("partitions_fenced", "%d", fenced_count(x));
    PUT("stalled_s", "%" PRId64, x->stalled_ms ? (lw_mono_ms() - x->stalled_ms) / 1000 : 0);
#undef PUT
    for (int i = 0; i < a; i++)
        lens[i] = strlen(argv[i]);
    /* per-partition lag fields of partitions we no longer own must go: rewrite the hash */
    redisAppendCommand(rc, "MULTI");
    redisAppendCommand(rc, "DEL %s", key);
    redisAppendCommandArgv(rc, a, argv, lens);
    redisAppendCommand(rc, "EXPIRE %s 15", key);
    redisAppendCommand(rc, "EXEC");
    redisAppendCommand(rs, "SADD lw:metrics:consumers %s", x->consumer_id);
    for (int i = 0; i < 6; i++) {
        redisReply *r = NULL;
        redisContext *c = i < 5 ? rc : rs;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            lw_warn("metrics to Redis: %s", c->errstr);
            lw_store_reconnect(x->store, key, sizeof key); /* next batch retries anyway */
            return false;
        }
        freeReplyObject(r);
    }
    return true;
}

/* ---- Setup ---------------------------------------------------------------- */

static bool conf_apply(const lw_exposure_conf_t *cf, rd_kafka_conf_t *kc, char *errstr,
                       size_t errstr_size)
{
    if (rd_kafka_conf_set(kc, "bootstrap.servers", cf->brokers, errstr, errstr_size))
        return false;
    if (cf->config_file && lw_conf_load_file(kc, cf->config_file, errstr, errstr_size) != LW_OK)
        return false;
    for (size_t i = 0; i < cf->n_kafka_kv; i++)
        if (lw_conf_set_kv(kc, cf->kafka_kv[i], errstr, errstr_size) != LW_OK)
            return false;
    return true;
}

static bool set(rd_kafka_conf_t *kc, const char *k, const char *v, char *errstr, size_t n)
{
    return rd_kafka_conf_set(kc, k, v, errstr, n) == RD_KAFKA_CONF_OK;
}

static void ctx_destroy(exp_ctx_t *x)
{
    lw_mhttp_stop(x->http); /* before what it reads */
    lw_obs_destroy(x->obs);
    batch_drop(x);
    if (x->events)
        rd_kafka_topic_destroy(x->events);
    if (x->rk)
        rd_kafka_destroy(x->rk);
    for (int i = 0; i < 2; i++)
        if (x->warm[i])
            rd_kafka_topic_destroy(x->warm[i]);
    if (x->prod) {
        rd_kafka_flush(x->prod, 10000);
        rd_kafka_destroy(x->prod);
    }
    inflight_free(x);
    lw_store_destroy(x->store);
    lw_codec_destroy(x->codec);
    lw_rules_destroy(x->rules);
    lw_hist_destroy(x->lat_state);
    lw_hist_destroy(x->lat_alert);
    for (int i = 0; i < 2; i++) {
        batch_t *b = &x->bufs[i];
        free(b->msg);
        free(b->ev);
        free(b->iq);
        free(b->is_inq);
        free(b->ok);
        free(b->used);
        free(b->idx);
        free(b->results);
    }
    free(x);
}

lw_err_t lw_exposure_run(const lw_exposure_conf_t *cf, char *errstr, size_t errstr_size)
{
    exp_ctx_t *x = calloc(1, sizeof *x);
    lw_err_t ret = LW_OK;
    if (!x) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    x->conf = cf;
    bool ok = true;
    x->fill = &x->bufs[0];
    if (cf->latency_out) {
        x->lat_state = lw_hist_new();
        x->lat_alert = lw_hist_new();
    }
    if (!ok || (cf->latency_out && (!x->lat_state || !x->lat_alert))) {
        snprintf(errstr, errstr_size, "out of memory");
        ctx_destroy(x);
        return LW_ERR_NOMEM;
    }
    if (cf->consumer_id) {
        snprintf(x->consumer_id, sizeof x->consumer_id, "%s", cf->consumer_id);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(x->consumer_id, sizeof x->consumer_id, "%s:%d", host, (int)getpid());
    }

    if (cf->rules_file)
        x->rules = lw_rules_load_file(cf->rules_file, errstr, errstr_size);
    else
        x->rules = lw_rules_default();
    if (!x->rules) {
        ctx_destroy(x);
        return LW_ERR_CONFIG;
    }
    lw_rules_set_limits(x->rules, cf->max_loans, cf->max_window);
    if (lw_rules_set_retention(x->rules, cf->retain_ended_ms, cf->retain_negative_ms, errstr,
                               errstr_size)) {
        ctx_destroy(x);
        return LW_ERR_CONFIG;
    }
    lw_rules_set_inquiry_limit(x->rules, cf->max_inquiries);
    /* not named: loanwire.inquiries beside loanwire.loan-events; beside another
     * events topic none (its inquiries topic must be named: it must have as
     * many partitions as that topic, which loanwire.inquiries may not) */
    x->inq_topic = cf->inquiries_topic                   ? cf->inquiries_topic
                   : !strcmp(cf->topic, LW_TOPIC_EVENTS) ? LW_TOPIC_INQUIRIES
                                                         : "";
    if (cf->metrics_listen) {
        /* served from the start: /readyz says "no partition assigned" until the group has
         * given us some, and /healthz answers while Redis is still awaited */
        if (!(x->obs = lw_obs_new(cf->topic, x->rules))) {
            snprintf(errstr, errstr_size, "out of memory");
            ctx_destroy(x);
            return LW_ERR_NOMEM;
        }
        if (!(x->http = lw_mhttp_start(cf->metrics_listen, x->obs, errstr, errstr_size))) {
            ctx_destroy(x);
            return LW_ERR_CONFIG;
        }
        lw_info("metrics on http://%s/metrics (port %d), /healthz, /readyz", cf->metrics_listen,
                lw_mhttp_port(x->http));
    }
    x->codec = lw_codec_new(errstr, errstr_size);
    if (!x->codec) {
        ctx_destroy(x);
        return LW_ERR_SCHEMA;
    }
    /* Redis first: without it nothing can be applied; wait for it (capped backoff) */
    int backoff = 100;
    while (!(x->store = lw_store_new(cf->redis_url, x->rules, &cf->script, errstr, errstr_size))) {
        if (strncmp(errstr, "Redis", 5) || lw_stop_requested()) {
            ctx_destroy(x);
            return LW_ERR_REDIS;
        }
        lw_warn("%s (retry in %d ms)", errstr, backoff);
        backoff_sleep(&backoff);
    }
    lw_store_set_alerts_cb(x->store, store_alerts_cb, x);
    /* the batch's buffers once the store knows its Redis: a cluster pays per
     * call, and a bigger batch puts more borrowers of one hash slot in a call */
    size_t bm = cf->batch_max ? cf->batch_max : lw_store_batch_default(x->store);
    for (int i = 0; i < 2; i++) {
        batch_t *b = &x->bufs[i];
        b->msg = calloc(bm, sizeof *b->msg);
        b->ev = calloc(bm, sizeof *b->ev);
        b->ok = calloc(bm, sizeof *b->ok);
        b->used = calloc(bm, sizeof *b->used);
        b->idx = calloc(bm, sizeof *b->idx);
        b->iq = calloc(bm, sizeof *b->iq);
        b->is_inq = calloc(bm, sizeof *b->is_inq);
        b->results = calloc(bm, sizeof *b->results);
        ok =
            ok && b->msg && b->ev && b->iq && b->is_inq && b->ok && b->used && b->idx && b->results;
    }
    if (!ok) {
        snprintf(errstr, errstr_size, "out of memory");
        ctx_destroy(x);
        return LW_ERR_NOMEM;
    }
    lw_info("Redis %s: write script %s loaded (%zu rules, strict fencing %s)",
            lw_redis_url_redact(cf->redis_url, (char[512]){0}, 512), lw_store_script_sha(x->store),
            lw_rules_count(x->rules), cf->script.strict_fencing ? "on" : "off");

    /* alerts and dead-letter producer: idempotent, never gives up on a message */
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    /* statistics for /metrics every 5 s (-X statistics.interval.ms overrides) */
    if ((cf->metrics_listen && !set(pc, "statistics.interval.ms", "5000", errstr, errstr_size)) ||
        !conf_apply(cf, pc, errstr, errstr_size) ||
        !set(pc, "enable.idempotence", "true", errstr, errstr_size) ||
        !set(pc, "message.timeout.ms", "0", errstr, errstr_size) ||
        /* a batch's alerts go out in one request, not one or a few each: at
         * linger.ms=0 the broker spent ~0.4 us per event of a catch-up on
         * them, and the catch-up was 7 % slower. Alert readers wait up to
         * 5 ms more; a batch that must wait for an alert's acknowledgement
         * does not (inflight_wait flushes) */
        !set(pc, "linger.ms", "5", errstr, errstr_size)) {
        rd_kafka_conf_destroy(pc);
        ctx_destroy(x);
        return LW_ERR_CONFIG;
    }
    rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
    if (cf->metrics_listen)
        rd_kafka_conf_set_stats_cb(pc, stats_cb);
    rd_kafka_conf_set_opaque(pc, x);
    x->prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, errstr_size);
    if (!x->prod) {
        ctx_destroy(x);
        return LW_ERR_KAFKA;
    }
    /* look the topics up now, not at the first alert (that cost ~0.8 s) */
    x->warm[0] = rd_kafka_topic_new(x->prod, cf->alerts_topic, NULL);
    x->warm[1] = rd_kafka_topic_new(x->prod, cf->dlq_topic, NULL);

    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (!set(kc, "auto.offset.reset", "earliest", errstr, errstr_size) ||
        !set(kc, "enable.auto.commit", "true", errstr, errstr_size) ||
        !set(kc, "auto.commit.interval.ms", "1000", errstr, errstr_size) ||
        !set(kc, "enable.partition.eof", "false", errstr, errstr_size) ||
        /* librdkafka 2.0 stops fetching for a whole second once the consumer
         * queue (all partitions together) holds queued.min.messages or
         * queued.max.messages.kbytes (librdkafka #2879; 2.1 made the second
         * fetch.queue.backoff.ms). So the queue must hold more than a second
         * of catch-up: ~1M events of ~115 bytes. At 32 MiB (~0.8 s) a 2M-event
         * catch-up ran dry for part of each second: 303k events/s against
         * 355k at 128 MiB, for a peak RSS of 158 against 486 MiB. A consumer
         * that keeps up holds little either way. -X overrides both. */
        !set(kc, "queued.min.messages", "1000000", errstr, errstr_size) ||
        !set(kc, "queued.max.messages.kbytes", "131072", errstr, errstr_size) ||
        /* a broker answers a connection's requests in order, so the
         * metadata and offsets requests of the caught-up check waited
         * behind an empty fetch for up to its 500 ms default */
        !set(kc, "fetch.wait.max.ms", "100", errstr, errstr_size) ||
        /* incremental rebalancing: a joining or leaving member moves only the
         * partitions that change hands ("Rebalances" above); -X may set
         * another strategy, and the callback follows the protocol it gives */
        !set(kc, "partition.assignment.strategy", "cooperative-sticky", errstr, errstr_size) ||
        /* a member learns of a rebalance from its heartbeat's answer, and a
         * cooperative join takes two: at librdkafka's 3 s a second consumer
         * started beside a first got its partitions after 3 to 6 s of a 9 s
         * catch-up; at 1 s, after 1 to 2 s (session.timeout.ms stays 45 s) */
        !set(kc, "heartbeat.interval.ms", "1000", errstr, errstr_size) ||
        (cf->metrics_listen && !set(kc, "statistics.interval.ms", "5000", errstr, errstr_size)) ||
        !conf_apply(cf, kc, errstr, errstr_size) ||
        !set(kc, "group.id", cf->group, errstr, errstr_size) ||
        /* offsets are stored by us, after Redis acknowledged: not negotiable */
        !set(kc, "enable.auto.offset.store", "false", errstr, errstr_size)) {
        rd_kafka_conf_destroy(kc);
        ctx_destroy(x);
        return LW_ERR_CONFIG;
    }
    rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
    if (cf->metrics_listen)
        rd_kafka_conf_set_stats_cb(kc, stats_cb);
    rd_kafka_conf_set_opaque(kc, x);
    x->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, errstr_size);
    if (!x->rk) {
        ctx_destroy(x);
        return LW_ERR_KAFKA;
    }
    rd_kafka_poll_set_consumer(x->rk);
    /* the partitions' leaders, now: assigned before they are known, a
     * partition waits 500 ms to ask for its start offset (librdkafka's offset
     * query timer), which was 7 % of a 2M-event catch-up */
    const struct rd_kafka_metadata *md = NULL;
    x->events = rd_kafka_topic_new(x->rk, cf->topic, NULL);
    if (x->events &&
        rd_kafka_metadata(x->rk, 0, x->events, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    if (!inquiries_check(x, errstr, errstr_size)) {
        ctx_destroy(x);
        return LW_ERR_CONFIG;
    }
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, cf->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(x->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (kerr) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", cf->topic, rd_kafka_err2str(kerr));
        ctx_destroy(x);
        return LW_ERR_KAFKA;
    }
    lw_info("consumer %s in group %s on %s (brokers %s)", x->consumer_id, cf->group, cf->topic,
            cf->brokers);

    int64_t last_status = lw_mono_ms(), last_metrics = last_status, start = last_status;
    int64_t last_group_check = 0;
    uint64_t applied_at_status = 0;
    double rate = 0;
    x->last_msg_ms = lw_mono_ms();
    while (!lw_stop_requested() && !x->fatal) {
        /* a write in flight: take what is queued and land it; deliveries
         * pending: come back soon to store the offsets they hold */
        rd_kafka_message_t *m = rd_kafka_consumer_poll(x->rk, x->fly                    ? 0
                                                              : x->if_head < x->if_tail ? 2
                                                                                        : 100);
        while (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    lw_warn("consumer: %s", rd_kafka_message_errstr(m));
                if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
                    x->fatal = true;
                    snprintf(x->fatal_msg, sizeof x->fatal_msg, "fatal consumer error");
                }
                rd_kafka_message_destroy(m);
            } else {
                if (m->partition >= 0 && m->partition < MAX_PARTS) {
                    int64_t *fs = is_inquiry_msg(x, m) ? &x->parts[m->partition].inq_first
                                                       : &x->parts[m->partition].first_seen;
                    if (*fs < 0)
                        *fs = m->offset;
                }
                x->fill->msg[x->fill->n++] = m;
            }
            if (x->fill->n == bm)
                break;
            m = rd_kafka_consumer_poll(x->rk, 0);
        }
        bool polled = x->fill->n > 0;
        if (polled) {
            x->last_msg_ms = lw_mono_ms();
            batch_prepare(x, x->fill);
            batch_launch(x);
        }
        batch_land(x);
        inflight_settle(x);
        fences_check(x);
        if (x->obs)
            lw_obs_counts(x->obs, &x->c);

        if (!polled && x->n_owned == 0)
            group_nudge(x);
        int64_t now = lw_mono_ms();
        if (now - last_metrics >= 1000 || !polled) {
            int64_t lag;
            bool caught;
            if (now - last_metrics >= 1000) {
                update_lag(x, &lag, &caught);
                stall_watch(x, lag, now);
                observe(x, publish_metrics(x, rate));
                last_metrics = now;
            }
            if (cf->status_every_s > 0 && now - last_status >= cf->status_every_s * 1000LL) {
                update_lag(x, &lag, &caught);
                rate = (double)(x->c.applied + x->c.duplicates + x->c.out_of_order -
                                applied_at_status) *
                       1000.0 / (double)(now - last_status);
                applied_at_status = x->c.applied + x->c.duplicates + x->c.out_of_order;
                lw_info("%.0f ev/s  applied %" PRIu64 "  lag %" PRId64 "  alerts %" PRIu64
                        "  dead letters %" PRIu64 "  out-of-order %" PRIu64 "  dup %" PRIu64
                        "  fenced %" PRIu64 "  rtt %" PRId64 " us",
                        rate, x->c.applied, lag, x->c.alerts, x->c.dead_letters, x->c.out_of_order,
                        x->c.duplicates, x->c.fenced, lw_store_last_rtt_us(x->store));
                if (x->stalled_ms && now - x->stalled_ms >= 5000)
                    lw_warn("STALLED: lag %" PRId64 " and nothing consumed for %" PRId64
                            " s (%d partition(s) fenced)",
                            lag, (now - x->stalled_ms) / 1000, fenced_count(x));
                last_status = now;
            }
            /* caught up: the lag is 0 once nothing came for a moment (the
             * high watermarks come with every fetch response) */
            if (cf->until_caught_up && now - x->last_msg_ms >= CAUGHT_UP_IDLE_MS) {
                update_lag(x, &lag, &caught);
                if (caught && now - last_group_check >= 1000) {
                    last_group_check = now;
                    if (group_caught_up(x)) {
                        lw_info("caught up (lag 0 on every partition of the group); stopping");
                        break;
                    }
                }
            }
            if (cf->exit_on_idle_s > 0 && now - x->last_msg_ms >= cf->exit_on_idle_s * 1000LL) {
                lw_info("idle for %d s; stopping", cf->exit_on_idle_s);
                break;
            }
        }
    }

    if (x->fatal) {
        snprintf(errstr, errstr_size, "%s", x->fatal_msg);
        ret = LW_ERR_REDIS;
        /* no commit: what was not acknowledged is redelivered to the next owner */
        batch_drop(x);
        inflight_drop(x);
        x->closing = true;
        rd_kafka_consumer_close(x->rk);
    } else {
        /* finish in flight, commit, leave the group (revoke commits again) */
        batch_drain(x);
        batch_drop(x);
        if (!x->fatal)
            inflight_wait(x, x->if_tail);
        if (!x->fatal) {
            rd_kafka_resp_err_t ce = rd_kafka_commit(x->rk, NULL, 0);
            if (ce && ce != RD_KAFKA_RESP_ERR__NO_OFFSET)
                lw_warn("final commit: %s", rd_kafka_err2str(ce));
        }
        x->closing = true;
        rd_kafka_consumer_close(x->rk);
        int64_t lag;
        bool caught;
        update_lag(x, &lag, &caught);
        publish_metrics(x, rate);
        if (x->fatal) {
            snprintf(errstr, errstr_size, "%s", x->fatal_msg);
            ret = LW_ERR_REDIS;
        }
    }
    lw_info("stopped after %.1f s: consumed %" PRIu64 " applied %" PRIu64 " duplicates %" PRIu64
            " out-of-order %" PRIu64 " fenced %" PRIu64 " alerts %" PRIu64 " dead letters %" PRIu64
            " (refused by the state %" PRIu64 "); inquiries consumed %" PRIu64 " applied %" PRIu64
            " duplicates %" PRIu64 "; borrowers retried (changed by another writer) %" PRIu64,
            (double)(lw_mono_ms() - start) / 1000.0, x->c.consumed, x->c.applied, x->c.duplicates,
            x->c.out_of_order, x->c.fenced, x->c.alerts, x->c.dead_letters, x->c.refused,
            x->c.inq_consumed, x->c.inq_applied, x->c.inq_duplicates,
            lw_store_stale_retries(x->store));
    if (x->lat_state)
        write_latency(x);
    ctx_destroy(x);
    return ret;
}

/*
 * inquiry.c - every exposure look-up is a recorded credit inquiry (issue 20):
 * a CreditInquiry record on the inquiries topic, confirmed by Kafka before
 * the answer is sent.
 *
 * A look-up must not be answered unless its record is durable, so each
 * request waits for its own delivery report. It must not cost one round trip
 * to Kafka per look-up either: the request hands its record to one shared
 * librdkafka producer (linger.ms of a few ms), which batches every record
 * produced meanwhile, by every request, into one ProduceRequest per
 * partition. The request does not hold a server thread while it waits: the
 * server suspends its connection (server.c) and the delivery report, served
 * by one poller thread here, calls back; after the reports of one poll the
 * poller calls the server's batch_end, which reads and resumes the batch's
 * look-ups (server.c, lw_inq_batch). So every open
 * connection can have a record in the same batch (a pool of 4 threads that
 * each waited for their own report made at most 4 look-ups share a round
 * trip: 861 look-ups/s against 3,919 unrecorded, measured).
 *
 * acks=all with idempotence: a record confirmed is on every in-sync replica
 * and written once even when librdkafka retried it. A record not confirmed
 * within LW_INQ_TIMEOUT_MS (Kafka down, the topic unwritable) fails the
 * request with 503. A timed-out record may in rare cases still have reached
 * the broker: then an inquiry is recorded that was not answered, never the
 * reverse.
 *
 * The record is keyed by borrower_id with the partitioner the loan events
 * use (murmur2_random, as the Java client), so a borrower's inquiries land in
 * the same partition number of loanwire.inquiries as its loan events in
 * loanwire.loan-events when both topics have as many partitions
 * (loanwire-topics makes them so).
 */
#include "query_int.h"

#include "loanwire/codec.h"
#include "loanwire/log.h"

#include <librdkafka/rdkafka.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lw_inq_s {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    char topic[256];
    lw_codec_t *codec; /* not thread-safe: encode under codec_mu */
    pthread_mutex_t codec_mu;
    pthread_t poller;
    bool poller_started;
    atomic_bool stop;
    atomic_uint_fast64_t recorded, failed;
    lw_inq_batch_cb *batch_end; /* after the reports of one poll (may be NULL) */
    void *batch_opaque;
    pthread_mutex_t batch_mu; /* one batch_end at a time: the poller's, or a flush's */
};

/* One record's caller, until its delivery report. */
typedef struct lw_inq_ticket {
    lw_inq_t *r;
    lw_inq_done_cb *cb;
    void *opaque;
} lw_inq_ticket_t;

static void lw_inq_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    lw_inq_ticket_t *t = m->_private;
    (void)rk;
    (void)opaque;
    if (!t)
        return;
    atomic_fetch_add(m->err ? &t->r->failed : &t->r->recorded, 1);
    t->cb(t->opaque, m->err ? LW_ERR_TRANSIENT : LW_OK, m->err ? rd_kafka_err2str(m->err) : "");
    free(t);
}

/* The reports served since the last call, as one batch (they may also have
 * been served by rd_kafka_flush in another thread: hence the lock). */
static void lw_inq_batch_end(lw_inq_t *r)
{
    if (!r->batch_end)
        return;
    pthread_mutex_lock(&r->batch_mu);
    r->batch_end(r->batch_opaque);
    pthread_mutex_unlock(&r->batch_mu);
}

static void *lw_inq_poll(void *arg)
{
    lw_inq_t *r = arg;
    /* A blocking poll: rd_kafka_poll returns as soon as a delivery report is
     * queued (measured, librdkafka 2.0.2, one connection at a time: send to
     * report 2.3 ms at poll(rk, 100) as at poll(rk, 1), 2 of them linger.ms;
     * 6,376 look-ups/s with 64 connections at 100 ms). The 1-ms loop this
     * replaces woke 1,000 times a second for nothing; the rates it was
     * measured with were those of a connection per look-up (server.c). An
     * eventfd from rd_kafka_queue_io_event_enable would wake this thread
     * the same way, with one more descriptor. 100 ms is how long stopping
     * waits for this thread. */
    while (!atomic_load(&r->stop)) {
        rd_kafka_poll(r->rk, 100);
        lw_inq_batch_end(r);
    }
    return NULL;
}

static bool lw_inq_set(rd_kafka_conf_t *kc, const char *k, const char *v, char *errstr,
                       size_t errstr_size)
{
    char es[256];
    if (rd_kafka_conf_set(kc, k, v, es, sizeof es) == RD_KAFKA_CONF_OK)
        return true;
    snprintf(errstr, errstr_size, "inquiries producer: %s=%s: %s", k, v, es);
    return false;
}

lw_inq_t *lw_inq_new(const char *brokers, const char *topic, lw_inq_batch_cb *batch_end,
                     void *batch_opaque, char *errstr, size_t errstr_size)
{
    static const char *const props[][2] = {
        {"acks", "all"},
        {"enable.idempotence", "true"},
        /* many concurrent look-ups share a batch; one waits at most this long.
         * Measured with 64 connections (kept alive): 2 ms gave 8,301 and
         * 8,515 look-ups/s, p99 27 and 18 ms; 0 ms 6,808 and 6,570/s (more,
         * smaller ProduceRequests: more broker work per record), p99 25 and
         * 37 ms; 5 ms 6,528/s, p99 20 ms. */
        {"linger.ms", "2"},
        /* Nagle off: up to 5 ProduceRequests in flight on one connection, and
         * Nagle holds a small one back until the previous is acknowledged.
         * Measured, 64 connections, two runs each: server-side p99 19 and
         * 23 ms off against 26 and 29 ms on (send to report p99 18 and 21
         * against 25 and 27 ms). */
        {"socket.nagle.disable", "true"},
        {"partitioner", "murmur2_random"}, /* as the loan events: same key, same partition */
        {"compression.type", "lz4"},
        {"message.timeout.ms", LW_INQ_TIMEOUT_MS_STR},
        {"socket.timeout.ms", "3000"},
        {"reconnect.backoff.max.ms", "1000"},
    };
    lw_inq_t *r = calloc(1, sizeof *r);
    rd_kafka_conf_t *kc = NULL;
    char es[512];

    if (!r) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->codec_mu, NULL);
    pthread_mutex_init(&r->batch_mu, NULL);
    r->batch_end = batch_end;
    r->batch_opaque = batch_opaque;
    if (!topic || !*topic || strlen(topic) >= sizeof r->topic) {
        snprintf(errstr, errstr_size, "--inquiries-topic: a topic name of 1..%zu characters",
                 sizeof r->topic - 1);
        goto fail;
    }
    snprintf(r->topic, sizeof r->topic, "%s", topic);
    if (!(r->codec = lw_codec_new(es, sizeof es))) {
        snprintf(errstr, errstr_size, "codec: %s", es);
        goto fail;
    }
    kc = rd_kafka_conf_new();
    if (!lw_inq_set(kc, "bootstrap.servers", brokers, errstr, errstr_size))
        goto fail;
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (!lw_inq_set(kc, props[i][0], props[i][1], errstr, errstr_size))
            goto fail;
    rd_kafka_conf_set_dr_msg_cb(kc, lw_inq_dr);
    if (!(r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, es, sizeof es))) {
        snprintf(errstr, errstr_size, "inquiries producer: %s", es);
        goto fail;
    }
    kc = NULL; /* owned by rk */
    if (!(r->rkt = rd_kafka_topic_new(r->rk, r->topic, NULL))) {
        snprintf(errstr, errstr_size, "inquiries topic %s: %s", r->topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    if (pthread_create(&r->poller, NULL, lw_inq_poll, r) != 0) {
        snprintf(errstr, errstr_size, "cannot start the inquiries delivery thread");
        goto fail;
    }
    r->poller_started = true;
    return r;
fail:
    if (kc)
        rd_kafka_conf_destroy(kc);
    lw_inq_destroy(r);
    return NULL;
}

const char *lw_inq_topic(const lw_inq_t *r)
{
    return r ? r->topic : "";
}

void lw_inq_counts(const lw_inq_t *r, uint64_t *recorded, uint64_t *failed)
{
    *recorded = r ? atomic_load(&r->recorded) : 0;
    *failed = r ? atomic_load(&r->failed) : 0;
}

static int64_t lw_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

lw_err_t lw_inq_send(lw_inq_t *r, const char *borrower_id, const char *institution_id,
                     lw_inquiry_purpose_t purpose, lw_inq_done_cb *cb, void *opaque, char *errstr,
                     size_t errstr_size)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[16], buf[LW_CODEC_MAX_INQUIRY];
    lw_inquiry_t iq;
    size_t len = 0;
    lw_err_t err;

    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        snprintf(errstr, errstr_size, "no random bytes for the inquiry id");
        return LW_ERR_CRYPTO;
    }
    memset(&iq, 0, sizeof iq);
    for (int i = 0; i < 16; i++) {
        iq.inquiry_id[2 * i] = hex[rnd[i] >> 4];
        iq.inquiry_id[2 * i + 1] = hex[rnd[i] & 15];
    }
    snprintf(iq.borrower_id, sizeof iq.borrower_id, "%s", borrower_id);
    snprintf(iq.institution_id, sizeof iq.institution_id, "%s", institution_id);
    iq.purpose = purpose;
    iq.inquired_at = lw_wall_ms();
    pthread_mutex_lock(&r->codec_mu);
    err = lw_codec_encode_inquiry(r->codec, &iq, buf, sizeof buf, &len);
    pthread_mutex_unlock(&r->codec_mu);
    if (err != LW_OK) {
        snprintf(errstr, errstr_size, "encoding the inquiry: %s", lw_err2str(err));
        return err;
    }
    lw_inq_ticket_t *t = malloc(sizeof *t);
    if (!t) {
        snprintf(errstr, errstr_size, "out of memory");
        return LW_ERR_NOMEM;
    }
    *t = (lw_inq_ticket_t){r, cb, opaque};
    /* the delivery report always comes (librdkafka times the record out at
     * message.timeout.ms) and calls cb from the poller thread */
    if (rd_kafka_produce(r->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, buf, len,
                         iq.borrower_id, strlen(iq.borrower_id), t) != 0) {
        free(t); /* queue full: Kafka is not keeping up */
        atomic_fetch_add(&r->failed, 1);
        snprintf(errstr, errstr_size, "inquiry not recorded on %s: %s", r->topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return LW_ERR_TRANSIENT;
    }
    return LW_OK;
}

void lw_inq_flush(lw_inq_t *r, int timeout_ms)
{
    if (r && r->rk) {
        rd_kafka_flush(r->rk, timeout_ms);
        lw_inq_batch_end(r); /* the reports the flush served, handed on now */
    }
}

void lw_inq_destroy(lw_inq_t *r)
{
    if (!r)
        return;
    if (r->rk)
        rd_kafka_flush(r->rk, 2000); /* no request waits any more: the server stopped */
    atomic_store(&r->stop, true);
    if (r->poller_started)
        pthread_join(r->poller, NULL);
    if (r->rkt)
        rd_kafka_topic_destroy(r->rkt);
    if (r->rk)
        rd_kafka_destroy(r->rk);
    lw_codec_destroy(r->codec);
    pthread_mutex_destroy(&r->codec_mu);
    pthread_mutex_destroy(&r->batch_mu);
    free(r);
}

/*
 * producer.c - the platform-side producer: validate, encode as single-object
 * Avro, produce keyed by borrower_id, and account for every message.
 *
 * Delivery guarantees come from librdkafka's idempotent producer
 * (enable.idempotence=true implies acks=all and ordered retries), so a broker
 * that goes away and comes back within message.timeout.ms costs neither
 * duplicates nor reordering per partition. A full local queue is back-pressure:
 * send() serves delivery reports until there is room, it never fails for it.
 *
 * Nothing is kept per message beyond librdkafka's copy of the payload: the
 * caller's opaque rides as the message opaque, and when a callback needs the
 * event it is decoded back from that payload (the codec round-trips exactly).
 */
#include "producer_int.h"

#include "loanwire/conf.h"
#include "loanwire/log.h"
#include "loanwire/validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LW_POLL_EVERY    64   /* sends between non-blocking polls for reports */
#define LW_DESTROY_FLUSH 5000 /* ms lw_producer_destroy() waits before purging */
#define LW_QUEUE_FULL_MS 50   /* wait per round while the local queue is full */

/* Producer defaults; anything set later (file, -X, conf_set) overrides them. */
static const char *const lw_producer_defaults[][2] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"partitioner", "murmur2_random"}, /* as the Java client: same key, same partition */
    {"linger.ms", "5"},
    {"batch.num.messages", "10000"},
    {"batch.size", "1000000"},
    {"compression.codec", "none"},
    {"queue.buffering.max.messages", "200000"},
    {"queue.buffering.max.kbytes", "262144"},
};

lw_producer_conf_t *lw_producer_conf_new(void)
{
    lw_producer_conf_t *conf = calloc(1, sizeof *conf);
    char err[256];

    if (!conf)
        return NULL;
    conf->rk_conf = rd_kafka_conf_new();
    conf->topic = strdup(LW_TOPIC_EVENTS);
    if (!conf->rk_conf || !conf->topic) {
        lw_producer_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set(conf->rk_conf, "bootstrap.servers", lw_conf_default_bootstrap(), err,
                      sizeof err);
    for (size_t i = 0; i < sizeof lw_producer_defaults / sizeof *lw_producer_defaults; i++)
        if (rd_kafka_conf_set(conf->rk_conf, lw_producer_defaults[i][0], lw_producer_defaults[i][1],
                              err, sizeof err) != RD_KAFKA_CONF_OK)
            lw_warn("producer default %s: %s", lw_producer_defaults[i][0], err);
    lw_conf_route_logs(conf->rk_conf);
    return conf;
}

void lw_producer_conf_destroy(lw_producer_conf_t *conf)
{
    if (!conf)
        return;
    if (conf->rk_conf)
        rd_kafka_conf_destroy(conf->rk_conf);
    free(conf->topic);
    free(conf);
}

lw_err_t lw_producer_conf_set(lw_producer_conf_t *conf, const char *key, const char *value,
                              char *errstr, size_t errstr_size)
{
    if (!conf || !key || !value) {
        snprintf(errstr, errstr_size, "no configuration, key or value given");
        return LW_ERR_INVALID_ARG;
    }
    if (strcmp(key, "topic") == 0) {
        char *t;
        if (!*value) {
            snprintf(errstr, errstr_size, "topic: empty name");
            return LW_ERR_CONFIG;
        }
        t = strdup(value);
        if (!t) {
            snprintf(errstr, errstr_size, "out of memory");
            return LW_ERR_NOMEM;
        }
        free(conf->topic);
        conf->topic = t;
        return LW_OK;
    }
    if (rd_kafka_conf_set(conf->rk_conf, key, value, errstr, errstr_size) != RD_KAFKA_CONF_OK)
        return LW_ERR_CONFIG;
    return LW_OK;
}

lw_err_t lw_producer_conf_load_file(lw_producer_conf_t *conf, const char *path, char *errstr,
                                    size_t errstr_size)
{
    if (!conf) {
        snprintf(errstr, errstr_size, "no configuration given");
        return LW_ERR_INVALID_ARG;
    }
    return lw_conf_load_file(conf->rk_conf, path, errstr, errstr_size);
}

lw_err_t lw_producer_conf_set_kv(lw_producer_conf_t *conf, const char *kv, char *errstr,
                                 size_t errstr_size)
{
    const char *eq;
    char key[64];

    if (!conf || !kv) {
        snprintf(errstr, errstr_size, "no configuration or key=value given");
        return LW_ERR_INVALID_ARG;
    }
    /* "topic=..." is ours; everything else is librdkafka's. */
    eq = strchr(kv, '=');
    if (eq && (size_t)(eq - kv) < sizeof key) {
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        if (strcmp(key, "topic") == 0)
            return lw_producer_conf_set(conf, "topic", eq + 1, errstr, errstr_size);
    }
    return lw_conf_set_kv(conf->rk_conf, kv, errstr, errstr_size);
}

void lw_producer_conf_set_callbacks(lw_producer_conf_t *conf, lw_producer_delivered_cb *delivered,
                                    lw_producer_failed_cb *failed, void *cb_opaque)
{
    if (!conf)
        return;
    conf->delivered_cb = delivered;
    conf->failed_cb = failed;
    conf->cb_opaque = cb_opaque;
}

void lw_producer_conf_set_stamp(lw_producer_conf_t *conf, bool stamp)
{
    if (conf)
        conf->stamp = stamp;
}

/* Maps a final delivery error to ours: a timeout or a purge may succeed if
 * sent again; anything else needs a person. */
static lw_err_t lw_producer_map_err(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
        return LW_ERR_TRANSIENT;
    default:
        return LW_ERR_KAFKA;
    }
}

static void lw_producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    lw_producer_t *p = opaque;
    lw_event_t ev;
    char derr[256];
    bool need_event;
    lw_err_t dec = LW_OK;

    (void)rk;
    need_event = m->err ? p->failed_cb != NULL : p->delivered_cb != NULL;
    if (need_event) {
        dec = lw_codec_decode_event(p->codec, m->payload, m->len, &ev, derr, sizeof derr);
        if (dec != LW_OK)
            memset(&ev, 0, sizeof ev); /* cannot happen for our own encoding; still say so */
    }
    if (!m->err) {
        atomic_fetch_add_explicit(&p->delivered, 1, memory_order_relaxed);
        if (p->delivered_cb)
            p->delivered_cb(&ev, m->partition, m->offset, m->_private, p->cb_opaque);
        return;
    }
    atomic_fetch_add_explicit(&p->failed, 1, memory_order_relaxed);
    if (p->failed_cb) {
        char reason[512];
        if (m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT)
            snprintf(reason, sizeof reason,
                     "purged while in flight: the broker may or may not have it");
        else if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE)
            snprintf(reason, sizeof reason, "purged before it was sent");
        else
            snprintf(reason, sizeof reason, "%s", rd_kafka_err2str(m->err));
        if (dec != LW_OK) {
            size_t n = strlen(reason);
            snprintf(reason + n, sizeof reason - n, " (event not recoverable: %s)", derr);
        }
        p->failed_cb(&ev, lw_producer_map_err(m->err), reason, m->_private, p->cb_opaque);
    }
}

static void lw_producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];
        rd_kafka_resp_err_t fe = rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        lw_error("kafka fatal error: %s: %s", rd_kafka_err2name(fe), fatal);
        return;
    }
    /* Brokers down and the like: librdkafka retries; say it once in a while. */
    lw_warn("kafka: %s", reason);
}

lw_producer_t *lw_producer_new(lw_producer_conf_t *conf, char *errstr, size_t errstr_size)
{
    lw_producer_t *p;
    char err[512];

    if (!conf) {
        snprintf(errstr, errstr_size, "no configuration given");
        return NULL;
    }
    p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        lw_producer_conf_destroy(conf);
        return NULL;
    }
    p->delivered_cb = conf->delivered_cb;
    p->failed_cb = conf->failed_cb;
    p->cb_opaque = conf->cb_opaque;
    p->stamp = conf->stamp;
    p->codec = lw_codec_new(err, sizeof err);
    if (!p->codec) {
        snprintf(errstr, errstr_size, "codec: %s", err);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf->rk_conf, lw_producer_dr_cb);
    rd_kafka_conf_set_error_cb(conf->rk_conf, lw_producer_error_cb);
    rd_kafka_conf_set_opaque(conf->rk_conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf->rk_conf, errstr, errstr_size);
    if (!p->rk)
        goto fail;
    conf->rk_conf = NULL; /* rd_kafka_new took it */
    p->rkt = rd_kafka_topic_new(p->rk, conf->topic, NULL);
    if (!p->rkt) {
        snprintf(errstr, errstr_size, "topic %s: %s", conf->topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    lw_producer_conf_destroy(conf);
    return p;
fail:
    lw_producer_conf_destroy(conf);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    lw_codec_destroy(p->codec);
    free(p);
    return NULL;
}

/* Writes the decimal digits of v to end at buf + 23 and returns the first
 * (at most 20 digits, so a '-' fits in front). snprintf here cost about as
 * much as encoding the event. */
static char *lw_u64_digits(uint64_t v, char *buf)
{
    char *q = buf + 23;
    do {
        *--q = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return q;
}

lw_err_t lw_producer_encode(lw_codec_t *codec, const lw_event_t *ev, void *buf, size_t cap,
                            size_t *len, char *errstr, size_t errstr_size)
{
    lw_field_error_t ferr;
    lw_err_t err;

    if (lw_event_validate(ev, &ferr) != LW_OK) { /* it clears ferr first */
        if (ferr.field[0])
            snprintf(errstr, errstr_size, "%s: %s", ferr.field, ferr.reason);
        else
            snprintf(errstr, errstr_size, "%s", ferr.reason);
        return LW_ERR_VALIDATION;
    }
    err = lw_codec_encode_event(codec, ev, buf, cap, len);
    if (err != LW_OK)
        snprintf(errstr, errstr_size, "encode: %s", lw_err2str(err));
    return err;
}

lw_err_t lw_producer_send(lw_producer_t *p, const lw_event_t *ev, void *opaque, char *errstr,
                          size_t errstr_size)
{
    unsigned char buf[LW_CODEC_MAX_EVENT];
    size_t len = 0;
    lw_err_t err;

    if (!p || !ev) {
        snprintf(errstr, errstr_size, "no producer or event given");
        return LW_ERR_INVALID_ARG;
    }
    err = lw_producer_encode(p->codec, ev, buf, sizeof buf, &len, errstr, errstr_size);
    if (err == LW_ERR_VALIDATION)
        atomic_fetch_add_explicit(&p->rejected, 1, memory_order_relaxed);
    if (err != LW_OK)
        return err;
    /* The key is LW_BORROWER_ID_LEN long: validation checked it. */
    return lw_producer_send_encoded(p, ev->borrower_id, buf, len, opaque, errstr, errstr_size);
}

lw_err_t lw_producer_send_encoded(lw_producer_t *p, const char *key, const void *payload,
                                  size_t len, void *opaque, char *errstr, size_t errstr_size)
{
    char sent_buf[24], *sent_us = sent_buf;
    rd_kafka_resp_err_t e;
    int64_t now_us;
    int n = 0;

    if (!p || !key || !payload) {
        snprintf(errstr, errstr_size, "no producer, key or payload given");
        return LW_ERR_INVALID_ARG;
    }
    if (p->stamp) {
        now_us = lw_now_us();
        sent_us = lw_u64_digits(now_us < 0 ? 0 - (uint64_t)now_us : (uint64_t)now_us, sent_buf);
        if (now_us < 0)
            *--sent_us = '-';
        n = (int)(sent_buf + sizeof sent_buf - 1 - sent_us);
    }

    for (;;) {
        /* Without the stamp, no header list: librdkafka allocates nothing but
         * the message itself (payload and key copied into the same block). */
        if (p->stamp)
            e = rd_kafka_producev(p->rk, RD_KAFKA_V_RKT(p->rkt),
                                  RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
                                  RD_KAFKA_V_KEY(key, LW_BORROWER_ID_LEN),
                                  RD_KAFKA_V_VALUE((void *)(uintptr_t)payload, len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_HEADER("lw-sent-us", sent_us, (ssize_t)n),
                                  RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        else /* the plain call: no varargs to walk, the same enqueue */
            e = rd_kafka_produce(p->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                 (void *)(uintptr_t)payload, len, key, LW_BORROWER_ID_LEN,
                                 opaque) == 0
                    ? RD_KAFKA_RESP_ERR_NO_ERROR
                    : rd_kafka_last_error();
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        /* Back-pressure: serve delivery reports until the queue has room. */
        rd_kafka_poll(p->rk, LW_QUEUE_FULL_MS);
    }
    if (e) {
        if (e == RD_KAFKA_RESP_ERR__FATAL) {
            char fatal[400];
            rd_kafka_fatal_error(p->rk, fatal, sizeof fatal);
            snprintf(errstr, errstr_size, "kafka fatal error: %s", fatal);
        } else {
            snprintf(errstr, errstr_size, "produce: %s", rd_kafka_err2str(e));
        }
        return LW_ERR_KAFKA;
    }
    atomic_fetch_add_explicit(&p->sent, 1, memory_order_relaxed);
    if (++p->sends_since_poll >= LW_POLL_EVERY) {
        p->sends_since_poll = 0;
        rd_kafka_poll(p->rk, 0);
    }
    return LW_OK;
}

void lw_producer_poll(lw_producer_t *p, int timeout_ms)
{
    if (p)
        rd_kafka_poll(p->rk, timeout_ms);
}

static uint64_t lw_producer_in_flight(const lw_producer_t *p)
{
    uint64_t s = atomic_load_explicit(&p->sent, memory_order_relaxed);
    uint64_t d = atomic_load_explicit(&p->delivered, memory_order_relaxed);
    uint64_t f = atomic_load_explicit(&p->failed, memory_order_relaxed);
    return s - d - f;
}

lw_err_t lw_producer_flush(lw_producer_t *p, int timeout_ms)
{
    if (!p)
        return LW_ERR_INVALID_ARG;
    rd_kafka_flush(p->rk, timeout_ms);
    /* Serve reports that landed after flush's last look. */
    rd_kafka_poll(p->rk, 0);
    return lw_producer_in_flight(p) == 0 ? LW_OK : LW_ERR_TRANSIENT;
}

void lw_producer_purge(lw_producer_t *p)
{
    int64_t deadline;

    if (!p)
        return;
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    /* Purged messages get their reports through the normal poll path. */
    deadline = lw_mono_ms() + 10000;
    while (lw_producer_in_flight(p) > 0 && lw_mono_ms() < deadline)
        rd_kafka_poll(p->rk, 50);
    if (lw_producer_in_flight(p) > 0)
        lw_error("%" PRIu64 " events still without a delivery report after purge",
                 lw_producer_in_flight(p));
}

void lw_producer_destroy(lw_producer_t *p)
{
    if (!p)
        return;
    if (lw_producer_flush(p, LW_DESTROY_FLUSH) != LW_OK)
        lw_producer_purge(p);
    rd_kafka_topic_destroy(p->rkt);
    rd_kafka_destroy(p->rk);
    lw_codec_destroy(p->codec);
    free(p);
}

void lw_producer_stats(const lw_producer_t *p, lw_producer_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p)
        return;
    out->sent = atomic_load_explicit(&p->sent, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&p->rejected, memory_order_relaxed);
    out->delivered = atomic_load_explicit(&p->delivered, memory_order_relaxed);
    out->failed = atomic_load_explicit(&p->failed, memory_order_relaxed);
    out->in_flight = out->sent - out->delivered - out->failed;
}

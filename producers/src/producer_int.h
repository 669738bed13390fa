/*
 * producer_int.h - the body of lw_producer_t and lw_producer_conf_t, kept out
 * of the public header so fields can change without breaking callers.
 */
#ifndef LOANWIRE_PRODUCER_INT_H
#define LOANWIRE_PRODUCER_INT_H

#include "loanwire/codec.h"
#include "loanwire/producer.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

struct lw_producer_conf_s {
    rd_kafka_conf_t *rk_conf;
    char *topic;
    lw_producer_delivered_cb *delivered_cb;
    lw_producer_failed_cb *failed_cb;
    void *cb_opaque;
    bool stamp; /* add the lw-sent-us header */
};

struct lw_producer_s {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    lw_codec_t *codec; /* encode in send(), decode in delivery reports: one thread */
    lw_producer_delivered_cb *delivered_cb;
    lw_producer_failed_cb *failed_cb;
    void *cb_opaque;
    bool stamp;
    unsigned sends_since_poll;
    /* Read by lw_producer_stats(), possibly from a monitoring thread. */
    _Atomic uint64_t sent, rejected, delivered, failed;
};

#endif /* LOANWIRE_PRODUCER_INT_H */

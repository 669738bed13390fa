/*
 * loanwire/producer.h - the platform-side producer library.
 *
 * A platform links this into its services to put loan events on the bureau's
 * Kafka: lw_producer_send() validates, encodes (single-object Avro) and
 * produces to the loan-events topic keyed by borrower_id, so one borrower's
 * events stay on one partition, in order. The producer is idempotent
 * (enable.idempotence=true, acks=all) and partitions with murmur2_random, as
 * the Java client does. Every message ends in exactly one delivery report:
 * delivered, or handed back through the failure callback and counted.
 *
 *   lw_producer_conf_t *conf = lw_producer_conf_new();
 *   lw_producer_conf_set(conf, "bootstrap.servers", "127.0.0.1:9092", errstr, sizeof errstr);
 *   lw_producer_t *p = lw_producer_new(conf, errstr, sizeof errstr); // takes conf
 *   lw_producer_send(p, &ev, NULL, errstr, sizeof errstr);
 *   lw_producer_flush(p, 30000);
 *   lw_producer_destroy(p);
 *
 * Callbacks run inside send/poll/flush/purge/destroy, on the calling thread.
 * A producer is used by one thread at a time (as a codec is); make one per
 * thread or lock around it. The failure callback's event is decoded back from
 * the message that failed, so nothing else is kept per message.
 */
#ifndef LOANWIRE_PRODUCER_H
#define LOANWIRE_PRODUCER_H

#include "loanwire/api.h"

#include "loanwire/codec.h"
#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lw_producer_s lw_producer_t;
typedef struct lw_producer_conf_s lw_producer_conf_t;

/* Delivery outcome of one event; opaque is what the caller passed to send. */
typedef void(lw_producer_failed_cb)(const lw_event_t *ev, lw_err_t err, const char *reason,
                                    void *opaque, void *cb_opaque);
typedef void(lw_producer_delivered_cb)(const lw_event_t *ev, int32_t partition, int64_t offset,
                                       void *opaque, void *cb_opaque);

LW_API lw_producer_conf_t *lw_producer_conf_new(void);
LW_API void lw_producer_conf_destroy(lw_producer_conf_t *conf); /* NULL is fine */
/* Loanwire keys: "topic"; anything else goes to librdkafka. */
LW_API lw_err_t lw_producer_conf_set(lw_producer_conf_t *conf, const char *key, const char *value,
                                     char *errstr, size_t errstr_size);
/* A librdkafka properties file and -X key=value, as loanwire/conf.h. */
LW_API lw_err_t lw_producer_conf_load_file(lw_producer_conf_t *conf, const char *path, char *errstr,
                                           size_t errstr_size);
LW_API lw_err_t lw_producer_conf_set_kv(lw_producer_conf_t *conf, const char *kv, char *errstr,
                                        size_t errstr_size);
LW_API void lw_producer_conf_set_callbacks(lw_producer_conf_t *conf,
                                           lw_producer_delivered_cb *delivered,
                                           lw_producer_failed_cb *failed, void *cb_opaque);
/* Stamp every message with a "lw-sent-us" header (wall-clock microseconds at
 * send, decimal text) for end-to-end latency figures (loanwire-exposure
 * --latency-out). Off by default: a header costs librdkafka allocations per
 * message and the broker bytes and work per record. */
LW_API void lw_producer_conf_set_stamp(lw_producer_conf_t *conf, bool stamp);

/* Takes ownership of conf (also on failure). */
LW_API lw_producer_t *lw_producer_new(lw_producer_conf_t *conf, char *errstr, size_t errstr_size);
LW_API void lw_producer_destroy(lw_producer_t *p); /* flushes briefly; NULL is fine */

/*
 * Validates, encodes and enqueues ev. LW_ERR_VALIDATION (errstr "field:
 * reason") leaves nothing enqueued. A full local queue is waited out (serving
 * delivery reports), not returned. With lw_producer_conf_set_stamp() the
 * message carries a "lw-sent-us" header (wall-clock microseconds at send).
 */
LW_API lw_err_t lw_producer_send(lw_producer_t *p, const lw_event_t *ev, void *opaque, char *errstr,
                                 size_t errstr_size);
/*
 * What lw_producer_send() does before it enqueues, with the caller's codec (a
 * codec serves one thread): validates ev and encodes it into buf (cap at
 * least LW_CODEC_MAX_EVENT). LW_ERR_VALIDATION with errstr "field: reason",
 * or the encoder's error with errstr "encode: ...".
 */
LW_API lw_err_t lw_producer_encode(lw_codec_t *codec, const lw_event_t *ev, void *buf, size_t cap,
                                   size_t *len, char *errstr, size_t errstr_size);
/*
 * Enqueues a message the caller made with lw_producer_encode(), keyed by its
 * LW_BORROWER_ID_LEN-byte borrower_id. Nothing is checked here: for callers that encode on a thread
 * of their own (lw_jsonl_run). Back-pressure, stamp and errors as
 * lw_producer_send(); the payload is copied, the caller keeps it.
 */
LW_API lw_err_t lw_producer_send_encoded(lw_producer_t *p, const char *key, const void *payload,
                                         size_t len, void *opaque, char *errstr,
                                         size_t errstr_size);
/* Serves delivery reports; call regularly when not sending. */
LW_API void lw_producer_poll(lw_producer_t *p, int timeout_ms);
/* Waits until every enqueued event has its delivery report, or the timeout.
 * LW_OK when nothing is outstanding. */
LW_API lw_err_t lw_producer_flush(lw_producer_t *p, int timeout_ms);

/* Gives up on every event not yet acknowledged: each is handed to the failure
 * callback (reason "purged") before this returns. For a quick stop (SIGINT)
 * after a bounded flush; lw_producer_destroy() does the same after its flush. */
LW_API void lw_producer_purge(lw_producer_t *p);

typedef struct lw_producer_stats {
    uint64_t sent;      /* accepted by send() */
    uint64_t rejected;  /* refused by validation */
    uint64_t delivered; /* acknowledged by the broker */
    uint64_t failed;    /* finally failed, handed to the failure callback */
    uint64_t in_flight; /* sent - delivered - failed */
} lw_producer_stats_t;

LW_API void lw_producer_stats(const lw_producer_t *p, lw_producer_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_PRODUCER_H */

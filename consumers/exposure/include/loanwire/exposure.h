/*
 * loanwire/exposure.h - the bureau's exposure consumer as a library.
 *
 * Three layers, each usable on its own (tests reach every one):
 *   rules  - the rule pack (rules file format in consumers/README.md);
 *   store  - the Redis side: reads each borrower of a batch, applies the
 *            events and rules in C, writes the changed borrowers back in one
 *            fenced atomic step (MULTI/EXEC, or a script call per chunk on
 *            Redis Cluster); idempotent by the per-loan sequence rule; needs
 *            no Kafka;
 *   run    - the Kafka consumer-group member (loanwire-exposure) that feeds
 *            the store, publishes alerts and dead letters and commits offsets
 *            only behind Redis.
 */
#ifndef LOANWIRE_EXPOSURE_H
#define LOANWIRE_EXPOSURE_H

#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/state.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Rules -------------------------------------------------------------- */

typedef enum lw_rule_kind {
    LW_RULE_INCOME_CAP = 1,    /* total outstanding > min(cap_fen, income / income_divisor) */
    LW_RULE_MULTI_LENDER,      /* distinct active lenders >= min_lenders */
    LW_RULE_STACKING,          /* distinct lenders of new loans + applications in window */
    LW_RULE_BORROW_DELINQUENT, /* DRAWDOWN while another loan is past due */
    LW_RULE_INQUIRY_SPREE,     /* distinct institutions with approval inquiries in window */
    LW_RULE__CNT
} lw_rule_kind_t;

typedef struct lw_rule {
    char id[LW_ID_MAX + 1]; /* [a-z0-9_], unique in a pack */
    int32_t version;
    lw_severity_t severity;
    lw_rule_kind_t kind;
    int64_t cap_fen;        /* income_cap */
    int64_t income_divisor; /* income_cap */
    int64_t min_count;      /* multi_lender, stacking, inquiry_spree */
    int64_t window_ms;      /* stacking, inquiry_spree; 1 ms .. 90 days */
} lw_rule_t;

#define LW_RULES_MAX 32

typedef struct lw_rules_s lw_rules_t;

/* The default pack (income_cap, multi_lender, stacking, borrow_while_delinquent). */
lw_rules_t *lw_rules_default(void);
/* Parses rules text; name is used in "name:line: reason" errors. */
lw_rules_t *lw_rules_parse(const char *text, const char *name, char *errstr, size_t errstr_size);
lw_rules_t *lw_rules_load_file(const char *path, char *errstr, size_t errstr_size);
void lw_rules_destroy(lw_rules_t *rules); /* NULL is fine */
size_t lw_rules_count(const lw_rules_t *rules);
const lw_rule_t *lw_rules_get(const lw_rules_t *rules, size_t i); /* NULL past the end */
const lw_rule_t *lw_rules_find(const lw_rules_t *rules, const char *id);
const char *lw_rule_kind_name(lw_rule_kind_t k);

/* Limits per borrower that go with a pack (consumers/README.md, "Limits").
 * An event that would take a borrower past one is refused (LW_APPLY_REFUSED,
 * a dead letter), never applied in part. They bound what one borrower costs
 * per event and the size of its state string. 0 sets the default. */
#define LW_MAX_LOANS_DEFAULT  4096 /* loans in the state (every loan ever seen) */
#define LW_MAX_WINDOW_DEFAULT 4096 /* window entries: new loans + applications kept */
void lw_rules_set_limits(lw_rules_t *rules, size_t max_loans, size_t max_window);
size_t lw_rules_max_loans(const lw_rules_t *rules);
size_t lw_rules_max_window(const lw_rules_t *rules);
/* How long window entries are kept behind a borrower's latest event: the
 * pack's longest window, at least 30 days (what readers report). */
int64_t lw_rules_keep_ms(const lw_rules_t *rules);
/* Recorded inquiries a borrower's state keeps (issue 20): those of the last
 * 90 days (what readers report; longer when an inquiry_spree window is),
 * at most max_inquiries of them; an inquiry past it is refused (a dead
 * letter), as a window entry past --max-window-entries is. 0: the default. */
#define LW_MAX_INQUIRIES_DEFAULT 1024
void lw_rules_set_inquiry_limit(lw_rules_t *rules, size_t max_inquiries);
size_t lw_rules_max_inquiries(const lw_rules_t *rules);
int64_t lw_rules_inquiry_keep_ms(const lw_rules_t *rules);

/* Retention of ended loans (retention.c; consumers/README.md, "Retention"):
 * a CLOSED loan leaves its borrower's state once the borrower's latest event
 * time is more than ended_ms past the loan's end; a negative one (WRITTEN_OFF,
 * or ended while past due) after negative_ms. An event for a loan the state
 * does not hold, dated more than ended_ms behind that time, is refused. 0
 * sets the default (for negative_ms: 5 years, or ended_ms if longer);
 * LW_RETAIN_FOREVER keeps them (and refuses nothing).
 * LW_ERR_CONFIG (errstr says why) when negative_ms < ended_ms. */
#define LW_RETAIN_FOREVER             INT64_MAX
#define LW_RETAIN_ENDED_DEFAULT_MS    (90LL * 86400000)
#define LW_RETAIN_NEGATIVE_DEFAULT_MS (5LL * 31557600000LL) /* 5 years of 365.25 days */
lw_err_t lw_rules_set_retention(lw_rules_t *rules, int64_t ended_ms, int64_t negative_ms,
                                char *errstr, size_t errstr_size);
int64_t lw_rules_retain_ended(const lw_rules_t *rules);
int64_t lw_rules_retain_negative(const lw_rules_t *rules);
/* "90d", "5y" (365.25 days), "2160h", "30m", "3600s", "1500ms" or "off"
 * (LW_RETAIN_FOREVER); false for anything else (a bare number, zero). */
bool lw_retention_parse(const char *s, int64_t *ms);

/* ---- Script ------------------------------------------------------------- */

typedef struct lw_script_opts {
    bool strict_fencing; /* WATCH the partition epoch keys, write one MULTI/EXEC per batch
                          * (single Redis only); else write.lua with per-borrower stamps */
    bool alert_stream;   /* XADD alerts to LW_REDIS_ALERT_STREAM with the state */
    int64_t stream_maxlen;
    size_t chunk_max;    /* borrowers per write call; 0: LW_CHUNK_DEFAULT, or 1 on one Redis
                          * when neither strict_fencing nor alert_stream (Redis Cluster: the
                          * borrowers of one hash slot a call, at most this many) */
    int wait_replicas;   /* a write is done once WAIT says this many replicas have it
                          * (every master it touched, on a cluster); 0: the master's word */
    int wait_timeout_ms; /* WAIT's timeout; short of replicas by then: the flush is redone */
} lw_script_opts_t;

/* Borrowers per write call by default: amortises the per-call cost, keeps one call short. */
#define LW_CHUNK_DEFAULT 64

void lw_script_opts_init(lw_script_opts_t *o); /* strict, stream on, maxlen 100000 */
/* The write script of the non-strict path, options compiled in (malloc'd, caller frees). */
char *lw_script_build(const lw_script_opts_t *opts);

/* ---- Store: Redis ------------------------------------------------------- */

/* What the script did with one event. */
typedef enum lw_apply_code {
    LW_APPLY_APPLIED = 0,
    LW_APPLY_DUPLICATE = 1,    /* sequence equal to the stored one / application seen */
    LW_APPLY_OUT_OF_ORDER = 2, /* older sequence than the stored one: ignored */
    LW_APPLY_FENCED = 3,       /* writer's (topic, partition) epoch is stale: nothing written */
    LW_APPLY_REFUSED = 4,      /* not applied, for the reason given (a limit per borrower, a
                                * total that would overflow int64, an event for a loan not
                                * held older than retention): the consumer sends the
                                * event to the dead letters with it */
} lw_apply_code_t;

#define LW_APPLY_REASON_MAX 200

/* One event's outcome. The caller gives one per event of a batch, so it is
 * kept small (48 bytes): at 100,000-event batches an inline alert table and
 * reason text (488 bytes) were ~90 MB of the consumer's peak heap. What it
 * points at is the store's, valid until that flush's next begin. */
typedef struct lw_apply_result {
    lw_apply_code_t code;
    size_t n_alerts;
    const lw_alert_t *alerts; /* alerts[0 .. n_alerts): fired, or handed back by a repeat */
    int64_t ack_us;           /* wall clock (lw_now_us) when Redis's reply to its call was read */
    int64_t fence_epoch;      /* LW_APPLY_FENCED: the epoch of the borrower's fence stamp that
                               * refused it (same topic and partition, newer epoch); 0 when the
                               * partition's epoch key had moved on (strict fencing) */
    const char *reason;       /* LW_APPLY_REFUSED: why, for the dead letter (at most
                               * LW_APPLY_REASON_MAX - 1 bytes); else "" */
} lw_apply_result_t;

typedef struct lw_store_s lw_store_t;

/* Partition epoch key: "lw:epoch:<topic>:<partition>". */
void lw_epoch_key(const char *topic, int32_t partition, char *buf, size_t cap);

/* Connects (and loads the script). rules is borrowed: it must outlive the store. */
lw_store_t *lw_store_new(const char *redis_url, const lw_rules_t *rules,
                         const lw_script_opts_t *opts, char *errstr, size_t errstr_size);
void lw_store_destroy(lw_store_t *st); /* NULL is fine */
/* Drops the connection and connects again, loading the script. */
lw_err_t lw_store_reconnect(lw_store_t *st, char *errstr, size_t errstr_size);
/* SHA1 of the loaded script (40 hex + NUL). */
const char *lw_store_script_sha(const lw_store_t *st);

/* Queues one valid event for the next flush (nothing is sent yet). ev is
 * referenced, not copied: it and topic (which names the epoch key used with
 * strict fencing) must stay valid and unchanged until the flush ends. Changed borrowers are written
 * in chunks of opts.chunk_max per script call (on a cluster, of one hash slot). */
lw_err_t lw_store_append(lw_store_t *st, const lw_event_t *ev, const char *topic, int32_t partition,
                         int64_t epoch);
/* Queues one recorded inquiry the same way, iq referenced as ev is (issue
 * 20). topic and partition name its writer: those of the loan events it
 * lands with (a borrower's inquiries are in the same partition number of the
 * inquiries topic as its events in the events topic), so one epoch fences
 * both. */
lw_err_t lw_store_append_inquiry(lw_store_t *st, const lw_inquiry_t *iq, const char *topic,
                                 int32_t partition, int64_t epoch);
size_t lw_store_pending(const lw_store_t *st);
/* Applies every queued event (read the borrowers, apply in order, write back;
 * begin + commit + end below) and fills results[0..pending). On an error
 * nothing is known about which writes landed: the events stay queued, and
 * after lw_store_reconnect() the next flush does them again from the read
 * (idempotent). NOSCRIPT is handled inside (reload, resend). */
lw_err_t lw_store_flush(lw_store_t *st, lw_apply_result_t *results, char *errstr,
                        size_t errstr_size);
/* One flush of queued events, from begin to end: the store's, lent to the
 * caller (never freed by it) until its end succeeds. */
typedef struct lw_flush_s lw_flush_t;

/* Called by the flush once the batch is applied in memory and before
 * anything is written, with the flush's opaque (given to begin) and the
 * borrowers whose alerts the write changes (an alert fired or cleared; ids
 * valid during the call). LW_OK lets the write go; anything else ends the
 * flush with that error and the callback's errstr. The consumer waits here
 * for the broker to acknowledge an earlier alert of one of them, which the
 * write could otherwise overwrite. */
typedef lw_err_t lw_store_alerts_cb(void *opaque, void *flush_opaque, const char *const *borrowers,
                                    size_t n, char *errstr, size_t errstr_size);
void lw_store_set_alerts_cb(lw_store_t *st, lw_store_alerts_cb *cb, void *opaque);
/* The same in three steps, so that one batch is read and applied while
 * Redis executes the write of the one before:
 *   begin  stages the queued events as *flush (NULL when none were queued):
 *          reads their borrowers (a borrower of the write in flight takes the
 *          state that write leaves, without a read), applies them and, with
 *          strict fencing, sends the MULTI's body; nothing executes yet;
 *   commit asks the alerts callback, then sends the staged write (EXEC);
 *          the write in flight must have ended;
 *   end    reads the replies of the write in flight and fills in the
 *          results begin was given (done again from the read if a rebalance
 *          aborted it; that redo asks the alerts callback again); the flush
 *          is the store's again.
 * At most one flush is staged and one in flight; events appended meanwhile
 * queue for the next begin. results must stay valid until end. A failed
 * step keeps its events and says so; after lw_store_reconnect() the same
 * call does it again from the read (an end that failed marks the staged
 * flush, which took states from it, to be read again at its commit).
 * Commit and end of a NULL flush do nothing. lw_store_flush() runs whatever
 * steps are left, so calling it again after an error retries. */
lw_err_t lw_store_flush_begin(lw_store_t *st, lw_apply_result_t *results, void *opaque,
                              lw_flush_t **flush, char *errstr, size_t errstr_size);
lw_err_t lw_store_flush_commit(lw_store_t *st, lw_flush_t *flush, char *errstr, size_t errstr_size);
lw_err_t lw_store_flush_end(lw_store_t *st, lw_flush_t *flush, char *errstr, size_t errstr_size);
/* Drops every queued and staged event; a write in flight is dropped after
 * its replies are read (what it wrote stays written). */
void lw_store_discard(lw_store_t *st);
/* INCR of the partition epoch key: the new epoch. */
lw_err_t lw_store_epoch_next(lw_store_t *st, const char *topic, int32_t partition, int64_t *epoch,
                             char *errstr, size_t errstr_size);
/* After a fence: if the partition's epoch key still holds ours (nobody took
 * the partition since), sets it to above + 1 (*ours true, *now the new
 * epoch): the key had gone back below the borrowers' stamps. Otherwise
 * changes nothing (*ours false, *now the key's epoch, 0 if it is gone). */
lw_err_t lw_store_epoch_raise(lw_store_t *st, const char *topic, int32_t partition, int64_t ours,
                              int64_t above, bool *is_ours, int64_t *now, char *errstr,
                              size_t errstr_size);
/* Time from the last ended flush's begin to its end, microseconds (with two
 * batches in the pipeline this spans the work on the next batch too). */
int64_t lw_store_last_rtt_us(const lw_store_t *st);
/* Borrowers written again so far because another writer had changed them
 * between our read and our write (write.lua's compare refused the first
 * write; a topic that gained partitions, or several topics on one Redis). */
uint64_t lw_store_stale_retries(const lw_store_t *st);
/* Wall clock (lw_now_us) when the last flush had read every reply. */
int64_t lw_store_last_ack_us(const lw_store_t *st);
/* The control connection (for metrics and reads; may change on reconnect);
 * flushes use connections of their own. */
struct redisContext *lw_store_redis(lw_store_t *st);
/* The connection serving key: the control connection on one Redis, the
 * control handle's connection to the key's master on a cluster (NULL when
 * none can be had now). Borrowed, for single-key commands. */
struct redisContext *lw_store_redis_for(lw_store_t *st, const char *key);
/* Events per batch when the caller sets none: LW_BATCH_DEFAULT on one Redis,
 * LW_BATCH_CLUSTER_DEFAULT on a Redis Cluster, where every hash slot's
 * borrowers of a batch cost calls of their own (store_cluster.c) and B
 * distinct borrowers fall into 16384 * (1 - e^(-B/16384)) slots: a batch
 * costs ~16,384 calls at most however big (up to --chunk borrowers a call),
 * so a bigger one shares them among more events (20,000 distinct borrowers:
 * 0.58 calls each; 100,000: 0.16).
 * Measured (2M-event catch-up, 100,000 borrowers, 3 masters + replicas, one
 * consumer, quiet 2-core machine): 20,000 -> 183k events/s, redis-servers
 * 6.2 us/event, peak RSS 650 MB; 50,000 -> 228k, 4.6 us, 790 MB; 100,000 ->
 * 266-291k, 3.2 us, 980 MB; 200,000 -> 331-336k, 2.1 us, 1.29 GB; one Redis at
 * 2,000 -> 303-314k, 2.4 us, 520 MB. 100,000 keeps the cluster near one Redis
 * for ~4 KB per event of memory; a batch only fills while catching up. */
size_t lw_store_batch_default(const lw_store_t *st);
#define LW_BATCH_DEFAULT         2000
#define LW_BATCH_CLUSTER_DEFAULT 100000
#define LW_BATCH_MAX             1000000 /* --batch */

/* ---- The consumer --------------------------------------------------------- */

typedef struct lw_exposure_conf {
    const char *brokers;
    const char *group;
    const char *topic;
    const char *alerts_topic;
    const char *dlq_topic;
    const char *inquiries_topic; /* recorded inquiries, partitioned as topic; "" none; NULL:
                                  * loanwire.inquiries with the default events topic, else none */
    const char *redis_url;
    const char *rules_file; /* NULL: default pack */
    size_t max_loans;       /* limits per borrower (lw_rules_set_limits); 0: default */
    size_t max_window;
    int64_t retain_ended_ms; /* lw_rules_set_retention(); 0: default */
    int64_t retain_negative_ms;
    size_t max_inquiries;    /* lw_rules_set_inquiry_limit(); 0: default */
    const char *config_file; /* librdkafka properties, or NULL */
    const char **kafka_kv;   /* -X key=value, n_kafka_kv of them */
    size_t n_kafka_kv;
    bool from_beginning;
    bool until_caught_up;
    int exit_on_idle_s; /* 0: never */
    int status_every_s; /* status line period */
    int stall_s;        /* a partition fenced but still ours this long: stop with an
                         * error (0: never); default 30 */
    size_t batch_max;   /* events per Redis pipeline; 0: lw_store_batch_default() */
    lw_script_opts_t script;
    const char *consumer_id;    /* metrics key suffix; NULL: host:pid */
    const char *latency_out;    /* JSON event-to-state latency histograms at exit, or NULL */
    const char *metrics_listen; /* HOST:PORT of /metrics, /healthz, /readyz; NULL: off */
    bool allow_eviction;        /* start on an evicting maxmemory-policy (warn only) */
} lw_exposure_conf_t;

void lw_exposure_conf_init(lw_exposure_conf_t *c);

/* Runs until stopped (signal, --until-caught-up, --exit-on-idle). LW_OK on a
 * clean stop; an error with errstr when it could not start or failed hard. */
lw_err_t lw_exposure_run(const lw_exposure_conf_t *c, char *errstr, size_t errstr_size);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_EXPOSURE_H */

/*
 * loanwire/streams.h - reading the bureau's alert streams in time order, on a
 * single Redis (one stream, lw:alerts) or on a Redis Cluster (one stream per
 * hash slot, lw:alerts:{TAG}, beside the borrowers of that slot).
 *
 * loanwire-exposure writes an alert's stream entry in the same atomic step as
 * the borrower's state, so on a cluster the entry must live in the borrower's
 * slot: there are up to 16384 streams, each ordered by its entry ids, and no
 * server-side command reads more than one slot. Readers (loanwire-query's
 * /v1/alerts, loanwire-alerts --source redis) therefore merge them here, by
 * entry id ("<ms>-<seq>", the time the master recorded the entry), as a
 * k-way merge over per-stream buffers filled in rounds:
 *
 *   - round 1 asks every stream for its first `first_page` entries from the
 *     start point (one XRANGE or XREVRANGE per slot, pipelined per master
 *     through lw_rcluster: all masters at once, one round trip);
 *   - an entry is handed out only when it beats the frontier (the last id
 *     fetched) of every stream that may still hold more: a stream whose buffer
 *     ran dry while its frontier beats the best buffered entry blocks the
 *     merge, and the next round refills it;
 *   - a refill round also tops up the streams whose heads are among the next
 *     `hint` entries the caller expects to take, so alerts spread evenly over
 *     the slots (the usual case: a borrower's slot is a hash) need two or three
 *     rounds in all, and each stream's page doubles (2, 4, ... up to 1000) so a
 *     hot stream needs a logarithmic number of one-command rounds.
 *
 * Ties between streams (the same id recorded by two masters) are broken by
 * stream index, so the order is total and the same on every run; a reverse
 * merge gives exactly that order backwards.
 *
 * The engine is pure: it asks a fetch callback for pages and never touches
 * Redis itself, so the unit tests drive it with in-memory streams. The
 * lw_rcluster fetcher below is the one the programs use.
 */
#ifndef LOANWIRE_STREAMS_H
#define LOANWIRE_STREAMS_H

#include "loanwire/error.h"
#include "loanwire/rcluster.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A stream entry id. */
typedef struct lw_sid {
    uint64_t ms, seq;
} lw_sid_t;

/* Parses "<ms>-<seq>" (exactly; both decimal, no sign): true on success. */
bool lw_sid_parse(const char *s, size_t len, lw_sid_t *out);
int lw_sid_cmp(lw_sid_t a, lw_sid_t b); /* <0, 0, >0 */

/* Where a stream's next page starts. */
typedef enum lw_sfrom {
    LW_SFROM_OPEN = 0, /* its first entry in the merge's direction ("-" forward, "+" reverse) */
    LW_SFROM_INCL,     /* at `from`, inclusive */
    LW_SFROM_AFTER,    /* strictly beyond `from` */
} lw_sfrom_t;

/* One page asked of one stream: at most count entries from (mode, from). */
typedef struct lw_smerge_req {
    size_t stream;
    lw_sfrom_t mode;
    lw_sid_t from;
    size_t count;
} lw_smerge_req_t;

typedef struct lw_smerge lw_smerge_t;

/*
 * Fetches the pages reqs[0..n) (one round) and hands every entry to the
 * merge, in stream order, with lw_smerge_put(m, i, id, payload) where i is the
 * request's index. A request answered with fewer than count entries marks its
 * stream as at its end (until lw_smerge_rearm). Payloads must stay valid
 * until the merge is destroyed. Returns LW_OK or an error with errstr.
 */
typedef lw_err_t (*lw_smerge_fetch_fn)(void *opaque, lw_smerge_t *m, const lw_smerge_req_t *reqs,
                                       size_t n, char *errstr, size_t errstr_size);

/* A merge over nstreams streams, oldest first (reverse false) or newest first. */
lw_smerge_t *lw_smerge_new(size_t nstreams, bool reverse, lw_smerge_fetch_fn fetch, void *opaque);
void lw_smerge_destroy(lw_smerge_t *m); /* NULL is fine */

/* Every stream starts at (mode, from) (default: LW_SFROM_OPEN). Before the
 * first next. */
void lw_smerge_start(lw_smerge_t *m, lw_sfrom_t mode, lw_sid_t from);
/* Stream i alone starts at (mode, from), e.g. to resume after (id, stream):
 * later streams INCL id, the others AFTER it. */
void lw_smerge_start_stream(lw_smerge_t *m, size_t i, lw_sfrom_t mode, lw_sid_t from);
/* COUNT of the first round's page per stream (default 1). */
void lw_smerge_first_page(lw_smerge_t *m, size_t count);
/* How many more entries the caller expects to take: the refill rounds top up
 * the streams holding the next `hint` heads (default 1). */
void lw_smerge_hint(lw_smerge_t *m, size_t hint);

/* For fetch callbacks: entry of request i (in stream order). False when out of
 * memory, or when the id does not move strictly in the merge's direction
 * (the entry is then dropped: a stream never goes back). */
bool lw_smerge_put(lw_smerge_t *m, size_t i, lw_sid_t id, const void *payload);

/*
 * The next entry in order. *end true (and nothing else set) when every stream
 * is at its end, or when bound is not NULL and the next entry is not strictly
 * before *bound in the merge's direction (it is kept for a later call).
 */
lw_err_t lw_smerge_next(lw_smerge_t *m, const lw_sid_t *bound, lw_sid_t *id, size_t *stream,
                        const void **payload, bool *end, char *errstr, size_t errstr_size);

/* Following: every stream found at its end is read again from its frontier
 * by the next round (new entries may have arrived). */
void lw_smerge_rearm(lw_smerge_t *m);

/* Rounds run and pages asked so far (for tests and the documented cost). */
size_t lw_smerge_rounds(const lw_smerge_t *m);
size_t lw_smerge_pages(const lw_smerge_t *m);

/* ---- The alert streams on Redis (lw_rcluster) ------------------------------ */

/*
 * The alert streams of a deployment: on a cluster one per slot,
 * "lw:alerts:{TAG}" with TAG = lw_rcluster_slot_tag(slot), the stream
 * loanwire-exposure writes a borrower's alerts to (its key lives in that very
 * slot); on a single Redis the one stream lw:alerts. Stream i's key into buf;
 * its length (0: bad index or small buf). lw_alert_streams_count() is 16384
 * or 1.
 */
size_t lw_alert_streams_count(const lw_rcluster_t *cl);
size_t lw_alert_stream_key(const lw_rcluster_t *cl, size_t i, char *buf, size_t cap);
/* The slot of stream i. */
int lw_alert_stream_slot(const lw_rcluster_t *cl, size_t i);

/*
 * The watermark of the alert streams: the smallest clock (TIME, in ms) of the
 * masters, asked of all at once. An entry a master records after answering has
 * an id at or above its clock, so every entry below *ms is already readable:
 * a reader that shows only those never shows a later entry with a smaller id
 * than one it showed (paging with since, following). LW_ERR_REDIS with errstr
 * when a master does not answer (the map is reloaded for the next try).
 */
lw_err_t lw_alert_streams_clock(lw_rcluster_t *cl, uint64_t *ms, char *errstr, size_t errstr_size);

/*
 * A merge of the alert streams of cl: each round is one lw_rcluster batch,
 * one group per stream asked (XRANGE or XREVRANGE ... COUNT n), so every
 * master gets its slots' commands pipelined and all masters work at once.
 * Entries are their replies ([id, [field, value, ...]]), owned by the merge.
 * cl must outlive it; the merge and cl belong to one thread.
 */
typedef struct lw_alert_merge lw_alert_merge_t;
lw_alert_merge_t *lw_alert_merge_new(lw_rcluster_t *cl, bool reverse);
/* The engine, to set its start, first page and hint before the first next. */
lw_smerge_t *lw_alert_merge_engine(lw_alert_merge_t *am);
/*
 * lw_smerge_next on the streams; *entry is the entry's reply, valid until the
 * next call (a round's replies are freed once all its entries were handed
 * out, so a follower's memory stays bounded by what is buffered).
 */
lw_err_t lw_alert_merge_next(lw_alert_merge_t *am, const lw_sid_t *bound, lw_sid_t *id,
                             size_t *stream, const redisReply **entry, bool *end, char *errstr,
                             size_t errstr_size);
void lw_alert_merge_destroy(lw_alert_merge_t *am); /* NULL is fine */

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_STREAMS_H */

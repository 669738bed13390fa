/*
 * jsonl.h - loanwire-produce's work, as a library call: read JSON Lines
 * events from files or stdin, validate, pseudonymise raw national ids,
 * produce, and account for every line (delivered, or in the rejects file
 * with its reason).
 *
 * Rejects file: for each refused or undelivered line, a comment line
 *   # SOURCE:LINE: FIELD: REASON
 * followed by the line itself (the input line unchanged for lines refused
 * on reading; for an event that failed delivery, the event as JSON with its
 * borrower_id). Lines starting with '#' and blank lines are skipped on input,
 * so a corrected rejects file can be fed back to loanwire-produce as it is.
 */
#ifndef LOANWIRE_JSONL_H
#define LOANWIRE_JSONL_H

#include "loanwire/id.h"
#include "loanwire/producer.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct lw_jsonl_opts {
    const char *rejects_path;  /* one file for every input; NULL = <input>.rejects each,
                                  loanwire-rejects.jsonl for stdin */
    const lw_id_key_t *id_key; /* pseudonymise "national_id"; NULL = refuse such lines */
    bool dry_run;              /* validate only: p may be NULL */
    bool progress;             /* draw the progress line (on a tty only) */
    int stop_flush_ms;         /* after SIGINT: wait this long for reports, then purge */
} lw_jsonl_opts_t;

typedef struct lw_jsonl_summary {
    uint64_t read;            /* event lines read (not blank, not comments) */
    uint64_t rejected;        /* refused: unreadable JSON, bad id, failed validation */
    uint64_t sent;            /* handed to Kafka */
    uint64_t delivered;       /* acknowledged by the broker */
    uint64_t failed;          /* not delivered: final delivery error, or could not be enqueued */
    uint64_t rejects_written; /* entries in rejects files */
    bool interrupted;         /* SIGINT/SIGTERM stopped the reading */
    bool io_error;            /* an input or a rejects file could not be read/written */
} lw_jsonl_summary_t;

typedef struct lw_jsonl_s lw_jsonl_t;

/* The callbacks lw_jsonl_run() needs on the producer: set them with
 * lw_jsonl_producer_callbacks() on the conf before lw_producer_new(). */
lw_jsonl_t *lw_jsonl_new(const lw_jsonl_opts_t *opts);
void lw_jsonl_destroy(lw_jsonl_t *j); /* NULL is fine */
void lw_jsonl_producer_callbacks(lw_jsonl_t *j, lw_producer_conf_t *conf);

/* Reads every input ("-" is stdin), in order; p NULL only when dry_run.
 * Flushes the producer before returning (purges after SIGINT). Fills *sum. */
void lw_jsonl_run(lw_jsonl_t *j, lw_producer_t *p, const char *const *inputs, int n_inputs,
                  lw_jsonl_summary_t *sum);

#endif /* LOANWIRE_JSONL_H */

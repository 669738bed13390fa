/*
 * reconcile_int.h - private to loanwire-reconcile: the set of the snapshot's
 * loans that --full keeps (fpset.c).
 */
#ifndef LOANWIRE_RECONCILE_INT_H
#define LOANWIRE_RECONCILE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A growing set of 64-bit fingerprints (open addressing, linear probing,
 * at most 3/4 full, doubled when it would be fuller). 8 bytes a slot, so
 * 10.7 to 21.3 bytes per key, and half as much again while it grows.
 */
typedef struct lw_fpset {
    uint64_t *slot; /* key, or 0 for empty (a key of 0 is stored as 1) */
    size_t cap, n;
} lw_fpset_t;

void lw_fpset_init(lw_fpset_t *s);
void lw_fpset_free(lw_fpset_t *s);
/* 1 added, 0 already there, -1 out of memory (s unchanged). */
int lw_fpset_add(lw_fpset_t *s, uint64_t key);
bool lw_fpset_has(const lw_fpset_t *s, uint64_t key);
size_t lw_fpset_bytes(const lw_fpset_t *s);

/* The fingerprint of a loan of the reconciled platform: 64 bits of a hash
 * of borrower id and loan id. Two loans share one with probability about
 * n^2 / 2^65 over n loans (3e-6 for ten million): then --full could miss
 * one unknown_to_platform loan, never report a false one. */
uint64_t lw_recon_fingerprint(const char *borrower_id, const char *loan_id);

#endif

/*
 * exposure_int.h - private struct bodies and helpers of lw_exposure.
 */
#ifndef LOANWIRE_EXPOSURE_INT_H
#define LOANWIRE_EXPOSURE_INT_H

#include "loanwire/exposure.h"
#include "loanwire/state.h"

#include <hiredis/hiredis.h>

/* Window entries are kept this long behind the borrower's latest event. */
#define LW_WINDOW_KEEP_MS LW_WINDOW_30D
/* Layout version: first byte of a borrower's state string (consumers/README.md). */
#define LW_STATE_VERSION 1

/* Bytes per window entry: '>I6I6I4' time, id hash|kind, lender hash. */
#define LW_WIN_ENTRY_LEN 16

struct lw_rules_s {
    size_t n;
    lw_rule_t rules[LW_RULES_MAX];
};

/* The embedded apply.lua (generated from src/apply.lua at build time). */
extern const char lw_apply_lua[];

/* The queued commands as RESP (for loanwire-exposure-bench --dump). */
const char *lw_store_pending_buf(lw_store_t *st, size_t *len);

#endif

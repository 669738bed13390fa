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
/* Bytes per window entry in field 'w': '>I6I6I4' time, id hash|kind, lender hash. */
#define LW_WIN_ENTRY_LEN 16

struct lw_rules_s {
    size_t n;
    lw_rule_t rules[LW_RULES_MAX];
};

/* The embedded apply.lua (generated from src/apply.lua at build time). */
extern const char lw_apply_lua[];

/* Minimal msgpack reader for what apply.lua writes (ints, strings). */
typedef struct lw_mp {
    const unsigned char *p, *end;
} lw_mp_t;
/* Reads an integer (any msgpack int or an integral float64). false on error. */
bool lw_mp_int(lw_mp_t *m, int64_t *out);
/* Reads a string into buf (NUL-terminated). false on error or if too long. */
bool lw_mp_str(lw_mp_t *m, char *buf, size_t cap);

/* The queued commands as RESP (for loanwire-exposure-bench --dump). */
const char *lw_store_pending_buf(lw_store_t *st, size_t *len);

#endif

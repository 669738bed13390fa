/*
 * loanwire/validate.h - domain rules of a loan event (schemas/README.md).
 *
 * Non-negative amounts, a known currency, non-empty ids of legal characters,
 * a well-formed borrower id, 0 < sequence < 2^53, outstanding >= 0, an event
 * time that is not absurd (after 2000-01-01, before 2100-01-01) and not further
 * ahead of the validating clock than lw_validate_max_future_ms(), and the
 * fields each event type needs. Returns LW_OK or LW_ERR_VALIDATION with the
 * field and the reason in *ferr.
 *
 * The producer and the consumer both validate with these functions, so what
 * one accepts the other applies: the bounds below are the one place they are
 * defined.
 */
#ifndef LOANWIRE_VALIDATE_H
#define LOANWIRE_VALIDATE_H

#include "loanwire/api.h"

#include "loanwire/error.h"
#include "loanwire/event.h"
#include "loanwire/json.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A sequence must be below this: the borrower state stores it as an exact
 * integer that JSON readers with doubles read exactly, and the consumer sums
 * nothing with it (consumers/README.md). */
#define LW_SEQUENCE_LIMIT ((int64_t)1 << 53)

/* How far ahead of the validating clock occurred_at may be, by default: 24 h.
 * Windows and rules run on event time relative to a borrower's latest event,
 * so one event dated years ahead would blind them for that borrower; clocks
 * of honest platforms are minutes apart, not a day. */
#define LW_MAX_FUTURE_MS_DEFAULT (24LL * 3600 * 1000)

/* The bound lw_event_validate() applies (ms; 0 turns the check off; negative
 * is taken as 0). Process-wide: set it at start, before threads validate. */
LW_API void lw_validate_set_max_future_ms(int64_t ms);
LW_API int64_t lw_validate_max_future_ms(void);

/* Validates against the wall clock (CLOCK_REALTIME) for the future bound. */
LW_API lw_err_t lw_event_validate(const lw_event_t *ev, lw_field_error_t *ferr);
/* The same against a clock given in ms since the epoch (tests, replays). */
LW_API lw_err_t lw_event_validate_at(const lw_event_t *ev, int64_t now_ms, lw_field_error_t *ferr);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_VALIDATE_H */

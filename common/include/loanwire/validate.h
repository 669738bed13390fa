/*
 * loanwire/validate.h - domain rules of a loan event (schemas/README.md).
 *
 * Non-negative amounts, a known currency, non-empty ids of legal characters,
 * a well-formed borrower id, sequence > 0, outstanding >= 0, an event time
 * that is not absurd (after 2000-01-01, before 2100-01-01), and the fields each
 * event type needs. Returns LW_OK or LW_ERR_VALIDATION with the field and the
 * reason in *ferr.
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

LW_API lw_err_t lw_event_validate(const lw_event_t *ev, lw_field_error_t *ferr);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_VALIDATE_H */

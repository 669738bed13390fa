/*
 * loanwire/json.h - the plain JSON form of events and alerts.
 *
 * Field names as in the schema, enums as their symbol names, optional fields
 * null or absent, amounts as JSON integers (never floats), occurred_at as
 * integer milliseconds since the epoch. This is what loanwire-produce reads
 * (one object per line) and what loanwire-avro decode prints.
 *
 * A raw national id may be given instead of borrower_id in the field
 * "national_id"; the reader reports it in *raw_id (when non-NULL) and leaves
 * borrower_id empty, so the caller can pseudonymise it (loanwire/id.h).
 */
#ifndef LOANWIRE_JSON_H
#define LOANWIRE_JSON_H

#include "loanwire/api.h"

#include "loanwire/error.h"
#include "loanwire/event.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_RAW_ID_FIELD "national_id"

/* Where a JSON event was wrong: the field (or "" for the line as a whole). */
typedef struct lw_field_error {
    char field[48];
    char reason[200];
} lw_field_error_t;

/*
 * Parses one JSON object into *ev (all fields reset first; currency defaults
 * to "CNY"). Unknown fields are an error. raw_id, if non-NULL, has room for
 * LW_ID_MAX+1 bytes and receives the "national_id" value or "".
 */
LW_API lw_err_t lw_event_from_json(const char *text, size_t len, lw_event_t *ev, char *raw_id,
                                   lw_field_error_t *ferr);

/* Writes ev as one line of compact JSON (no newline) into buf. Returns the
 * length, or -1 when cap is too small. */
LW_API int lw_event_to_json(const lw_event_t *ev, char *buf, size_t cap);
LW_API int lw_alert_to_json(const lw_alert_t *al, char *buf, size_t cap);
LW_API int lw_inquiry_to_json(const lw_inquiry_t *iq, char *buf, size_t cap);
LW_API lw_err_t lw_alert_from_json(const char *text, size_t len, lw_alert_t *al,
                                   lw_field_error_t *ferr);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_JSON_H */

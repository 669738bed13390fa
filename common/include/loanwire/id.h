/*
 * loanwire/id.h - pseudonymous borrower ids.
 *
 * borrower_id = base64url-nopad(HMAC-SHA256(key, normalised national id)[0..16))
 * (HMAC-SHA-256-128 as RFC 4868 truncates it): 22 characters. Platforms and
 * the bureau share the key, so one person's loans join across platforms while
 * raw ids never leave the platform.
 *
 * Normalisation: trim, drop spaces and hyphens, upper-case. An 18-character
 * PRC resident identity number must pass its ISO 7064 MOD 11-2 check digit.
 * A 15-digit (first-generation) PRC id is upgraded to its 18-digit form
 * first (GB 11643-1999: "19" inserted after the 6-digit area code, then the
 * check digit), so both forms of one person's id give one borrower_id.
 */
#ifndef LOANWIRE_ID_H
#define LOANWIRE_ID_H

#include "loanwire/api.h"

#include "loanwire/error.h"
#include "loanwire/event.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_ID_KEY_MIN 32 /* bytes */
#define LW_ID_KEY_MAX 128

typedef struct lw_id_key_s lw_id_key_t;

/* Loads a key file: hex digits (>= 64 of them) on one line. A file readable
 * by group or others is refused. NULL on failure with errstr set. */
LW_API lw_id_key_t *lw_id_key_load(const char *path, char *errstr, size_t errstr_size);
/* A key from raw bytes (tests, embedding). */
LW_API lw_id_key_t *lw_id_key_new(const unsigned char *key, size_t len, char *errstr,
                                  size_t errstr_size);
LW_API void lw_id_key_destroy(lw_id_key_t *key); /* NULL is fine; wipes the key */

/* Normalises raw into out (cap bytes). LW_ERR_BAD_ID with errstr on failure. */
LW_API lw_err_t lw_id_normalise(const char *raw, char *out, size_t cap, char *errstr,
                                size_t errstr_size);

/* Normalises and pseudonymises: out receives LW_BORROWER_ID_LEN chars + NUL. */
LW_API lw_err_t lw_id_pseudonymise(const lw_id_key_t *key, const char *raw,
                                   char out[LW_BORROWER_ID_LEN + 1], char *errstr,
                                   size_t errstr_size);

/* True when s has the form of a borrower id (22 base64url characters). */
LW_API bool lw_borrower_id_is_valid(const char *s);

/* The base64url alphabet (RFC 4648 section 5, value order) and the value of
 * one of its characters, -1 for any other byte. */
extern const char lw_b64url_alphabet[65];
extern const signed char lw_b64url_values[256];
static inline int lw_b64url_value(unsigned char c)
{
    return lw_b64url_values[c];
}

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_ID_H */

/*
 * id_int.h - internals of id.c that the unit tests reach: the raw keyed
 * HMAC-SHA256 (for the RFC 4231 vectors, whose keys and messages fall outside
 * what the public API accepts) and the base64url step.
 */
#ifndef LOANWIRE_ID_INT_H
#define LOANWIRE_ID_INT_H

#include "loanwire/id.h"

/* A key of any length >= 1 (the public lw_id_key_new() insists on 32..128). */
lw_id_key_t *lw_id_key_new_raw(const unsigned char *key, size_t len, char *errstr,
                               size_t errstr_size);
/* Full 32-byte HMAC-SHA256 of data under key. */
lw_err_t lw_id_key_mac(const lw_id_key_t *key, const void *data, size_t len, unsigned char out[32]);
/* base64url without padding of 16 bytes: 22 characters + NUL. */
void lw_id_b64url_16(const unsigned char in[16], char out[LW_BORROWER_ID_LEN + 1]);

#endif /* LOANWIRE_ID_INT_H */

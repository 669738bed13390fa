/*
 * loanwire/error.h - error codes shared by every Loanwire library.
 *
 * As in librdkafka: OK is 0, lw_err2str() names each code, and functions that
 * can fail for a reason a person must read also take an errstr buffer and its
 * size. lw_err_is_retriable() tells a passing fault (broker or Redis away,
 * queue full) from one that retrying cannot mend (bad input, bad config).
 */
#ifndef LOANWIRE_ERROR_H
#define LOANWIRE_ERROR_H

#include "loanwire/api.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lw_err {
    LW_OK = 0,
    LW_ERR_INVALID_ARG,    /* caller passed something unusable */
    LW_ERR_CONFIG,         /* bad configuration value or file */
    LW_ERR_IO,             /* a file could not be read or written */
    LW_ERR_NOMEM,          /* allocation failed */
    LW_ERR_PARSE,          /* JSON / properties text is malformed */
    LW_ERR_VALIDATION,     /* an event breaks a domain rule */
    LW_ERR_TRUNCATED,      /* input ended before the datum did */
    LW_ERR_BAD_MAGIC,      /* not single-object Avro (marker != C3 01) */
    LW_ERR_UNKNOWN_SCHEMA, /* fingerprint of no known schema */
    LW_ERR_TRAILING_BYTES, /* datum ended before the input did */
    LW_ERR_SCHEMA,         /* a schema is invalid or cannot be resolved */
    LW_ERR_CRYPTO,         /* libcrypto failed */
    LW_ERR_BAD_ID,         /* a national id failed normalisation/checksum */
    LW_ERR_KAFKA,          /* fatal Kafka error */
    LW_ERR_REDIS,          /* fatal Redis error */
    LW_ERR_TRANSIENT,      /* retriable: server away, timeout, queue full */
    LW_ERR_FENCED,         /* this writer lost ownership; stop writing */
    LW_ERR__CNT
} lw_err_t;

LW_API const char *lw_err2str(lw_err_t err);
LW_API bool lw_err_is_retriable(lw_err_t err);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_ERROR_H */

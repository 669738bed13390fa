/* error.c - names of lw_err_t codes and which of them are worth retrying. */
#include "loanwire/error.h"

static const char *const lw_err_names[LW_ERR__CNT] = {
    [LW_OK] = "Success",
    [LW_ERR_INVALID_ARG] = "Invalid argument",
    [LW_ERR_CONFIG] = "Configuration error",
    [LW_ERR_IO] = "I/O error",
    [LW_ERR_NOMEM] = "Out of memory",
    [LW_ERR_PARSE] = "Malformed input text",
    [LW_ERR_VALIDATION] = "Event failed validation",
    [LW_ERR_TRUNCATED] = "Input truncated",
    [LW_ERR_BAD_MAGIC] = "Not a single-object Avro record (bad marker)",
    [LW_ERR_UNKNOWN_SCHEMA] = "Unknown schema fingerprint",
    [LW_ERR_TRAILING_BYTES] = "Trailing bytes after datum",
    [LW_ERR_SCHEMA] = "Schema error",
    [LW_ERR_CRYPTO] = "Cryptographic library error",
    [LW_ERR_BAD_ID] = "Invalid national id",
    [LW_ERR_KAFKA] = "Kafka error",
    [LW_ERR_REDIS] = "Redis error",
    [LW_ERR_TRANSIENT] = "Transient error, retry",
    [LW_ERR_FENCED] = "Fenced: ownership lost",
};

const char *lw_err2str(lw_err_t err)
{
    if ((unsigned)err >= LW_ERR__CNT)
        return "Unknown error";
    return lw_err_names[err];
}

bool lw_err_is_retriable(lw_err_t err)
{
    return err == LW_ERR_TRANSIENT;
}

/*
 * query_int.h - private parts of loanwire-query shared between its files.
 */
#ifndef LOANWIRE_QUERY_INT_H
#define LOANWIRE_QUERY_INT_H

#include "loanwire/query.h"

#include <openssl/sha.h>

struct lw_tokens_s {
    size_t n;
    unsigned char (*digest)[SHA256_DIGEST_LENGTH];
};

#endif /* LOANWIRE_QUERY_INT_H */

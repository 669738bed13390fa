/*
 * loanwire/hash.h - FNV-1a, the one string hash of in-process tables (borrower
 * ids, names): fast, good enough for open addressing, never for security.
 */
#ifndef LOANWIRE_HASH_H
#define LOANWIRE_HASH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline uint64_t lw_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_HASH_H */

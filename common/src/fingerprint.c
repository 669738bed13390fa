/*
 * fingerprint.c - CRC-64-AVRO, the 64-bit Rabin fingerprint the Avro
 * specification defines for schemas ("Schema Fingerprints"). Single-object
 * encoding puts it, little-endian, after the C3 01 marker.
 */
#include "loanwire/codec.h"

#include <pthread.h>
#include <stdint.h>

#define LW_FP_EMPTY 0xc15d213aa4d7a795ULL

/* The spec's 256-entry table, built once on first use. */
static uint64_t lw_fp_table[256];
static pthread_once_t lw_fp_once = PTHREAD_ONCE_INIT;

static void lw_fp_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint64_t fp = (uint64_t)i;
        for (int j = 0; j < 8; j++)
            fp = (fp >> 1) ^ (LW_FP_EMPTY & (0 - (fp & 1)));
        lw_fp_table[i] = fp;
    }
}

uint64_t lw_fingerprint64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t fp = LW_FP_EMPTY;

    pthread_once(&lw_fp_once, lw_fp_init);
    for (size_t i = 0; i < len; i++)
        fp = (fp >> 8) ^ lw_fp_table[(fp ^ p[i]) & 0xff];
    return fp;
}

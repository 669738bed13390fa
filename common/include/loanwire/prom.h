/*
 * loanwire/prom.h - Prometheus text exposition format (version 0.0.4).
 *
 * Each program that serves /metrics renders its own figures with these into
 * an lw_sbuf_t: a "# HELP"/"# TYPE" header once per family, then one sample
 * line per label set. Label values are escaped (\\, \", \n) as the format
 * requires; names are the caller's constants and are not checked.
 */
#ifndef LOANWIRE_PROM_H
#define LOANWIRE_PROM_H

#include "loanwire/buf.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* "# HELP name help" and "# TYPE name type" (type: counter, gauge, ...). */
bool lw_prom_family(lw_sbuf_t *b, const char *name, const char *type, const char *help);
/* name{k1="v1",...} value: labels is k, v, k, v, ..., NULL (or NULL for none). */
bool lw_prom_u64(lw_sbuf_t *b, const char *name, const char *const *labels, uint64_t v);
bool lw_prom_i64(lw_sbuf_t *b, const char *name, const char *const *labels, int64_t v);
/* Non-money gauges only (seconds, ratios); NaN and infinities as Prometheus spells them. */
bool lw_prom_double(lw_sbuf_t *b, const char *name, const char *const *labels, double v);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_PROM_H */

/*
 * prom.c - Prometheus text exposition (loanwire/prom.h).
 *
 * Small on purpose: the programs render a few dozen families, so a client
 * library with registries and collectors would be more code than the figures.
 * Every write goes through prom_printf, which grows the buffer and leaves it
 * unchanged when memory runs out (the caller then answers 500).
 */
#include "loanwire/prom.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 2, 3))) static bool prom_printf(lw_sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !lw_sbuf_reserve(b, (size_t)n + 1))
        return false;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return true;
}

static bool prom_escaped(lw_sbuf_t *b, const char *s, bool help)
{
    for (; *s; s++) {
        const char *e = NULL;
        if (*s == '\\')
            e = "\\\\";
        else if (*s == '\n')
            e = "\\n";
        else if (*s == '"' && !help) /* HELP text escapes only \ and newline */
            e = "\\\"";
        if (!(e ? prom_printf(b, "%s", e) : prom_printf(b, "%c", *s)))
            return false;
    }
    return true;
}

bool lw_prom_family(lw_sbuf_t *b, const char *name, const char *type, const char *help)
{
    return prom_printf(b, "# HELP %s ", name) && prom_escaped(b, help, true) &&
           prom_printf(b, "\n# TYPE %s %s\n", name, type);
}

static bool prom_head(lw_sbuf_t *b, const char *name, const char *const *labels)
{
    if (!prom_printf(b, "%s", name))
        return false;
    if (!labels || !labels[0])
        return true;
    for (size_t i = 0; labels[i] && labels[i + 1]; i += 2)
        if (!prom_printf(b, "%s%s=\"", i ? "," : "{", labels[i]) ||
            !prom_escaped(b, labels[i + 1], false) || !prom_printf(b, "\""))
            return false;
    return prom_printf(b, "}");
}

bool lw_prom_u64(lw_sbuf_t *b, const char *name, const char *const *labels, uint64_t v)
{
    return prom_head(b, name, labels) && prom_printf(b, " %" PRIu64 "\n", v);
}

bool lw_prom_i64(lw_sbuf_t *b, const char *name, const char *const *labels, int64_t v)
{
    return prom_head(b, name, labels) && prom_printf(b, " %" PRId64 "\n", v);
}

bool lw_prom_double(lw_sbuf_t *b, const char *name, const char *const *labels, double v)
{
    if (!prom_head(b, name, labels))
        return false;
    if (isnan(v))
        return prom_printf(b, " NaN\n");
    if (isinf(v))
        return prom_printf(b, " %sInf\n", v > 0 ? "+" : "-");
    return prom_printf(b, " %.17g\n", v);
}

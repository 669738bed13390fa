/*
 * canonical.c - Parsing Canonical Form of an Avro schema (Avro specification,
 * "Parsing Canonical Form for Schemas"), which Avro C 1.11 lacks. The form's
 * CRC-64-AVRO fingerprint identifies the writer schema in single-object
 * encoding, so this must match the Java/Python implementations byte for byte:
 *   [PRIMITIVES] {"type":"int"} -> "int"
 *   [FULLNAMES]  names (definitions and references) become full names,
 *                namespaces inherited by nested named types
 *   [STRIP]      keep only name, type, fields, symbols, items, values, size
 *   [ORDER]      in that order
 *   [STRINGS]    escapes replaced by the characters (names are plain ASCII)
 *   [INTEGERS]   size as a bare integer without leading zeros
 *   [WHITESPACE] none
 */
#include "loanwire/codec.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LW_PCF_MAX_DEPTH 64

typedef struct lw_pcf {
    char *buf;
    size_t len, cap;
    char **names; /* full names defined so far */
    size_t nnames, names_cap;
    char *errstr;
    size_t errstr_size;
    int failed;
} lw_pcf_t;

static void pcf_fail(lw_pcf_t *p, const char *fmt, ...)
{
    va_list ap;
    if (p->failed)
        return;
    p->failed = 1;
    if (p->errstr && p->errstr_size) {
        va_start(ap, fmt);
        vsnprintf(p->errstr, p->errstr_size, fmt, ap);
        va_end(ap);
    }
}

static void pcf_put(lw_pcf_t *p, const char *s, size_t n)
{
    if (p->failed)
        return;
    if (p->len + n + 1 > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        while (cap < p->len + n + 1)
            cap *= 2;
        char *nb = realloc(p->buf, cap);
        if (!nb) {
            pcf_fail(p, "out of memory");
            return;
        }
        p->buf = nb;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

static void pcf_puts(lw_pcf_t *p, const char *s)
{
    pcf_put(p, s, strlen(s));
}

/* A JSON string literal. Names and symbols are [A-Za-z0-9_.]; escape anyway
 * what JSON requires so that odd input still gives valid JSON. */
static void pcf_quote(lw_pcf_t *p, const char *s)
{
    pcf_put(p, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            pcf_put(p, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            pcf_put(p, esc, 6);
        } else {
            pcf_put(p, (const char *)&c, 1);
        }
    }
    pcf_put(p, "\"", 1);
}

static const char *const lw_primitives[] = {"null",   "boolean", "int",    "long", "float",
                                            "double", "bytes",   "string", NULL};

static int is_primitive(const char *s)
{
    for (int i = 0; lw_primitives[i]; i++)
        if (!strcmp(s, lw_primitives[i]))
            return 1;
    return 0;
}

static int name_known(lw_pcf_t *p, const char *full)
{
    for (size_t i = 0; i < p->nnames; i++)
        if (!strcmp(p->names[i], full))
            return 1;
    return 0;
}

static void name_add(lw_pcf_t *p, const char *full)
{
    if (name_known(p, full)) {
        pcf_fail(p, "type %s is defined twice", full);
        return;
    }
    if (p->nnames == p->names_cap) {
        size_t cap = p->names_cap ? p->names_cap * 2 : 16;
        char **nn = realloc(p->names, cap * sizeof(*nn));
        if (!nn) {
            pcf_fail(p, "out of memory");
            return;
        }
        p->names = nn;
        p->names_cap = cap;
    }
    p->names[p->nnames] = strdup(full);
    if (!p->names[p->nnames]) {
        pcf_fail(p, "out of memory");
        return;
    }
    p->nnames++;
}

/* name + enclosing namespace -> malloc'd full name (spec, "Names"). */
static char *full_name(const char *name, const char *ns)
{
    char *out;
    if (strchr(name, '.') || !ns || !*ns)
        return strdup(name);
    size_t n = strlen(ns) + 1 + strlen(name) + 1;
    out = malloc(n);
    if (out)
        snprintf(out, n, "%s.%s", ns, name);
    return out;
}

static void pcf_schema(lw_pcf_t *p, json_t *s, const char *ns, int depth);

/* A type given by name: a primitive or a reference to a named type. */
static void pcf_type_name(lw_pcf_t *p, const char *name, const char *ns)
{
    if (is_primitive(name)) {
        pcf_quote(p, name);
        return;
    }
    char *full = full_name(name, ns);
    if (!full) {
        pcf_fail(p, "out of memory");
        return;
    }
    /* As Java's Schema.Names: an unqualified name not found in the enclosing
     * namespace may name a type of the null namespace. */
    if (!name_known(p, full) && !strchr(name, '.') && name_known(p, name)) {
        free(full);
        full = strdup(name);
        if (!full) {
            pcf_fail(p, "out of memory");
            return;
        }
    }
    if (!name_known(p, full))
        pcf_fail(p, "unknown type \"%s\"", name);
    pcf_quote(p, full);
    free(full);
}

static void pcf_named(lw_pcf_t *p, json_t *s, const char *type, const char *ns, int depth)
{
    json_t *jname = json_object_get(s, "name");
    json_t *jns = json_object_get(s, "namespace");
    char *full, *own_ns;
    const char *dot;

    if (!json_is_string(jname) || !*json_string_value(jname)) {
        pcf_fail(p, "%s without a name", type);
        return;
    }
    if (jns && !json_is_null(jns) && !json_is_string(jns)) {
        pcf_fail(p, "namespace of %s is not a string", json_string_value(jname));
        return;
    }
    full = full_name(json_string_value(jname), json_is_string(jns) ? json_string_value(jns) : ns);
    if (!full) {
        pcf_fail(p, "out of memory");
        return;
    }
    name_add(p, full);
    /* Nested definitions inherit this type's namespace. */
    dot = strrchr(full, '.');
    own_ns = dot ? strndup(full, (size_t)(dot - full)) : strdup("");
    if (!own_ns) {
        free(full);
        pcf_fail(p, "out of memory");
        return;
    }

    pcf_puts(p, "{\"name\":");
    pcf_quote(p, full);
    pcf_puts(p, ",\"type\":");
    pcf_quote(p, type);
    if (!strcmp(type, "record") || !strcmp(type, "error")) {
        json_t *fields = json_object_get(s, "fields");
        size_t i;
        json_t *f;
        if (!json_is_array(fields))
            pcf_fail(p, "record %s has no fields array", full);
        pcf_puts(p, ",\"fields\":[");
        json_array_foreach(fields, i, f)
        {
            json_t *fn = json_object_get(f, "name");
            json_t *ft = json_object_get(f, "type");
            if (!json_is_string(fn) || !ft) {
                pcf_fail(p, "field %zu of record %s needs a name and a type", i, full);
                break;
            }
            if (i)
                pcf_puts(p, ",");
            pcf_puts(p, "{\"name\":");
            pcf_quote(p, json_string_value(fn));
            pcf_puts(p, ",\"type\":");
            pcf_schema(p, ft, own_ns, depth + 1);
            pcf_puts(p, "}");
        }
        pcf_puts(p, "]");
    } else if (!strcmp(type, "enum")) {
        json_t *syms = json_object_get(s, "symbols");
        size_t i;
        json_t *sym;
        if (!json_is_array(syms))
            pcf_fail(p, "enum %s has no symbols array", full);
        pcf_puts(p, ",\"symbols\":[");
        json_array_foreach(syms, i, sym)
        {
            if (!json_is_string(sym)) {
                pcf_fail(p, "enum %s has a symbol that is not a string", full);
                break;
            }
            if (i)
                pcf_puts(p, ",");
            pcf_quote(p, json_string_value(sym));
        }
        pcf_puts(p, "]");
    } else { /* fixed */
        json_t *size = json_object_get(s, "size");
        long long n = -1;
        char num[32];
        if (json_is_integer(size)) {
            n = json_integer_value(size);
        } else if (json_is_string(size)) { /* [INTEGERS]: "0016" -> 16 */
            const char *t = json_string_value(size);
            char *end;
            if (*t >= '0' && *t <= '9') {
                n = strtoll(t, &end, 10);
                if (*end)
                    n = -1;
            }
        }
        if (n < 0)
            pcf_fail(p, "fixed %s needs a non-negative integer size", full);
        snprintf(num, sizeof(num), "%lld", n);
        pcf_puts(p, ",\"size\":");
        pcf_puts(p, num);
    }
    pcf_puts(p, "}");
    free(own_ns);
    free(full);
}

static void pcf_schema(lw_pcf_t *p, json_t *s, const char *ns, int depth)
{
    if (p->failed)
        return;
    if (depth > LW_PCF_MAX_DEPTH) {
        pcf_fail(p, "schema nested deeper than %d levels", LW_PCF_MAX_DEPTH);
        return;
    }
    if (json_is_string(s)) {
        pcf_type_name(p, json_string_value(s), ns);
    } else if (json_is_array(s)) { /* union */
        size_t i;
        json_t *b;
        pcf_puts(p, "[");
        json_array_foreach(s, i, b)
        {
            if (i)
                pcf_puts(p, ",");
            pcf_schema(p, b, ns, depth + 1);
        }
        pcf_puts(p, "]");
    } else if (json_is_object(s)) {
        json_t *jt = json_object_get(s, "type");
        const char *t;
        if (!json_is_string(jt)) {
            /* {"type": {...}} or {"type": [...]}: the inner schema is the type. */
            if (jt && (json_is_object(jt) || json_is_array(jt))) {
                pcf_schema(p, jt, ns, depth + 1);
                return;
            }
            pcf_fail(p, "schema object without a type");
            return;
        }
        t = json_string_value(jt);
        if (!strcmp(t, "record") || !strcmp(t, "error") || !strcmp(t, "enum") ||
            !strcmp(t, "fixed")) {
            pcf_named(p, s, t, ns, depth);
        } else if (!strcmp(t, "array")) {
            json_t *items = json_object_get(s, "items");
            if (!items) {
                pcf_fail(p, "array without items");
                return;
            }
            pcf_puts(p, "{\"type\":\"array\",\"items\":");
            pcf_schema(p, items, ns, depth + 1);
            pcf_puts(p, "}");
        } else if (!strcmp(t, "map")) {
            json_t *values = json_object_get(s, "values");
            if (!values) {
                pcf_fail(p, "map without values");
                return;
            }
            pcf_puts(p, "{\"type\":\"map\",\"values\":");
            pcf_schema(p, values, ns, depth + 1);
            pcf_puts(p, "}");
        } else {
            /* [PRIMITIVES] (and any attributes such as logicalType dropped),
             * or a reference to a named type written as an object. */
            pcf_type_name(p, t, ns);
        }
    } else {
        pcf_fail(p, "a schema must be a string, an object or an array");
    }
}

char *lw_schema_canonical(const char *schema_json, char *errstr, size_t errstr_size)
{
    lw_pcf_t p = {.errstr = errstr, .errstr_size = errstr_size};
    json_error_t jerr;
    json_t *root;

    if (!schema_json) {
        pcf_fail(&p, "no schema");
        return NULL;
    }
    root = json_loads(schema_json, JSON_DECODE_ANY, &jerr);
    if (!root) {
        pcf_fail(&p, "schema is not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                 jerr.column);
        return NULL;
    }
    pcf_schema(&p, root, "", 0);
    json_decref(root);
    for (size_t i = 0; i < p.nnames; i++)
        free(p.names[i]);
    free(p.names);
    if (p.failed) {
        free(p.buf);
        return NULL;
    }
    return p.buf;
}

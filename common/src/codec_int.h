/*
 * codec_int.h - private parts of the codec shared by codec.c, codec_cli.c,
 * json.c and the unit tests: the field tables that mirror the current
 * schemas, the embedded schema table, and entry points that force Avro C's
 * generic path so tests can compare it with the hand-written fast path.
 */
#ifndef LOANWIRE_CODEC_INT_H
#define LOANWIRE_CODEC_INT_H

#include "loanwire/codec.h"
#include "loanwire/json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Generated from schemas/ by common/schemas_gen.cmake. */
struct lw_schema_file {
    const char *path;
    const char *json;
};
extern const struct lw_schema_file lw_schema_files[];

#define LW_SCHEMA_EVENT_CURRENT   "LoanEvent.avsc"
#define LW_SCHEMA_ALERT_CURRENT   "OverIndebtednessAlert.avsc"
#define LW_SCHEMA_INQUIRY_CURRENT "CreditInquiry.avsc"
#define LW_SCHEMA_NAMESPACE       "loanwire.v1"

typedef enum lw_ftype {
    LW_FT_STRING,   /* char[cap] */
    LW_FT_LONG,     /* int64_t */
    LW_FT_INT,      /* int32_t */
    LW_FT_ENUM,     /* a C enum (int-sized), symbols in syms */
    LW_FT_OPT_LONG, /* ["null","long"] + bool has_... */
    LW_FT_OPT_INT,  /* ["null","int"] + bool has_... */
} lw_ftype_t;

/* One field of a current schema, in schema order, and where it lives in the
 * struct. codec.c checks at lw_codec_new() that each table matches its .avsc. */
typedef struct lw_field_desc {
    const char *name;
    lw_ftype_t type;
    size_t off;
    size_t cap;     /* LW_FT_STRING: buffer size including the NUL */
    size_t has_off; /* LW_FT_OPT_*: offset of the bool */
    const char *const *syms;
    int nsyms;
    const char *def; /* LW_FT_STRING default, or NULL when the field is required */
} lw_field_desc_t;

typedef struct lw_record_desc {
    const char *name; /* short record name */
    const lw_field_desc_t *fields;
    int nfields;
    size_t size;
} lw_record_desc_t;

#define LW_MAX_FIELDS 32

extern const lw_record_desc_t lw_event_desc;
extern const lw_record_desc_t lw_alert_desc;
extern const lw_record_desc_t lw_inquiry_desc;
const lw_record_desc_t *lw_record_desc(lw_record_kind_t kind);

extern const char *const lw_event_type_syms[LW_EVENT__CNT];
extern const char *const lw_product_syms[LW_PRODUCT__CNT];
extern const char *const lw_severity_syms[LW_SEVERITY__CNT];
extern const char *const lw_purpose_syms[LW_PURPOSE__CNT];

/* True when s[0..n) is valid UTF-8 without NUL bytes. */
bool lw_utf8_valid(const unsigned char *s, size_t n);

/* Encode/decode of either kind; rec points to an lw_event_t or lw_alert_t. */
lw_err_t lw_codec_encode(lw_codec_t *codec, lw_record_kind_t kind, const void *rec, void *buf,
                         size_t cap, size_t *out_len);
lw_err_t lw_codec_decode(lw_codec_t *codec, lw_record_kind_t kind, const void *buf, size_t len,
                         void *rec, char *errstr, size_t errstr_size);

/* Encodes with the embedded schema version at path (e.g. "v1/LoanEvent.avsc")
 * through Avro C's generic writer; fields the version lacks are left out. */
lw_err_t lw_codec_encode_version(lw_codec_t *codec, const char *path, const void *rec, void *buf,
                                 size_t cap, size_t *out_len, char *errstr, size_t errstr_size);
/* Decodes through Avro C (check walk, generic read, resolved reader) even
 * when the fast path applies. */
lw_err_t lw_codec_decode_generic(lw_codec_t *codec, lw_record_kind_t kind, const void *buf,
                                 size_t len, void *rec, char *errstr, size_t errstr_size);
/* The embedded path of the version a fingerprint names, or NULL. */
const char *lw_codec_version_path(lw_codec_t *codec, uint64_t fp, lw_record_kind_t *kind);

#endif /* LOANWIRE_CODEC_INT_H */

/*
 * loanwire/codec.h - Avro single-object encoding of loan events and alerts.
 *
 * Wire format (Avro specification, "Single object encoding"):
 *   C3 01 | CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
 *   Form, 8 bytes little-endian | Avro binary datum.
 *
 * A codec knows every schema version compiled in from schemas/ (current and
 * older ones), encodes with the current one, and decodes a record written
 * with any known version by resolving it to the current reader schema, so
 * old producers and new consumers (and the reverse) keep working.
 *
 * A codec is not thread-safe; make one per thread. Nothing it returns needs
 * freeing except by the documented _destroy.
 */
#ifndef LOANWIRE_CODEC_H
#define LOANWIRE_CODEC_H

#include "loanwire/api.h"

#include "loanwire/error.h"
#include "loanwire/event.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LW_SO_MAGIC0     0xC3
#define LW_SO_MAGIC1     0x01
#define LW_SO_HEADER_LEN 10

typedef enum lw_record_kind {
    LW_RECORD_LOAN_EVENT = 0,
    LW_RECORD_ALERT,
    LW_RECORD_INQUIRY, /* CreditInquiry: one recorded look-up (issue 20) */
    LW_RECORD__CNT
} lw_record_kind_t;

typedef struct lw_codec_s lw_codec_t;

/* Creates a codec with every embedded schema. NULL on failure (errstr says why). */
LW_API lw_codec_t *lw_codec_new(char *errstr, size_t errstr_size);
LW_API void lw_codec_destroy(lw_codec_t *codec); /* NULL is fine */

/*
 * Encodes with the current schema into buf (capacity cap). On success
 * *out_len is the framed length. Returns LW_ERR_INVALID_ARG when buf is too
 * small (a LoanEvent never needs more than LW_CODEC_MAX_EVENT bytes).
 * Does not validate: call lw_event_validate() first.
 */
#define LW_CODEC_MAX_EVENT   1024
#define LW_CODEC_MAX_ALERT   2048
#define LW_CODEC_MAX_INQUIRY 256
LW_API lw_err_t lw_codec_encode_event(lw_codec_t *codec, const lw_event_t *ev, void *buf,
                                      size_t cap, size_t *out_len);
LW_API lw_err_t lw_codec_encode_alert(lw_codec_t *codec, const lw_alert_t *al, void *buf,
                                      size_t cap, size_t *out_len);
LW_API lw_err_t lw_codec_encode_inquiry(lw_codec_t *codec, const lw_inquiry_t *iq, void *buf,
                                        size_t cap, size_t *out_len);

/*
 * Decodes one framed record written with any known schema version of the
 * kind asked for. Errors: LW_ERR_TRUNCATED, LW_ERR_BAD_MAGIC,
 * LW_ERR_UNKNOWN_SCHEMA, LW_ERR_TRAILING_BYTES, LW_ERR_PARSE (datum does not
 * match its schema), LW_ERR_VALIDATION (a string too long for its buffer, an
 * enum symbol we do not know). errstr names the field and the reason.
 * Decoding does not run lw_event_validate().
 */
LW_API lw_err_t lw_codec_decode_event(lw_codec_t *codec, const void *buf, size_t len,
                                      lw_event_t *ev, char *errstr, size_t errstr_size);
LW_API lw_err_t lw_codec_decode_alert(lw_codec_t *codec, const void *buf, size_t len,
                                      lw_alert_t *al, char *errstr, size_t errstr_size);
LW_API lw_err_t lw_codec_decode_inquiry(lw_codec_t *codec, const void *buf, size_t len,
                                        lw_inquiry_t *iq, char *errstr, size_t errstr_size);

/* Which kind of record a frame carries (by fingerprint); -1 if unknown. */
LW_API int lw_codec_record_kind(lw_codec_t *codec, const void *buf, size_t len);

/* ---- Schemas, canonical form and fingerprints --------------------------- */

/*
 * Parsing Canonical Form of a schema given as JSON text (Avro spec, "Parsing
 * Canonical Form for Schemas"). Returns a malloc'd string the caller frees,
 * or NULL with errstr set.
 */
LW_API char *lw_schema_canonical(const char *schema_json, char *errstr, size_t errstr_size);

/* CRC-64-AVRO (Rabin) fingerprint of bytes, as the Avro spec defines it. */
LW_API uint64_t lw_fingerprint64(const void *data, size_t len);

/* Embedded schemas: path under schemas/ (e.g. "LoanEvent.avsc",
 * "v1/LoanEvent.avsc") and JSON text; NULL when i is past the end. */
LW_API const char *lw_schema_embedded(size_t i, const char **json);
/* JSON text of the current schema of a kind (static storage). */
LW_API const char *lw_schema_current(lw_record_kind_t kind);

/* The loanwire-avro program (encode, decode, fingerprint, canonical); its
 * main() only calls this. Returns the process exit status. Not exported by
 * libloanwire-producer (no LW_API): it belongs to the program. */
int lw_avro_tool_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif /* LOANWIRE_CODEC_H */

/*
 * loanwire/api.h - what the shared library exports.
 *
 * Everything is built with -fvisibility=hidden (CMAKE_C_VISIBILITY_PRESET),
 * so libloanwire-producer.so exports only the declarations marked LW_API: the
 * producer, the event, JSON, codec, validation and borrower-id functions a
 * platform calls. Internal helpers stay private and may change without an
 * ABI break. The static libraries the programs link ignore the mark.
 */
#ifndef LOANWIRE_API_H
#define LOANWIRE_API_H

#if defined(__GNUC__) || defined(__clang__)
#define LW_API __attribute__((visibility("default")))
#else
#define LW_API
#endif

#endif /* LOANWIRE_API_H */

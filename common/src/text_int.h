/*
 * text_int.h - small text helpers shared by common/'s parsers (the Redis
 * URL's percent-decoding in conf.c, the id key's hex in id.c), kept in one
 * place instead of a copy in each.
 */
#ifndef LOANWIRE_TEXT_INT_H
#define LOANWIRE_TEXT_INT_H

/* The value of a hex digit (either case), or -1. */
static inline int lw_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif

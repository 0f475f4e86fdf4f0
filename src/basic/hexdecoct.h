/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * Hex and base64, the two text forms of bytes in our files, audit records and protocols. One
 * strict decoder each: a peer's or an operator's text is either exactly right or refused.
 */

#define KEY_LEN 32                           /* an X25519 key */
#define KEY_BASE64_LEN 44                    /* 43 characters and one '=' */
#define KEY_BASE64_SIZE (KEY_BASE64_LEN + 1) /* … and its NUL */
#define SHA256_LEN 32
#define SHA256_HEX_SIZE (2 * SHA256_LEN + 1) /* 64 hex digits and a NUL */

/* The value of one hex digit (either case), or -1. */
int unhexchar(char c);
/* Lower-case hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void hexmem(const void *p, size_t n, char *out);
/* Exactly 2n hex digits (either case) of s[0..len) into out: 0 or -EINVAL. */
int unhexmem(const char *s, size_t len, void *out, size_t n);

/* Standard base64 with padding, NUL-terminated; out holds 4 * ceil(n / 3) + 1 bytes. Returns the
 * length written without the NUL. */
size_t base64mem(const void *p, size_t n, char *out);
/* Strict standard base64 (the alphabet, padding only at the end, length a multiple of 4) into
 * out of cap bytes: the number of bytes decoded, or -EINVAL (malformed or non-canonical) or
 * -ENOSPC. */
int unbase64mem(const char *s, size_t len, uint8_t *out, size_t cap);

/* A 32-byte key as 44 characters of base64 (KEY_BASE64_SIZE with the NUL). */
void key_to_base64(const uint8_t key[KEY_LEN], char out[KEY_BASE64_SIZE]);
/* Exactly 44 characters of base64 encoding 32 bytes, or -EINVAL; the scratch copy is wiped (the
 * same decoder reads public and private keys). */
int key_from_base64(const char *s, size_t len, uint8_t key[KEY_LEN]);

/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <string.h>
#include <openssl/crypto.h>

#include "basic/hexdecoct.h"

void hexmem(const void *p, size_t n, char *out)
{
        static const char digits[] = "0123456789abcdef";
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[b[i] >> 4];
                out[2 * i + 1] = digits[b[i] & 15];
        }
        out[2 * n] = '\0';
}

int unhexchar(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int unhexmem(const char *s, size_t len, void *out, size_t n)
{
        uint8_t *b = out;

        if (!s || len != 2 * n)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int hi = unhexchar(s[2 * i]), lo = unhexchar(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                b[i] = (uint8_t)(hi << 4 | lo);
        }
        return 0;
}

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64mem(const void *p, size_t n, char *out)
{
        const uint8_t *b = p;
        size_t o = 0;

        for (size_t i = 0; i < n; i += 3) {
                uint32_t w = (uint32_t)b[i] << 16;
                size_t left = n - i;
                if (left > 1)
                        w |= (uint32_t)b[i + 1] << 8;
                if (left > 2)
                        w |= b[i + 2];
                out[o++] = b64_alphabet[w >> 18 & 63];
                out[o++] = b64_alphabet[w >> 12 & 63];
                out[o++] = left > 1 ? b64_alphabet[w >> 6 & 63] : '=';
                out[o++] = left > 2 ? b64_alphabet[w & 63] : '=';
        }
        out[o] = '\0';
        return o;
}

static int unbase64char(unsigned char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int unbase64mem(const char *s, size_t len, uint8_t *out, size_t cap)
{
        size_t o = 0;

        if (len % 4)
                return -EINVAL;
        for (size_t i = 0; i < len; i += 4) {
                int v[4], pad = 0;
                for (int k = 0; k < 4; k++) {
                        if (s[i + k] == '=' && i + 4 == len && k >= 2) {
                                v[k] = 0;
                                pad++;
                                continue;
                        }
                        if (pad) /* data after '=' */
                                return -EINVAL;
                        v[k] = unbase64char((unsigned char)s[i + k]);
                        if (v[k] < 0)
                                return -EINVAL;
                }
                uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                             (uint32_t)v[3];
                /* Non-canonical trailing bits are refused (one encoding per byte string). */
                if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
                        return -EINVAL;
                if (o + (size_t)(3 - pad) > cap)
                        return -ENOSPC;
                for (int k = 0; k < 3 - pad; k++)
                        out[o++] = (uint8_t)(w >> (16 - 8 * k));
        }
        return (int)o;
}

void key_to_base64(const uint8_t key[KEY_LEN], char out[KEY_BASE64_SIZE])
{
        base64mem(key, KEY_LEN, out);
}

int key_from_base64(const char *s, size_t len, uint8_t key[KEY_LEN])
{
        uint8_t tmp[KEY_LEN + 1];
        int n;

        /* 32 bytes are 43 characters and one '=' of padding, nothing else. */
        if (len != KEY_BASE64_LEN || s[KEY_BASE64_LEN - 1] != '=')
                return -EINVAL;
        n = unbase64mem(s, len, tmp, sizeof tmp);
        if (n == KEY_LEN)
                memcpy(key, tmp, KEY_LEN);
        OPENSSL_cleanse(tmp, sizeof tmp);
        return n == KEY_LEN ? 0 : -EINVAL;
}

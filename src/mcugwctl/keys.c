/* SPDX-License-Identifier: Apache-2.0 */
/* mcugwctl: keygen, pubkey, factory-keys, attest: key pairs and attestations made locally, no
 * daemon needed (docs/devices.md). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "basic/cred.h"
#include "basic/macro.h"
#include "devices/enroll.h"
#include "devices/onboard.h"
#include "mcugwctl/mcugwctl.h"

/* Create an X25519 key pair; the private key goes to path (owner-only, never overwritten). */
static int write_keypair(const char *path, char pub_b64[45])
{
        uint8_t priv[32], pub[32];
        size_t plen = sizeof priv, publen = sizeof pub;
        char b64[45];
        EVP_PKEY *k;
        int fd, r = -EIO;

        k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
        if (!k || EVP_PKEY_get_raw_private_key(k, priv, &plen) != 1 ||
            EVP_PKEY_get_raw_public_key(k, pub, &publen) != 1) {
                EVP_PKEY_free(k);
                fail("key generation failed");
                goto out;
        }
        EVP_PKEY_free(k);
        key_to_base64(priv, b64);
        key_to_base64(pub, pub_b64);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
                r = -errno;
                fail("cannot create %s: %s%s", path, strerror(errno),
                     errno == EEXIST ? " (refusing to overwrite a key)" : "");
                goto out;
        }
        if (write(fd, b64, 44) != 44 || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
                r = -errno;
                fail("cannot write %s: %s", path, strerror(errno));
                close(fd);
                unlink(path);
                goto out;
        }
        close(fd);
        r = 0;
out:
        OPENSSL_cleanse(priv, sizeof priv);
        OPENSSL_cleanse(b64, sizeof b64);
        return r;
}

/* Generate a device (or any X25519) key pair locally: the private key goes to FILE, owner-only;
 * the public key, the one to enroll, is printed. */
int do_keygen(int argc, char **argv)
{
        char pub[45];

        if (argc != 2)
                return fail("usage: mcugwctl keygen PRIVATE_KEY_FILE   (prints the public key)");
        if (write_keypair(argv[1], pub) < 0)
                return EXIT_FAILURE;
        if (arg_json)
                printf("{\"private_key_file\": \"%s\", \"public_key\": \"%s\"}\n", argv[1], pub);
        else
                printf("%s\n", pub);
        return EXIT_SUCCESS;
}

/* The public key of a private key read from stdin, as `wg pubkey` does: for a key whose public
 * half was lost, or to check which device a key file belongs to. */
int do_pubkey(int argc, char **argv)
{
        char buf[256], pub64[45];
        uint8_t priv[32], pub[32];
        size_t n = 0, publen = sizeof pub;
        EVP_PKEY *k = NULL;
        int ret = EXIT_FAILURE;

        if (argc != 1)
                return fail("usage: mcugwctl pubkey < PRIVATE_KEY_FILE   (prints the public key)");
        n = fread(buf, 1, sizeof buf - 1, stdin);
        if (ferror(stdin)) {
                fail("cannot read the private key from stdin");
                goto out;
        }
        buf[n] = 0;
        while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
                buf[--n] = 0;
        if (key_from_base64(buf, n, priv) < 0) {
                fail("a private key is 44 characters of base64 (32 bytes), as mcugwctl keygen "
                     "writes it");
                goto out;
        }
        k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, sizeof priv);
        if (!k || EVP_PKEY_get_raw_public_key(k, pub, &publen) != 1) {
                fail("cannot derive the public key");
                goto out;
        }
        key_to_base64(pub, pub64);
        if (arg_json)
                printf("{\"public_key\": \"%s\"}\n", pub64);
        else
                printf("%s\n", pub64);
        ret = EXIT_SUCCESS;
out:
        EVP_PKEY_free(k);
        OPENSSL_cleanse(buf, sizeof buf);
        OPENSSL_cleanse(priv, sizeof priv);
        return ret;
}

/* For the factory: N key pairs in DIR (PREFIX-0001.key …) and DIR/import.csv listing their public
 * keys, ready for `mcugwctl device import`. The private keys are to be flashed into the MCUs and
 * then destroyed; the gateway never needs them. */
const struct option factory_keys_opts[] = {
        { "count", required_argument, NULL, 'n' },
        { "prefix", required_argument, NULL, 'p' },
        { "groups", required_argument, NULL, 'g' },
        { "pending", no_argument, NULL, 'P' },
        {},
};

int do_factory_keys(int argc, char **argv)
{
        const char *prefix = "mcu", *groups = "", *dir;
        _cleanup_fclose_ FILE *csv = NULL;
        char path[4096], groups_norm[ENROLL_GROUPS_MAX + 1], id[ENROLL_ID_MAX + 1];
        bool pending = false;
        long n = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "n:p:g:P", factory_keys_opts, NULL)) >= 0)
                switch (c) {
                case 'n': n = strtol(optarg, NULL, 10); break;
                case 'p': prefix = optarg; break;
                case 'g': groups = optarg; break;
                case 'P': pending = true; break;
                default: return EXIT_FAILURE;
                }
        if (argc - optind != 1 || n < 1 || n > 100000)
                return fail("usage: mcugwctl factory-keys DIR --count N (1-100000) [--prefix P] "
                            "[--groups G,H] [--pending]");
        if (enroll_groups_normalize(groups, groups_norm, sizeof groups_norm) < 0)
                return fail("--groups: names of [A-Za-z0-9._-] separated by ','");
        dir = argv[optind];
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return fail("cannot create %s: %s", dir, strerror(errno));
        snprintf(path, sizeof path, "%s/import.csv", dir);
        {
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (fd < 0)
                        return fail("cannot create %s: %s", path, strerror(errno));
                csv = fdopen(fd, "w");
                if (!csv)
                        return fail("cannot write %s: %s", path, strerror(errno));
        }
        fprintf(csv, "id,public_key,groups,state\n");
        for (long i = 1; i <= n; i++) {
                char pub[45];
                snprintf(id, sizeof id, "%s-%04ld", prefix, i);
                if (!enroll_id_valid(id))
                        return fail("device id %s is not valid: use a shorter --prefix of "
                                    "[A-Za-z0-9._-]",
                                    id);
                snprintf(path, sizeof path, "%s/%s.key", dir, id);
                if (write_keypair(path, pub) < 0)
                        return EXIT_FAILURE;
                fprintf(csv, "%s,%s,\"%s\",%s\n", id, pub, groups_norm,
                        pending ? "pending" : "active");
        }
        if (fflush(csv) != 0)
                return fail("cannot write %s/import.csv", dir);
        printf("%ld key pair(s) in %s; enroll them with: mcugwctl device import %s/import.csv\n", n,
               dir, dir);
        return EXIT_SUCCESS;
}

/* The manufacturer's side of just-in-time onboarding: sign a device's id and public key. */
const struct option attest_opts[] = {
        { "manufacturer-key", required_argument, NULL, 'k' },
        { "key-id", required_argument, NULL, 'i' },
        {},
};

int do_attest(int argc, char **argv)
{
        const char *mkey = NULL, *kid = NULL;
        uint8_t pub[ENROLL_KEY_LEN], att[ONBOARD_ATTEST_MAX];
        char err[512], b64[2 * ONBOARD_ATTEST_MAX];
        EVP_PKEY *k = NULL;
        int c, n;

        optind = 0;
        while ((c = getopt_long(argc, argv, "k:i:", attest_opts, NULL)) >= 0)
                switch (c) {
                case 'k': mkey = optarg; break;
                case 'i': kid = optarg; break;
                default: return EXIT_FAILURE;
                }
        if (!mkey || !kid || argc - optind != 2)
                return fail("usage: mcugwctl attest --manufacturer-key KEY.pem --key-id ID "
                            "DEVICE_ID PUBLIC_KEY");
        if (key_from_base64(argv[optind + 1], strlen(argv[optind + 1]), pub) < 0)
                return fail("public key must be 44 characters of base64 (32 bytes)");
        if (cred_load_private_key(mkey, NULL, &k, err, sizeof err) < 0)
                return fail("%s", err);
        n = onboard_attest_sign(k, kid, argv[optind], pub, att, sizeof att);
        EVP_PKEY_free(k);
        if (n < 0)
                return fail("cannot sign: %s (key id and device id must be 1-32 characters of "
                            "[A-Za-z0-9._-], the key EC P-256)",
                            strerror(-n));
        EVP_EncodeBlock((unsigned char *)b64, att, n);
        printf("%s\n", b64);
        return EXIT_SUCCESS;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Slot B, the boot state page, the SDK's flash port on them and the STAND-IN boot step (see
 * slots.h: not MCUboot). Under QEMU the "flash" is RAM: writes are plain stores. On a real part
 * begin/write/set_pending/confirm call the vendor's flash driver (erase pages, program words)
 * and the boot state is MCUboot's image trailer, written by boot_set_pending() and
 * boot_set_confirmed().
 *
 * Why direct-xip: QEMU writes the image it loads (-kernel, slot A) again at every system reset,
 * so an image copied into slot A would not survive the reset that is meant to boot it. The
 * update therefore runs where it was written, from slot B, linked for that address
 * (scripts/build-firmware builds both). While slot B runs, it cannot be overwritten: a further
 * update needs an image linked for slot A, which this example does not build (begin() refuses).
 */
#include <string.h>

#include "mbedtls/sha256.h"

#include "board.h"
#include "slots.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define SCB_VTOR 0xE000ED08u

extern uint8_t _bootst[];

static volatile struct boot_state *bs(void)
{
        return (volatile struct boot_state *)(void *)_bootst;
}

static void set_state(uint32_t state, uint32_t transfer_id, uint32_t size)
{
        volatile struct boot_state *b = bs();

        b->state = state;
        b->transfer_id = transfer_id;
        b->size = size;
        b->magic = BOOT_MAGIC;
}

const struct boot_state *slots_state(void)
{
        static struct boot_state none;
        const struct boot_state *b = (const struct boot_state *)(const void *)_bootst;

        return b->magic == BOOT_MAGIC ? b : &none;
}

#define BOOTS_MAGIC 0x53544f42u /* "BOTS" */

uint32_t slots_count_boot(void)
{
        volatile uint32_t *w = (volatile uint32_t *)(void *)(_bootst + sizeof(struct boot_state));

        if (w[0] != BOOTS_MAGIC) {
                w[1] = 0;
                w[0] = BOOTS_MAGIC;
        }
        return ++w[1];
}

char slots_running(void)
{
        /* The boot step points VTOR at slot B's vector table; after a reset it is 0 (slot A). */
        return REG(SCB_VTOR) >= SLOT_B && REG(SCB_VTOR) < SLOT_B + SLOT_B_SIZE ? 'B' : 'A';
}

static uint32_t get16(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t get32(const uint8_t *p)
{
        return get16(p) | get16(p + 2) << 16;
}

/*
 * What MCUboot checks before it boots an image, minus the signature (the SDK verified the
 * code-signing signature over the whole file before set_pending): the header magic, the sizes,
 * the SHA-256 TLV over header + image + protected TLVs, and that the vector table points into
 * the slot. Returns the vector table or NULL.
 */
static const uint32_t *slot_b_valid(uint32_t stored)
{
        const uint8_t *s = (const uint8_t *)SLOT_B;
        uint32_t hdr, prot, img, end, tot, off;
        const uint32_t *vt;
        uint8_t digest[32];

        if (stored > SLOT_B_SIZE || stored < SLOT_B_HDR || get32(s) != 0x96F3B83Du)
                return NULL;
        hdr = get16(s + 8);
        prot = get16(s + 10);
        img = get32(s + 12);
        if (hdr != SLOT_B_HDR || img > stored || prot > stored)
                return NULL;
        end = hdr + img + prot; /* where the unprotected TLV area starts */
        if (end < hdr || end > stored - 4 || get16(s + end) != 0x6907)
                return NULL;
        tot = get16(s + end + 2);
        if (tot > stored - end)
                return NULL;
        for (off = end + 4; off + 4 <= end + tot;) {
                uint32_t type = get16(s + off), len = get16(s + off + 2);

                if (off + 4 + len > end + tot)
                        return NULL;
                if (type == 0x10 && len == 32) {
                        if (mbedtls_sha256_ret(s, end, digest, 0) != 0 ||
                            memcmp(digest, s + off + 4, 32) != 0)
                                return NULL;
                        vt = (const uint32_t *)(const void *)(s + hdr);
                        if (vt[1] < SLOT_B + hdr || vt[1] >= SLOT_B + hdr + img ||
                            (vt[0] & 0xFFF00000u) != 0x20000000u)
                                return NULL;
                        return vt;
                }
                off += 4 + len;
        }
        return NULL; /* no SHA-256 TLV */
}

void boot_step(void)
{
        const struct boot_state *b = slots_state();
        const uint32_t *vt;

        if (slots_running() == 'B')
                return; /* this is the image in slot B: the boot step already ran */
        switch (b->state) {
        case BOOT_ST_PENDING:
                /* Boot the new image once, in test mode. If it does not confirm before the next
                 * reset, that reset reverts (below). */
                set_state(BOOT_ST_TESTING, b->transfer_id, b->size);
                break;
        case BOOT_ST_TESTING: set_state(BOOT_ST_REVERTED, b->transfer_id, 0); return;
        case BOOT_ST_CONFIRMED: break;
        default: return;
        }
        vt = slot_b_valid(b->size);
        if (!vt) {
                set_state(BOOT_ST_REVERTED, b->transfer_id, 0);
                return;
        }
        REG(SCB_VTOR) = (uint32_t)vt;
        __asm__ volatile("dsb\n"
                         "isb\n"
                         "msr msp, %0\n"
                         "bx %1\n"
                         :
                         : "r"(vt[0]), "r"(vt[1])
                         : "memory");
        __builtin_unreachable();
}

/* ---- the SDK's flash port ------------------------------------------------------------------ */

static int fl_begin(void *ctx, uint32_t size)
{
        (void)ctx;
        if (slots_running() == 'B' || size > SLOT_B_SIZE)
                return -1;
        /* Forget the old contents before erasing them: a slot being written is never booted. */
        set_state(BOOT_ST_NONE, 0, 0);
        memset((void *)SLOT_B, 0xFF, size); /* the "erase" */
        return 0;
}

static int fl_write(void *ctx, uint32_t offset, const uint8_t *data, size_t len)
{
        (void)ctx;
        if (offset > SLOT_B_SIZE || len > SLOT_B_SIZE - offset)
                return -1;
        memcpy((uint8_t *)SLOT_B + offset, data, len);
        return 0;
}

static uint32_t written;

static int fl_finish(void *ctx, uint32_t size, uint8_t sha256[32])
{
        (void)ctx;
        written = size;
        /* With fl_read set the receiver hashes the image itself (sha256 is NULL). */
        if (!sha256)
                return 0;
        return mbedtls_sha256_ret((const uint8_t *)SLOT_B, size, sha256, 0) == 0 ? 0 : -1;
}

/* Read back as an SPI flash driver would, although the slot here is memory-mapped: the receiver
 * then hashes the stored image in 64-byte pieces with the crypto port's streaming SHA-256, the
 * path a part whose OTA slot is external flash takes. */
static int fl_read(void *ctx, uint32_t offset, uint8_t *buf, size_t len)
{
        (void)ctx;
        if (offset > SLOT_B_SIZE || len > SLOT_B_SIZE - offset)
                return -1;
        memcpy(buf, (const uint8_t *)SLOT_B + offset, len);
        return 0;
}

static int fl_set_pending(void *ctx)
{
        (void)ctx;
        set_state(BOOT_ST_PENDING, 0, written);
        return 0;
}

static int fl_confirm(void *ctx)
{
        const struct boot_state *b = slots_state();

        (void)ctx;
        if (slots_running() != 'B' || b->state != BOOT_ST_TESTING)
                return -1;
        set_state(BOOT_ST_CONFIRMED, b->transfer_id, b->size);
        return 0;
}

void slots_pending_transfer(uint32_t transfer_id)
{
        const struct boot_state *b = slots_state();

        if (b->state == BOOT_ST_PENDING)
                set_state(BOOT_ST_PENDING, transfer_id, b->size);
}

void slots_flash_port(struct mcugw_flash_port *fp)
{
        memset(fp, 0, sizeof *fp);
        fp->begin = fl_begin;
        fp->write = fl_write;
        fp->finish = fl_finish;
        fp->read = fl_read;
        fp->set_pending = fl_set_pending;
        fp->confirm = fl_confirm;
}

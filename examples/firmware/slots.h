/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Two image slots, a boot state page, the SDK's OTA flash port and a STAND-IN boot step.
 *
 * THIS IS NOT MCUboot. Real products put MCUboot (or their vendor's secure bootloader) in front
 * of the application; it validates the image signature itself, swaps or selects slots and
 * reverts an unconfirmed image. The boot step here only mimics the semantics the SDK relies on
 * (MCUboot's direct-xip mode with revert) so that the example runs under QEMU without a
 * second program: boot_set_pending() -> one test boot -> boot_set_confirmed(), or a revert at
 * the next reset.
 */
#ifndef MCUGW_FW_SLOTS_H
#define MCUGW_FW_SLOTS_H

#include <stdint.h>

#include "mcugw/ota.h"

/* mps2.ld: slot B holds an MCUboot image (header + image linked at SLOT_B + SLOT_B_HDR). */
#define SLOT_B 0x00020000u
#define SLOT_B_SIZE 0x1E000u /* 120 KiB */
#define SLOT_B_HDR 0x100u    /* ota-sign mcuboot --pad-header 256: the vector table alignment */

/** Boot state page (0x3E000; RAM-backed flash under QEMU, kept across a system reset). */
#define BOOT_MAGIC 0x544f4f42u /* "BOOT" */
enum boot_st {
        BOOT_ST_NONE = 0,
        BOOT_ST_PENDING = 1,   /* boot slot B once, in test mode (MCUboot: boot_set_pending(0)) */
        BOOT_ST_TESTING = 2,   /* slot B booted in test mode, not confirmed yet */
        BOOT_ST_CONFIRMED = 3, /* slot B is the image (MCUboot: boot_set_confirmed()) */
        BOOT_ST_REVERTED = 4,  /* a test boot ended without a confirm: back on slot A */
};
struct boot_state {
        uint32_t magic;
        uint32_t state;       /* enum boot_st */
        uint32_t transfer_id; /* the OTA transfer that wrote slot B (reported in test mode) */
        uint32_t size;        /* bytes of the MCUboot image in slot B */
};

/**
 * The stand-in boot step, run by the reset handler of the image in slot A before anything else:
 * boots slot B (test mode or confirmed) when the boot state says so and its MCUboot header and
 * SHA-256 TLV are intact; otherwise returns and slot A runs.
 */
void boot_step(void);

/**
 * Counts this boot: the number of resets since power-on, 1 for the first boot. Kept in the boot
 * state page after struct boot_state, which a system reset leaves alone and a power-on (a fresh
 * QEMU) clears; a product keeps its boot counter in flash instead.
 */
uint32_t slots_count_boot(void);

/** Slot of the running image: 'A' or 'B'. */
char slots_running(void);
/** The boot state (read-only view). */
const struct boot_state *slots_state(void);

/** The flash port for the SDK's OTA receiver: writes slot B. */
void slots_flash_port(struct mcugw_flash_port *fp);
/** The receiver verified the image and marked it pending: remember its transfer id. */
void slots_pending_transfer(uint32_t transfer_id);

#endif

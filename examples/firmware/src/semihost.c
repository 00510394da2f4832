/* A tiny semihosting layer: four calls, no newlib syscalls involved. */
#include "semihost.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

enum {
    SYS_WRITE0 = 0x04,
    SYS_CLOCK = 0x10,
    SYS_EXIT = 0x18,
    SYS_EXIT_EXTENDED = 0x20,
    ADP_STOPPED_APPLICATION_EXIT = 0x20026,
};

/* The semihosting trap of M-profile cores: BKPT 0xAB with the operation in r0 and its
 * argument in r1; the result comes back in r0. */
static int32_t semihost(int32_t op, const void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void sh_write0(const char *s) { semihost(SYS_WRITE0, s); }

long sh_clock(void) { return (long)semihost(SYS_CLOCK, 0); }

void sh_printf(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sh_write0(buf);
}

void sh_exit(int status) {
    /* Semihosting v2 extended exit: QEMU exits with `status`. */
    const int32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, status};
    semihost(SYS_EXIT_EXTENDED, block);
    /* Hosts without it: a plain application exit (QEMU: code 0) or any other reason (1). */
    semihost(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                             : 0x20023));
    for (;;) {
    }
}

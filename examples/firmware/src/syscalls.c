/* The only system call newlib needs here: the heap behind snprintf's number formatting. The
 * heap grows from the end of .bss up to the stack reserve (see the linker script). */
#include <errno.h>
#include <stddef.h>

extern char end, _heap_limit;

void *_sbrk(ptrdiff_t incr) {
    static char *brk = &end;
    if (incr > &_heap_limit - brk || incr < &end - brk) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *prev = brk;
    brk += incr;
    return prev;
}

/* exit() and abort() (newlib's assert in its number formatting can call it) end the program
 * through semihosting, so QEMU reports the status. */
#include "semihost.h"

void _exit(int status) { sh_exit(status == 0 ? 0 : 128 + (status & 0x7f)); }

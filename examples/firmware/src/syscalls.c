/* The system calls newlib-nano references here, so that no stub library (nosys) is needed:
 * the heap behind snprintf's number formatting, console output through semihosting, and exit.
 * The rest fail with ENOSYS; nothing in the demo uses files. */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include "semihost.h"

extern char end, _heap_limit;

/* The heap grows from the end of .bss up to the stack reserve (see the linker script). */
static char *brk = &end;

size_t heap_used(void) { return (size_t)(brk - &end); }

void *_sbrk(ptrdiff_t incr) {
    if (incr > &_heap_limit - brk || incr < &end - brk) {
        errno = ENOMEM;
        return (void *)-1;
    }
    char *prev = brk;
    brk += incr;
    return prev;
}

/* stdout and stderr go to the semihosting console (newlib's printf and assert messages). */
int _write(int fd, const char *buf, int len) {
    if (fd != 1 && fd != 2) {
        errno = EBADF;
        return -1;
    }
    char chunk[129];
    for (int done = 0; done < len;) {
        int n = len - done < 128 ? len - done : 128;
        memcpy(chunk, buf + done, (size_t)n);
        chunk[n] = '\0';
        sh_write0(chunk);
        done += n;
    }
    return len;
}

/* exit() and abort() (newlib's assert in its number formatting can call it) end the program
 * through semihosting, so QEMU reports the status. */
void _exit(int status) { sh_exit(status == 0 ? 0 : 128 + (status & 0x7f)); }

int _close(int fd) { (void)fd; errno = ENOSYS; return -1; }
int _read(int fd, char *buf, int len) { (void)fd; (void)buf; (void)len; errno = ENOSYS; return -1; }
int _lseek(int fd, int off, int whence) { (void)fd; (void)off; (void)whence; errno = ENOSYS; return -1; }
int _fstat(int fd, struct stat *st) { (void)fd; st->st_mode = S_IFCHR; return 0; }
int _isatty(int fd) { return fd >= 0 && fd <= 2; }
int _kill(int pid, int sig) { (void)pid; (void)sig; errno = ENOSYS; return -1; }
int _getpid(void) { return 1; }

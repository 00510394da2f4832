/* Arm semihosting (what QEMU's -semihosting serves): console output and exit status. */
#ifndef SEMIHOST_H
#define SEMIHOST_H

/* Writes a NUL-terminated string to the host console (SYS_WRITE0). */
void sh_write0(const char *s);

/* printf-style output through sh_write0 (at most 255 characters per call). */
void sh_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Centiseconds since the program started (SYS_CLOCK; QEMU answers with its own CPU time). */
long sh_clock(void);

/* Ends the program with `status` as QEMU's exit code (SYS_EXIT_EXTENDED, application exit). */
void sh_exit(int status) __attribute__((noreturn));

#endif

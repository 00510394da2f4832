/* Vector table, reset handler and fault handler for the Cortex-M4F of mps2-an386. */
#include <stdint.h>
#include <string.h>

#include "semihost.h"

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);

void Reset_Handler(void);
void Fault_Handler(void);

/* The first 16 entries (the core's exceptions); the board's interrupts are not used. */
__attribute__((section(".isr_vector"), used)) static const void *const vectors[16] = {
    &_estack,      /* initial stack pointer */
    Reset_Handler, /* reset */
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault (also a Rust panic: the C API's panic handler executes UDF) */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,    /* reserved */
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,             /* reserved */
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick */
};

void Reset_Handler(void) {
    /* Enable the FPU (CP10 and CP11 full access) before any floating-point instruction: the
     * code is built for the hard-float ABI. */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    memcpy(&_sdata, &_sidata, (size_t)((char *)&_edata - (char *)&_sdata));
    memset(&_sbss, 0, (size_t)((char *)&_ebss - (char *)&_sbss));
    sh_exit(main());
}

void Fault_Handler(void) {
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    sh_printf("FAULT: exception %lu (3 = HardFault: a Rust panic or a bad access)\n",
              (unsigned long)ipsr);
    sh_exit(3);
}

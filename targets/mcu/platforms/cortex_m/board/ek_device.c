/*
 * ek_device.c: the UART and cycle counter of edgekit's device firmware (ek_device.h), for the boards of
 * targets/mcu/platforms/<platform>/devboards.toml. Registers by address, no vendor HAL: each block names the
 * manual section it follows. The clock is left as the core comes out of reset (the board profile records that
 * clock and the flash wait states it implies); the UART's baud divisor is computed from it.
 */
#include "ek_device.h"

#define EK_REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
#define EK_REG8(addr) (*(volatile uint8_t *)(uintptr_t)(addr))

#ifndef EK_UART_BAUD
#define EK_UART_BAUD 115200u
#endif
#define EK_UART_DIVISOR ((EK_UART_CLOCK_HZ + EK_UART_BAUD / 2u) / EK_UART_BAUD)

/* ---- board set-up: clock gates and pins ----------------------------------------------------------------------- */

#if defined(EK_BOARD_NUCLEO_H743ZI2)
/* RM0433 (STM32H743): RCC at 0x58024400, AHB4ENR +0xE0 (GPIODEN bit 3), APB1LENR +0xE8 (USART3EN bit 18); GPIOD at
 * 0x58020C00; USART3 (ST-LINK virtual COM port on PD8 TX / PD9 RX, UM2407) takes alternate function 7. */
static void ek_board_setup(void)
{
    EK_REG32(0x580244E0u) |= 1u << 3;
    EK_REG32(0x580244E8u) |= 1u << 18;
    (void)EK_REG32(0x580244E8u); /* the enable takes effect before the peripheral is touched */
    uint32_t moder = EK_REG32(0x58020C00u);
    moder = (moder & ~(0xFu << 16)) | (0xAu << 16); /* PD8, PD9: alternate function */
    EK_REG32(0x58020C00u) = moder;
    uint32_t afrh = EK_REG32(0x58020C24u);
    EK_REG32(0x58020C24u) = (afrh & ~0xFFu) | 0x77u;
}
#elif defined(EK_BOARD_NUCLEO_L476RG)
/* RM0351 (STM32L476): RCC at 0x40021000, AHB2ENR +0x4C (GPIOAEN bit 0), APB1ENR1 +0x58 (USART2EN bit 17); GPIOA at
 * 0x48000000; USART2 (ST-LINK virtual COM port on PA2 TX / PA3 RX, UM1724) takes alternate function 7. */
static void ek_board_setup(void)
{
    EK_REG32(0x4002104Cu) |= 1u << 0;
    EK_REG32(0x40021058u) |= 1u << 17;
    (void)EK_REG32(0x40021058u);
    uint32_t moder = EK_REG32(0x48000000u);
    moder = (moder & ~(0xFu << 4)) | (0xAu << 4); /* PA2, PA3: alternate function */
    EK_REG32(0x48000000u) = moder;
    uint32_t afrl = EK_REG32(0x48000020u);
    EK_REG32(0x48000020u) = (afrl & ~(0xFFu << 8)) | (0x77u << 8);
}
#elif defined(EK_BOARD_LONGAN_NANO)
/* GD32VF103 user manual: RCU at 0x40021000, APB2EN +0x18 (AFEN bit 0, PAEN bit 2, USART0EN bit 14); GPIOA at
 * 0x40010800, CTL1 +0x04 holds PA8..PA15, 4 bits each; USART0 TX on PA9 (alternate push-pull, 50 MHz: 0xB), RX on
 * PA10 (floating input: 0x4, its reset value). */
static void ek_board_setup(void)
{
    EK_REG32(0x40021018u) |= (1u << 0) | (1u << 2) | (1u << 14);
    uint32_t ctl1 = EK_REG32(0x40010804u);
    ctl1 = (ctl1 & ~(0xFFu << 4)) | (0x4Bu << 4);
    EK_REG32(0x40010804u) = ctl1;
}
#else
/* Emulated boards: QEMU's UART models need no clock gates or pins. */
static void ek_board_setup(void)
{
}
#endif

/* ---- the UART ------------------------------------------------------------------------------------------------- */

#if defined(EK_UART_CMSDK)
/* Arm CMSDK APB UART (MPS2/MPS3 FPGA images; QEMU hw/char/cmsdk-apb-uart.c): DATA +0, STATE +4 (bit 0 TX full,
 * bit 1 RX full), CTRL +8 (bit 0 TX enable, bit 1 RX enable), BAUDDIV +0x10 (at least 16). */
static void ek_uart_setup(void)
{
    EK_REG32(EK_UART_BASE + 0x10u) = EK_UART_DIVISOR;
    EK_REG32(EK_UART_BASE + 0x08u) = 3u;
}
void ek_device_putc(uint8_t byte)
{
    while (EK_REG32(EK_UART_BASE + 0x04u) & 1u) {
    }
    EK_REG32(EK_UART_BASE) = byte;
}
uint8_t ek_device_getc(void)
{
    while (!(EK_REG32(EK_UART_BASE + 0x04u) & 2u)) {
    }
    return (uint8_t)EK_REG32(EK_UART_BASE);
}
#elif defined(EK_UART_STM32)
/* STM32 USART (RM0433 / RM0351 "USART registers"): CR1 +0 (UE bit 0, RE bit 2, TE bit 3), BRR +0x0C (fck / baud
 * with 16x oversampling), ISR +0x1C (ORE bit 3, RXNE bit 5, TXE bit 7), ICR +0x20 (ORECF bit 3), RDR +0x24,
 * TDR +0x28. */
static void ek_uart_setup(void)
{
    EK_REG32(EK_UART_BASE) = 0u;
    EK_REG32(EK_UART_BASE + 0x0Cu) = EK_UART_DIVISOR;
    EK_REG32(EK_UART_BASE) = (1u << 0) | (1u << 2) | (1u << 3);
}
void ek_device_putc(uint8_t byte)
{
    while (!(EK_REG32(EK_UART_BASE + 0x1Cu) & (1u << 7))) {
    }
    EK_REG32(EK_UART_BASE + 0x28u) = byte;
}
uint8_t ek_device_getc(void)
{
    for (;;) {
        uint32_t isr = EK_REG32(EK_UART_BASE + 0x1Cu);
        if (isr & (1u << 5)) {
            return (uint8_t)EK_REG32(EK_UART_BASE + 0x24u);
        }
        if (isr & (1u << 3)) { /* an overrun stops reception until cleared; the frame's CRC catches the loss */
            EK_REG32(EK_UART_BASE + 0x20u) = 1u << 3;
        }
    }
}
#elif defined(EK_UART_GD32)
/* GD32VF103 USART (user manual, "USART registers"): STAT +0 (RBNE bit 5, TBE bit 7), DATA +4, BAUD +8 (fck / baud),
 * CTL0 +0x0C (REN bit 2, TEN bit 3, UEN bit 13). */
static void ek_uart_setup(void)
{
    EK_REG32(EK_UART_BASE + 0x08u) = EK_UART_DIVISOR;
    EK_REG32(EK_UART_BASE + 0x0Cu) = (1u << 13) | (1u << 3) | (1u << 2);
}
void ek_device_putc(uint8_t byte)
{
    while (!(EK_REG32(EK_UART_BASE) & (1u << 7))) {
    }
    EK_REG32(EK_UART_BASE + 0x04u) = byte;
}
uint8_t ek_device_getc(void)
{
    while (!(EK_REG32(EK_UART_BASE) & (1u << 5))) {
    }
    return (uint8_t)EK_REG32(EK_UART_BASE + 0x04u);
}
#elif defined(EK_UART_NS16550)
/* 16550-compatible UART with byte registers (QEMU hw/char/serial.c on riscv virt): RBR/THR +0, DLL/DLM +0/+1 with
 * LCR.DLAB, FCR +2, LCR +3, LSR +5 (DR bit 0, THRE bit 5). */
static void ek_uart_setup(void)
{
    EK_REG8(EK_UART_BASE + 3u) = 0x83u; /* DLAB, 8N1 */
    EK_REG8(EK_UART_BASE + 0u) = (uint8_t)(EK_UART_DIVISOR / 16u);
    EK_REG8(EK_UART_BASE + 1u) = (uint8_t)((EK_UART_DIVISOR / 16u) >> 8);
    EK_REG8(EK_UART_BASE + 3u) = 0x03u;
    EK_REG8(EK_UART_BASE + 2u) = 0x07u; /* FIFOs on and cleared */
}
void ek_device_putc(uint8_t byte)
{
    while (!(EK_REG8(EK_UART_BASE + 5u) & 0x20u)) {
    }
    EK_REG8(EK_UART_BASE) = byte;
}
uint8_t ek_device_getc(void)
{
    while (!(EK_REG8(EK_UART_BASE + 5u) & 0x01u)) {
    }
    return EK_REG8(EK_UART_BASE);
}
#else
#error "ek_device.c: the board profile names no UART (EK_UART_CMSDK, EK_UART_STM32, EK_UART_GD32, EK_UART_NS16550)"
#endif

/* ---- the cycle counter ---------------------------------------------------------------------------------------- */

#if defined(EK_CYCLES_DWT)
/* Armv7-M / Armv8-M ARM: DEMCR 0xE000EDFC (TRCENA bit 24) powers the DWT; DWT_CTRL 0xE0001000 (CYCCNTENA bit 0),
 * DWT_CYCCNT 0xE0001004; the Cortex-M7's DWT is locked until 0xC5ACCE55 is written to DWT_LAR 0xE0001FB0. */
static void ek_cycles_setup(void)
{
    EK_REG32(0xE000EDFCu) |= 1u << 24;
#if defined(EK_DWT_UNLOCK)
    EK_REG32(0xE0001FB0u) = 0xC5ACCE55u;
#endif
    EK_REG32(0xE0001004u) = 0u;
    EK_REG32(0xE0001000u) |= 1u;
}
uint32_t ek_device_cycles(void)
{
    return EK_REG32(0xE0001004u);
}
#elif defined(EK_CYCLES_MCYCLE)
/* RISC-V privileged specification: mcycle (low 32 bits, CSR 0xB00); mcountinhibit (0x320) bit 0 stops it. */
static void ek_cycles_setup(void)
{
#if defined(EK_MCOUNTINHIBIT)
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrw 0x320, zero\n.option pop");
#endif
}
uint32_t ek_device_cycles(void)
{
    uint32_t v;
    __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, mcycle\n.option pop" : "=r"(v));
    return v;
}
#elif defined(EK_CYCLES_NONE)
static void ek_cycles_setup(void)
{
}
uint32_t ek_device_cycles(void)
{
    return 0u;
}
#else
#error "ek_device.c: the board profile names no cycle counter (EK_CYCLES_DWT, EK_CYCLES_MCYCLE, EK_CYCLES_NONE)"
#endif

/* ---- caches --------------------------------------------------------------------------------------------------- */

#if defined(EK_ENABLE_CACHES)
/* Cortex-M7 (Armv7-M ARM B2.2.7 and the M7 TRM): invalidate, then enable the instruction cache (ICIALLU
 * 0xE000EF50, CCR.IC bit 17 at 0xE000ED14) and the data cache (set/way invalidate through DCISW 0xE000EF60 over
 * CCSIDR 0xE000ED80's sets and ways, 32-byte lines; CCR.DC bit 16). Off at reset; a real deployment runs with
 * them on, so cycles are measured with them on. */
static void ek_caches_setup(void)
{
    __asm__ volatile("dsb\n isb" ::: "memory");
    EK_REG32(0xE000EF50u) = 0u;
    __asm__ volatile("dsb\n isb" ::: "memory");
    EK_REG32(0xE000ED14u) |= 1u << 17;
    __asm__ volatile("dsb\n isb" ::: "memory");
    EK_REG32(0xE000ED84u) = 0u; /* CSSELR: level 1 data cache */
    __asm__ volatile("dsb" ::: "memory");
    uint32_t ccsidr = EK_REG32(0xE000ED80u);
    uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1u;
    uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1u;
    for (uint32_t set = 0; set < sets; set++) {
        for (uint32_t way = 0; way < ways; way++) {
            EK_REG32(0xE000EF60u) = (set << 5) | (way << 30);
        }
    }
    __asm__ volatile("dsb" ::: "memory");
    EK_REG32(0xE000ED14u) |= 1u << 16;
    __asm__ volatile("dsb\n isb" ::: "memory");
}
#else
static void ek_caches_setup(void)
{
}
#endif

static int ek_has_cycles;

void ek_device_init(void)
{
    ek_caches_setup();
    ek_board_setup();
    ek_uart_setup();
    ek_cycles_setup();
    uint32_t before = ek_device_cycles();
    for (volatile uint32_t i = 0; i < 64u; i++) {
    }
    ek_has_cycles = ek_device_cycles() != before;
}

int ek_device_has_cycles(void)
{
    return ek_has_cycles;
}

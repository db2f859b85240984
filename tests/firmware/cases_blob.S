/* The test cases of tests/kernel_harness.py, linked into the firmware as read-only data (cases.bin is written into
 * the build folder, which is on the assembler's include path). */
    .section .rodata.ek_cases, "a"
    .balign 8
    .global ek_cases
ek_cases:
    .incbin "cases.bin"
    .balign 8

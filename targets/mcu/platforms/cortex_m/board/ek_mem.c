/*
 * ek_mem.c: memcpy, memmove, memset and memcmp for firmware linked with -nostdlib.
 *
 * GCC emits calls to these for struct copies and zeroing even in freestanding code. They are compiled with loop
 * distribution off so GCC cannot turn their loops back into calls to themselves. Word-sized when both pointers are
 * word-aligned, which is the common case for tensors.
 */
#include <stddef.h>
#include <stdint.h>

#define EK_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

typedef uint32_t __attribute__((may_alias)) ek_word; /* may alias any object, like char */

EK_NO_LIBCALLS void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
        for (; n >= 4; n -= 4, d += 4, s += 4) {
            *(ek_word *)d = *(const ek_word *)s;
        }
    }
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

EK_NO_LIBCALLS void *memmove(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (d <= s || d >= s + n) {
        while (n--) {
            *d++ = *s++;
        }
    } else {
        while (n--) {
            d[n] = s[n];
        }
    }
    return dst;
}

EK_NO_LIBCALLS void *memset(void *dst, int value, size_t n)
{
    uint8_t *d = dst;
    uint8_t byte = (uint8_t)value;
    if (((uintptr_t)d & 3u) == 0) {
        uint32_t word = 0x01010101u * byte;
        for (; n >= 4; n -= 4, d += 4) {
            *(ek_word *)d = word;
        }
    }
    while (n--) {
        *d++ = byte;
    }
    return dst;
}

EK_NO_LIBCALLS int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a;
    const uint8_t *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y) {
            return *x < *y ? -1 : 1;
        }
    }
    return 0;
}

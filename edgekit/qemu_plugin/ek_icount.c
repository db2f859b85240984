/*
 * ek_icount: a QEMU TCG plugin that counts executed guest instructions exactly and records the count each time
 * the firmware enters ek_marker().
 *
 * Part of edgekit.runtimes.qemu (Artifact -> Measured): edgekit/icount.py compiles this file with the host gcc into
 * a shared object on first use and loads it with
 *     qemu-system-arm ... -plugin ek_icount.so,marker=0x<address of ek_marker>,out=<file>
 *
 * Counting is per instruction (an inline add in front of every translated instruction), not per translation block:
 * when a block is left early (a fault, an exception, a semihosting call) only the instructions that started are
 * counted. Counts are instructions, not cycles.
 *
 * Output file, written when QEMU exits (the firmware's SYS_EXIT_EXTENDED semihosting call ends in exit()):
 *     total <instructions executed>
 *     marker <instructions executed before the marker's first instruction>   (one line per hit, in order)
 *
 * In user mode (qemu-aarch64 running a Linux program, targets/phone/arm64.py) there is no marker function to find: the
 * program marks a point by calling syscall number N (``syscall=N``, an unused number such as 4095; the kernel
 * answers ENOSYS), and each call is recorded as
 *     syscall <instructions executed before the call> <its first argument>
 * Threads of a user-mode program share the one counter (its adds are not atomic): exact for the single-threaded
 * runs edgekit makes.
 *
 * QEMU 7.2 (Debian 12) supports -plugin but ships no qemu-plugin.h, so the few declarations this plugin needs are
 * written out below. They follow QEMU's documented stable plugin API, version 1 (docs/devel/tcg-plugins.rst of
 * QEMU 7.2); the functions are resolved against the qemu-system-arm executable when QEMU loads the plugin.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the subset of QEMU's plugin API (version 1) used here --------------------------------------------------- */
#define EK_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                                              uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                                              uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);

EK_EXPORT int qemu_plugin_version = 1;
/* ---------------------------------------------------------------------------------------------------------------- */

/* The boards are single-core, so one counter (no atomics) is exact. */
static uint64_t insn_count;
static uint64_t marker_addr;
static bool have_marker;
static const char *out_path;
static uint64_t *marker_counts;
static uint64_t *marker_tags;   /* the syscall's first argument (user mode); 0 for a marker function */
static size_t n_markers, cap_markers;
static int64_t marker_syscall = -1;

/* The marker's own instruction is not counted inline but here, after recording, so a recorded value is always
 * "instructions executed before this marker hit", whatever order QEMU runs inline ops and callbacks in. */
static void record(uint64_t tag)
{
    if (n_markers == cap_markers) {
        size_t cap = cap_markers ? 2 * cap_markers : 1024;
        uint64_t *grown = realloc(marker_counts, cap * sizeof *grown);
        uint64_t *grown_tags = grown ? realloc(marker_tags, cap * sizeof *grown_tags) : NULL;
        if (!grown || !grown_tags) {
            qemu_plugin_outs("ek_icount: out of memory recording marker hits\n");
            abort();
        }
        marker_counts = grown;
        marker_tags = grown_tags;
        cap_markers = cap;
    }
    marker_tags[n_markers] = tag;
    marker_counts[n_markers++] = insn_count;
}

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    (void)userdata;
    record(0);
    insn_count++;
}

/* The svc instruction itself was counted inline before QEMU handles the system call. */
static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id, (void)vcpu_index, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num == marker_syscall) {
        record(a1);
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (have_marker && qemu_plugin_insn_vaddr(insn) == marker_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        } else {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, 1);
        }
    }
}

static void write_counts(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        qemu_plugin_outs("ek_icount: cannot write the output file\n");
        return;
    }
    fprintf(f, "total %" PRIu64 "\n", insn_count);
    for (size_t i = 0; i < n_markers; i++) {
        if (marker_syscall >= 0) {
            fprintf(f, "syscall %" PRIu64 " %" PRIu64 "\n", marker_counts[i], marker_tags[i]);
        } else {
            fprintf(f, "marker %" PRIu64 "\n", marker_counts[i]);
        }
    }
    fclose(f);
}

EK_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "marker=", 7) == 0) {
            char *end;
            marker_addr = strtoull(argv[i] + 7, &end, 0);
            if (*end != '\0') {
                qemu_plugin_outs("ek_icount: marker= expects an address such as 0x1234\n");
                return -1;
            }
            /* Thumb function symbols carry bit 0; instructions sit at even addresses. */
            marker_addr &= ~(uint64_t)1;
            have_marker = marker_addr != 0;
        } else if (strncmp(argv[i], "syscall=", 8) == 0) {
            char *end;
            marker_syscall = strtoll(argv[i] + 8, &end, 0);
            if (*end != '\0' || marker_syscall < 0) {
                qemu_plugin_outs("ek_icount: syscall= expects a system call number such as 4095\n");
                return -1;
            }
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        } else {
            qemu_plugin_outs("ek_icount: unknown argument (expected marker=0x... or syscall=N, and out=PATH)\n");
            return -1;
        }
    }
    if (!out_path || !*out_path) {
        qemu_plugin_outs("ek_icount: missing out=PATH\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    if (marker_syscall >= 0) {
        qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    }
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}

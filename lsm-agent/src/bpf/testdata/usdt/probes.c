/*
 * Fixture for lsm-agent's bpf::usdt tests: a tiny static x86_64 program with SystemTap SDT
 * (USDT) probes, written without <sys/sdt.h>. Each probe site is a `nop` behind a global label
 * (`site_*`), so that the tests can check the computed file offsets against the symbol table.
 * How to rebuild: see README.md beside this file.
 */

typedef unsigned short u16;

/* The semaphore of demo:ready: a tracer increments it to switch the probe's argument code on. */
__attribute__((section(".probes"), used)) volatile u16 demo_ready_semaphore;

/*
 * One probe site: the `nop` and its note (type 3, owner "stapsdt"; pc, .stapsdt.base's
 * address, semaphore's address, then provider, name and argument string), plus the one-byte
 * .stapsdt.base section shared by all sites. ARGS uses the asm operands %0..: gcc prints each
 * as a register, `$imm` or `off(%reg)`, which is how sys/sdt.h describes the arguments.
 */
#define SDT(label, provider, name, sema, args, ...)                                          \
	__asm__ __volatile__(".globl " label "\n"                                                \
			     label ": nop\n"                                                 \
			     ".pushsection .note.stapsdt,\"?\",\"note\"\n"                  \
			     ".balign 4\n"                                                   \
			     ".4byte 992f-991f, 994f-993f, 3\n"                              \
			     "991: .asciz \"stapsdt\"\n"                                     \
			     "992: .balign 4\n"                                              \
			     "993: .8byte " label "\n"                                       \
			     ".8byte _.stapsdt.base\n"                                       \
			     ".8byte " sema "\n"                                             \
			     ".asciz \"" provider "\"\n"                                     \
			     ".asciz \"" name "\"\n"                                         \
			     ".asciz \"" args "\"\n"                                         \
			     "994: .balign 4\n"                                              \
			     ".popsection\n"                                                 \
			     ".ifndef _.stapsdt.base\n"                                      \
			     ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n" \
			     ".weak _.stapsdt.base\n"                                        \
			     ".hidden _.stapsdt.base\n"                                      \
			     "_.stapsdt.base: .space 1\n"                                    \
			     ".size _.stapsdt.base, 1\n"                                     \
			     ".popsection\n"                                                 \
			     ".endif\n"                                                      \
			     :                                                               \
			     : __VA_ARGS__)

static long table[4] = {1, 2, 3, 4};

__attribute__((noinline)) void tick_a(int n, long m, long *p)
{
	SDT("site_tick_a", "demo", "tick", "0", "-4@%0 8@%1 8@%2 -4@$5", "nor"(n), "nor"(m),
	    "m"(p[1]));
}

__attribute__((noinline)) void tick_b(long *p, long i)
{
	SDT("site_tick_b", "demo", "tick", "0", "-4@%0 8@%1 -4@$-7", "nor"((int)i), "m"(p[i]));
}

__attribute__((noinline)) void ready(unsigned char c)
{
	if (demo_ready_semaphore)
		SDT("site_ready", "demo", "ready", "demo_ready_semaphore", "1@%0", "nor"(c));
}

__attribute__((noinline)) void idle(void)
{
	SDT("site_idle", "demo", "idle", "0", "", "i"(0));
}

__attribute__((noinline)) void other(void)
{
	SDT("site_other", "other", "bad", "0", "8@sym+4(%%rip)", "i"(0));
}

void _start(void)
{
	tick_a(1, 2, table);
	tick_b(table, 3);
	ready('x');
	idle();
	other();
	__asm__ __volatile__("mov $60, %eax\n xor %edi, %edi\n syscall");
	__builtin_unreachable();
}

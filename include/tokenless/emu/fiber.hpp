#pragma once
// Minimal stackful fibers for the CPU SIMT executor.
//
// glibc's swapcontext makes a signal-mask syscall on every switch, which made
// a million-thread launch take seconds; on x86-64 a hand-written switch that
// saves only the callee-saved state is used instead, with ucontext as the
// portable fallback. Switches are annotated for AddressSanitizer so that
// stack instrumentation and exception unwinding inside fibers stay correct.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define TOKENLESS_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TOKENLESS_EMU_ASAN 1
#endif
#endif
#if defined(TOKENLESS_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__SANITIZE_THREAD__)
#define TOKENLESS_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TOKENLESS_EMU_TSAN 1
#endif
#endif
#if defined(TOKENLESS_EMU_TSAN)
// Fibers are announced to TSan; switches synchronise, so fiber mode reports
// no races (use thread mode for that) but also no false ones.
#include <sanitizer/tsan_interface.h>
#endif

#if defined(__x86_64__) && !defined(TOKENLESS_EMU_UCONTEXT)
#define TOKENLESS_EMU_ASM_SWITCH 1
// Saves rbp, rbx, r12-r15, the x87 control word and MXCSR on the current stack,
// stores the stack pointer to *from_sp and resumes the stack at to_sp.
// Weak: every translation unit that includes this header carries a copy.
extern "C" void tokenless_emu_switch(void** from_sp, void* to_sp);
__asm__(
    ".text\n"
    ".weak tokenless_emu_switch\n"
    ".type tokenless_emu_switch,@function\n"
    "tokenless_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $16, %rsp\n"
    "  stmxcsr 8(%rsp)\n"
    "  fnstcw (%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr 8(%rsp)\n"
    "  fldcw (%rsp)\n"
    "  addq $16, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size tokenless_emu_switch, .-tokenless_emu_switch\n");
#else
#include <ucontext.h>
#endif

namespace tokenless::emu::detail {

// A fiber stack: mmap'd lazily, with a guard page below it so an overflow
// faults instead of silently corrupting a neighbour.
struct FiberStack {
  void* base = nullptr;  // start of the mapping (guard page)
  std::size_t bytes = 0; // usable bytes above the guard page

  FiberStack() = default;
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  FiberStack(FiberStack&& o) noexcept : base(o.base), bytes(o.bytes) { o.base = nullptr; o.bytes = 0; }
  FiberStack& operator=(FiberStack&& o) noexcept {
    if (this != &o) { release(); base = o.base; bytes = o.bytes; o.base = nullptr; o.bytes = 0; }
    return *this;
  }
  ~FiberStack() { release(); }

  bool allocate(std::size_t usable) {
    std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    usable = (usable + page - 1) / page * page;
    void* p = mmap(nullptr, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    mprotect(p, page, PROT_NONE);
    base = p;
    bytes = usable;
    return true;
  }
  void release() {
    if (base) {
      std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
#if defined(TOKENLESS_EMU_ASAN)
      ASAN_UNPOISON_MEMORY_REGION(bottom(), bytes);
#endif
      munmap(base, bytes + page);
      base = nullptr;
      bytes = 0;
    }
  }
  char* bottom() const { return static_cast<char*>(base) + static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }
  char* top() const { return bottom() + bytes; }
};

// One execution context. The scheduler context is a Context with no stack.
struct Context {
#if defined(TOKENLESS_EMU_ASM_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t uc{};
#endif
  const void* stack_bottom = nullptr;  // for the sanitizer annotations
  std::size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;   // null for the scheduler's own context until its first switch
  bool tsan_owned = false;

  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
#if defined(TOKENLESS_EMU_TSAN)
    if (tsan_owned && tsan_fiber) __tsan_destroy_fiber(tsan_fiber);
#endif
  }
};

using EntryFn = void (*)();

#if !defined(TOKENLESS_EMU_ASM_SWITCH)
inline void ucontext_entry_trampoline(unsigned lo, unsigned hi) {
  auto fn = reinterpret_cast<EntryFn>((static_cast<std::uintptr_t>(hi) << 32) | lo);
  fn();
}
#endif

// Prepares `ctx` so that switching to it calls `entry()` on `stack`.
// `entry` must never return: it switches away for the last time instead.
inline void make_context(Context& ctx, FiberStack& stack, EntryFn entry) {
  ctx.stack_bottom = stack.bottom();
  ctx.stack_size = stack.bytes;
#if defined(TOKENLESS_EMU_TSAN)
  if (!ctx.tsan_fiber) {
    ctx.tsan_fiber = __tsan_create_fiber(0);
    ctx.tsan_owned = true;
  }
#endif
#if defined(TOKENLESS_EMU_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(stack.bottom(), stack.bytes);
#endif
#if defined(TOKENLESS_EMU_ASM_SWITCH)
  auto top = reinterpret_cast<std::uintptr_t>(stack.top()) & ~std::uintptr_t{15};
  auto* sp = reinterpret_cast<std::uint64_t*>(top);
  *--sp = 0;                                             // fake return address of entry: keeps rsp % 16 == 8 at entry
  *--sp = reinterpret_cast<std::uint64_t>(entry);        // popped by `ret`
  for (int i = 0; i < 6; ++i) *--sp = 0;                 // rbp rbx r12 r13 r14 r15
  sp -= 2;                                               // x87 control word and MXCSR
  std::uint32_t mxcsr;
  std::uint16_t fpucw;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(fpucw));
  std::memcpy(reinterpret_cast<char*>(sp) + 8, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp), &fpucw, 2);
  ctx.sp = sp;
#else
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.bottom();
  ctx.uc.uc_stack.ss_size = stack.bytes;
  ctx.uc.uc_link = nullptr;
  auto v = reinterpret_cast<std::uintptr_t>(entry);
  makecontext(&ctx.uc, reinterpret_cast<void (*)()>(ucontext_entry_trampoline), 2,
              static_cast<unsigned>(v & 0xffffffffu), static_cast<unsigned>(v >> 32));
#endif
}

// Called first thing on a fresh fiber, and after every switch returns.
inline void finish_switch([[maybe_unused]] Context& self, [[maybe_unused]] Context& from) {
#if defined(TOKENLESS_EMU_ASAN)
  const void* bottom = nullptr;
  std::size_t size = 0;
  __sanitizer_finish_switch_fiber(self.asan_fake_stack, &bottom, &size);
  if (!from.stack_bottom) {  // learn the scheduler's own stack on the first switch
    from.stack_bottom = bottom;
    from.stack_size = size;
  }
#endif
}

// Switches from `from` to `to`. `from_dying` tells ASan that `from` never
// resumes, so its fake stack can be freed.
inline void switch_context(Context& from, Context& to, [[maybe_unused]] bool from_dying = false) {
#if defined(TOKENLESS_EMU_ASAN)
  __sanitizer_start_switch_fiber(from_dying ? nullptr : &from.asan_fake_stack, to.stack_bottom, to.stack_size);
#endif
#if defined(TOKENLESS_EMU_TSAN)
  if (!from.tsan_fiber) from.tsan_fiber = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(to.tsan_fiber, 0);
#endif
#if defined(TOKENLESS_EMU_ASM_SWITCH)
  tokenless_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

}  // namespace tokenless::emu::detail

// base/check.h — invariant checks for bugs (never for untrusted input: use Result/Status).
// DSV4_CHECK(cond) is always on; DSV4_DCHECK(cond) only in builds with DSV4_DEBUG_CHECKS=1
// (dev/asan/fuzz presets) and is meant for hot loops. Both print file:line and abort.
#pragma once

namespace dsv4::detail {
[[noreturn]] void check_failed(const char* file, int line, const char* expr, const char* msg);
}  // namespace dsv4::detail

#define DSV4_CHECK(cond)                                                \
  do {                                                                  \
    if (!(cond)) [[unlikely]]                                           \
      ::dsv4::detail::check_failed(__FILE__, __LINE__, #cond, nullptr); \
  } while (0)

#define DSV4_CHECK_MSG(cond, msg)                                     \
  do {                                                                \
    if (!(cond)) [[unlikely]]                                         \
      ::dsv4::detail::check_failed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

#if defined(DSV4_DEBUG_CHECKS) && DSV4_DEBUG_CHECKS
#define DSV4_DCHECK(cond) DSV4_CHECK(cond)
#else
#define DSV4_DCHECK(cond) \
  do {                    \
    (void)sizeof(cond);   \
  } while (0)
#endif

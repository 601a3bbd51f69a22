// base/result.h — Status and Result<T>: how bad input from outside is reported.
//
// Purpose: every function that reads something we do not control (files, config.json,
// tokenizer data, HTTP bodies, KV snapshots, resource budgets) returns Status or Result<T>.
// The CLI prints "dsv4: <message>" and exits non-zero; the server maps codes to HTTP status.
// Invariants: an error Status always carries a non-empty message naming what was wrong and,
// where there is one, the file and the field/tensor.
// Non-goals: exceptions across module edges (third-party code that throws is wrapped at its
// adapter), error chaining/stack traces. Bugs are DSV4_CHECK (base/check.h), not Status.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "base/check.h"

namespace dsv4 {

enum class ErrorCode {
  ok = 0,
  invalid_argument,     // a caller-supplied value is out of range or malformed
  not_found,            // a file, tensor, token or key does not exist
  parse_error,          // malformed JSON / safetensors / tokenizer / snapshot bytes
  unsupported,          // well-formed but outside what we implement (unknown dtype, arch)
  io_error,             // open/read/write/mmap/fsync failed
  out_of_memory,        // a memory budget would be exceeded
  data_loss,            // checksum mismatch, truncated data
  failed_precondition,  // the object is in the wrong state for this call
  internal,             // should not happen; a bug surfaced as an error
};

std::string_view error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {
    DSV4_CHECK(code != ErrorCode::ok);
  }
  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == ErrorCode::ok; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "parse_error: model.safetensors: header length 123 past end of file (size 100)"
  std::string to_string() const;

  // Prefixes the message with context: "loading /x/config.json: " + message.
  Status with_context(std::string_view context) const;

 private:
  ErrorCode code_ = ErrorCode::ok;
  std::string message_;
};

inline Status ok_status() {
  return Status();
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    DSV4_CHECK(!std::get<Status>(v_).ok());
  }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & {
    DSV4_CHECK(ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    DSV4_CHECK(ok());
    return std::get<T>(v_);
  }
  T&& value() && {
    DSV4_CHECK(ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

// Error constructors: return dsv4::parse_error("...");
inline Status invalid_argument(std::string m) {
  return {ErrorCode::invalid_argument, std::move(m)};
}
inline Status not_found(std::string m) {
  return {ErrorCode::not_found, std::move(m)};
}
inline Status parse_error(std::string m) {
  return {ErrorCode::parse_error, std::move(m)};
}
inline Status unsupported(std::string m) {
  return {ErrorCode::unsupported, std::move(m)};
}
inline Status io_error(std::string m) {
  return {ErrorCode::io_error, std::move(m)};
}
inline Status out_of_memory(std::string m) {
  return {ErrorCode::out_of_memory, std::move(m)};
}
inline Status data_loss(std::string m) {
  return {ErrorCode::data_loss, std::move(m)};
}
inline Status failed_precondition(std::string m) {
  return {ErrorCode::failed_precondition, std::move(m)};
}
inline Status internal_error(std::string m) {
  return {ErrorCode::internal, std::move(m)};
}

}  // namespace dsv4

// Propagation helpers.
#define DSV4_CONCAT_INNER(a, b) a##b
#define DSV4_CONCAT(a, b) DSV4_CONCAT_INNER(a, b)

// DSV4_RETURN_IF_ERROR(expr): expr is a Status; returns it from the enclosing function if not ok.
#define DSV4_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::dsv4::Status dsv4_status_ = (expr);        \
    if (!dsv4_status_.ok()) return dsv4_status_; \
  } while (0)

// DSV4_ASSIGN_OR_RETURN(decl, expr): expr is a Result<T>; on error returns its Status,
// otherwise `decl = std::move(value)`.  DSV4_ASSIGN_OR_RETURN(auto file, MmapFile::open(p));
#define DSV4_ASSIGN_OR_RETURN(decl, expr) \
  DSV4_ASSIGN_OR_RETURN_IMPL(DSV4_CONCAT(dsv4_result_, __LINE__), decl, expr)
#define DSV4_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  decl = std::move(tmp).value()

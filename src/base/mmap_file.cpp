#include "base/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace dsv4 {

namespace {
std::string errno_text() {
  return std::strerror(errno);
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace

Result<MmapFile> MmapFile::open(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) {
    if (errno == ENOENT) return not_found(path + ": no such file");
    return io_error(path + ": cannot open: " + errno_text());
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return io_error(path + ": cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) return invalid_argument(path + ": not a regular file");
  MmapFile m;
  m.path_ = path;
  m.size_ = static_cast<size_t>(st.st_size);
  if (m.size_ == 0) return m;
  void* p = ::mmap(nullptr, m.size_, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p == MAP_FAILED) return io_error(path + ": mmap failed: " + errno_text());
  m.data_ = static_cast<const uint8_t*>(p);
  return m;
}

MmapFile::MmapFile(MmapFile&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      path_(std::move(o.path_)) {}

MmapFile& MmapFile::operator=(MmapFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    path_ = std::move(o.path_);
  }
  return *this;
}

MmapFile::~MmapFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MmapFile::advise(AccessHint hint, size_t offset, size_t length) const {
  if (!data_ || offset >= size_) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t begin = offset / page * page;
  size_t end = length > size_ - offset ? size_ : offset + length;
  int advice = MADV_NORMAL;
  switch (hint) {
    case AccessHint::normal:
      advice = MADV_NORMAL;
      break;
    case AccessHint::sequential:
      advice = MADV_SEQUENTIAL;
      break;
    case AccessHint::random:
      advice = MADV_RANDOM;
      break;
    case AccessHint::willneed:
      advice = MADV_WILLNEED;
      break;
    case AccessHint::hugepage:
#ifdef MADV_HUGEPAGE
      advice = MADV_HUGEPAGE;
#endif
      break;
  }
  (void)::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, advice);
}

Result<std::string> read_file(const std::string& path) {
  DSV4_ASSIGN_OR_RETURN(MmapFile m, MmapFile::open(path));
  return std::string(reinterpret_cast<const char*>(m.data()), m.size());
}

Status write_file_atomic(const std::string& path, std::span<const uint8_t> data) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / (target.filename().string() + ".tmp.XXXXXX")).string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return io_error(path + ": cannot create temp file: " + errno_text());
  // mkstemp creates 0600; give the result ordinary file permissions (rw-r--r--).
  (void)::fchmod(fd, 0644);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::string err = errno_text();
      ::close(fd);
      ::unlink(tmpl.c_str());
      return io_error(path + ": write failed: " + err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string err = errno_text();
    ::unlink(tmpl.c_str());
    return io_error(path + ": fsync/close failed: " + err);
  }
  if (::rename(tmpl.c_str(), path.c_str()) != 0) {
    std::string err = errno_text();
    ::unlink(tmpl.c_str());
    return io_error(path + ": rename failed: " + err);
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return ok_status();
}

}  // namespace dsv4

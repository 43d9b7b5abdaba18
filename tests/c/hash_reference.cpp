// hash_reference: oracle for test_hash/test_ring (see hash_reference.h). Written to
// read like Anna's C++ so that a reviewer can check it line by line against it.
#include "hash_reference.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

const unsigned kVirtualThreadNum = 3000;

struct ServerThread {
  std::string public_ip, private_ip;
  unsigned tid, virtual_num;
  std::string id() const { return private_ip + ":" + std::to_string(tid); }
  std::string virtual_id() const { return id() + "_" + std::to_string(virtual_num); }
  bool operator==(const ServerThread &o) const { return id() == o.id(); }
  bool operator<(const ServerThread &o) const { return id() < o.id(); }
};

struct GlobalHasher {
  typedef uint32_t result_type;
  uint32_t operator()(const ServerThread &th) const {
    return std::hash<std::string>{}("GLOBAL" + th.virtual_id());
  }
  uint32_t operator()(const std::string &key) const {
    return std::hash<std::string>{}("GLOBAL" + key);
  }
};

struct LocalHasher {
  typedef std::size_t result_type;
  std::size_t operator()(const ServerThread &th) const {
    return std::hash<std::string>{}(std::to_string(th.tid) + "_" +
                                    std::to_string(th.virtual_num));
  }
  std::size_t operator()(const std::string &key) const {
    return std::hash<std::string>{}(key);
  }
};

template <typename H>
struct ConsistentHashMap {
  typedef typename H::result_type size_type;
  typedef std::map<size_type, ServerThread> map_type;
  map_type nodes_;
  H hasher_;
  void insert(const ServerThread &node) { nodes_.insert({hasher_(node), node}); }
  void erase(const ServerThread &node) { nodes_.erase(hasher_(node)); }
  typename map_type::iterator find(const std::string &key) {
    if (nodes_.empty()) return nodes_.end();
    auto it = nodes_.lower_bound(hasher_(key));
    if (it == nodes_.end()) it = nodes_.begin();
    return it;
  }
};

}  // namespace

struct ref_global_ring {
  ConsistentHashMap<GlobalHasher> map;
  std::set<ServerThread> unique_servers;
  std::unordered_map<std::string, int> server_join_count;
};

struct ref_local_ring {
  ConsistentHashMap<LocalHasher> map;
  unsigned threads;
};

extern "C" {

bool ref_is_libstdcxx(void) {
#ifdef __GLIBCXX__
  return true;
#else
  return false;
#endif
}

uint64_t ref_std_hash(const void *data, size_t len) {
  return std::hash<std::string>{}(std::string(static_cast<const char *>(data), len));
}

ref_global_ring_t *ref_global_ring_new(void) { return new ref_global_ring; }

void ref_global_ring_free(ref_global_ring_t *r) { delete r; }

bool ref_global_ring_insert(ref_global_ring_t *r, const char *public_ip,
                            const char *private_ip, int join_count) {
  ServerThread new_thread{public_ip, private_ip, 0, 0};
  if (r->unique_servers.count(new_thread)) {
    if (r->server_join_count[private_ip] < join_count) {
      r->server_join_count[private_ip] = join_count;
      return true;
    }
    return false;
  }
  r->unique_servers.insert(new_thread);
  r->server_join_count[private_ip] = join_count;
  for (unsigned v = 0; v < kVirtualThreadNum; v++)
    r->map.insert(ServerThread{public_ip, private_ip, 0, v});
  return true;
}

void ref_global_ring_remove(ref_global_ring_t *r, const char *public_ip,
                            const char *private_ip) {
  for (unsigned v = 0; v < kVirtualThreadNum; v++)
    r->map.erase(ServerThread{public_ip, private_ip, 0, v});
  r->unique_servers.erase(ServerThread{public_ip, private_ip, 0, 0});
  r->server_join_count.erase(private_ip);
}

size_t ref_global_ring_entry_count(const ref_global_ring_t *r) {
  return r->map.nodes_.size();
}

size_t ref_responsible_global(ref_global_ring_t *r, const char *key, size_t len,
                              unsigned R, const char **out, size_t max) {
  std::vector<const ServerThread *> threads;
  auto pos = r->map.find(std::string(key, len));
  R = std::min<unsigned>(R, r->unique_servers.size());
  if (pos != r->map.nodes_.end()) {
    unsigned i = 0;
    while (i < R) {
      bool seen = false;
      for (auto *t : threads) seen = seen || *t == pos->second;
      if (!seen) {
        threads.push_back(&pos->second);
        i += 1;
      }
      if (++pos == r->map.nodes_.end()) pos = r->map.nodes_.begin();
    }
  }
  size_t n = std::min(threads.size(), max);
  for (size_t i = 0; i < n; i++) out[i] = threads[i]->private_ip.c_str();
  return n;
}

ref_local_ring_t *ref_local_ring_new(unsigned threads) {
  auto *r = new ref_local_ring;
  r->threads = threads;
  for (unsigned t = 0; t < threads; t++)
    for (unsigned v = 0; v < kVirtualThreadNum; v++)
      r->map.insert(ServerThread{"", "", t, v});
  return r;
}

void ref_local_ring_free(ref_local_ring_t *r) { delete r; }

size_t ref_responsible_local(ref_local_ring_t *r, const char *key, size_t len,
                             unsigned L, unsigned *out, size_t max) {
  std::vector<unsigned> tids;
  auto pos = r->map.find(std::string(key, len));
  L = std::min(L, r->threads);
  if (pos != r->map.nodes_.end()) {
    unsigned i = 0;
    while (i < L) {
      if (std::find(tids.begin(), tids.end(), pos->second.tid) == tids.end()) {
        tids.push_back(pos->second.tid);
        i += 1;
      }
      if (++pos == r->map.nodes_.end()) pos = r->map.nodes_.begin();
    }
  }
  size_t n = std::min(tids.size(), max);
  for (size_t i = 0; i < n; i++) out[i] = tids[i];
  return n;
}

}  // extern "C"

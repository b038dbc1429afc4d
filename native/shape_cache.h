// Compiled networks by input shape and head, the least recently used dropped past a bound:
// a stream of differently sized images (dense evaluation, no-crop extraction) must not grow
// memory without end. VGGNET_SHAPE_CACHE sets the bound (8 by default).
#pragma once
#include <cstdlib>
#include <list>
#include <memory>
#include <tuple>
#include "plan.h"

namespace vgg {

template <typename Net>
class ShapeCache {
 public:
  ShapeCache() {
    const char* env = std::getenv("VGGNET_SHAPE_CACHE");
    if (env && std::atoi(env) > 0) capacity_ = static_cast<size_t>(std::atoi(env));
  }

  // The network for this request's shape, made by `make()` on first use.
  template <typename Make>
  Net& get(const RunRequest& r, Make&& make) {
    const Key key{r.n, r.h, r.w, r.head};
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == key) {
        entries_.splice(entries_.begin(), entries_, it);
        return *entries_.front().second;
      }
    }
    if (entries_.size() >= capacity_) entries_.pop_back();
    entries_.emplace_front(key, make());
    return *entries_.front().second;
  }

  void clear() { entries_.clear(); }

 private:
  using Key = std::tuple<int, int, int, Head>;
  size_t capacity_ = 8;
  std::list<std::pair<Key, std::unique_ptr<Net>>> entries_;
};

}  // namespace vgg

// The model's CUDA entry points in a build without CUDA: the host backend is all there is.
#include "examples/zoro_train/model/device_ops.h"
#include "examples/zoro_train/model/gpt_compute.h"
#include "runtime/base/check.h"

namespace zoro::train::detail {

std::unique_ptr<DeviceOps> make_cuda_ops() {
  ZORO_THROW(Unsupported, "the model's CUDA path: this build of zoro has no CUDA");
}

std::unique_ptr<GptCompute> make_cuda_compute(const GptConfig&, ParamStore&, const GptOptions&) {
  ZORO_THROW(Unsupported, "the model's CUDA path: this build of zoro has no CUDA");
}

}  // namespace zoro::train::detail

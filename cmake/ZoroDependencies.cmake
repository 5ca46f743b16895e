# Required everywhere: threads, hwloc (placement), oneTBB (CPU optimizers).
find_package(Threads REQUIRED)
find_package(Hwloc REQUIRED)
find_package(TBB REQUIRED COMPONENTS tbb)
find_package(tomlplusplus 3 REQUIRED)  # config files
find_package(Boost 1.74 REQUIRED)       # header-only: Asio for the comm/ rendezvous
find_package(OpenBLAS REQUIRED)       # the reference kernels' GEMMs (cmake/FindOpenBLAS.cmake)
find_package(nlohmann_json 3 REQUIRED)  # JSON: safetensors headers, logs, bench results
if(ZORO_BUILD_EXAMPLES)
  find_package(CLI11 2 CONFIG REQUIRED)  # zoro-train's command line (Debian's libcli11-dev)
endif()

# CUDA: AUTO enables it when a CUDA compiler is found; ON demands it.
set(ZORO_HAS_CUDA OFF)
if(NOT ZORO_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit)
  endif()
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    set(ZORO_HAS_CUDA ON)
    set(CMAKE_CUDA_STANDARD 20)
    # CMake before 3.26 does not know nvcc's C++20 flag (nvcc 12+ has it): name it.
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  elseif(ZORO_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ZORO_CUDA=ON but no CUDA compiler/toolkit was found "
                        "(set CMAKE_CUDA_COMPILER or use ZORO_CUDA=OFF)")
  endif()
endif()

set(ZORO_HAS_NCCL OFF)
if(NOT ZORO_NCCL STREQUAL "OFF")
  if(ZORO_HAS_CUDA)
    find_package(NCCL)
  endif()
  if(ZORO_HAS_CUDA AND NCCL_FOUND)
    set(ZORO_HAS_NCCL ON)
  elseif(ZORO_NCCL STREQUAL "ON")
    message(FATAL_ERROR "ZORO_NCCL=ON but NCCL was not found (it also needs ZORO_CUDA)")
  endif()
endif()

set(ZORO_HAS_MPI OFF)
if(NOT ZORO_MPI STREQUAL "OFF")
  find_package(MPI COMPONENTS CXX)
  if(MPI_CXX_FOUND)
    set(ZORO_HAS_MPI ON)
  elseif(ZORO_MPI STREQUAL "ON")
    message(FATAL_ERROR "ZORO_MPI=ON but no MPI C++ library was found (apt: libopenmpi-dev)")
  endif()
endif()

# Python (python_stub/): the interpreter and its headers, and pybind11 through its CMake
# config (Debian: python3-dev, pybind11-dev). Debian's /usr/bin/python3 is preferred over
# whatever python3 comes first on PATH (a pyenv or venv build without NumPy or PyTorch).
set(ZORO_HAS_PYTHON OFF)
if(NOT ZORO_PYTHON STREQUAL "OFF")
  if(NOT DEFINED Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
    set(Python3_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python 3 interpreter (python_stub/)")
  endif()
  find_package(Python3 COMPONENTS Interpreter Development.Module)
  if(Python3_FOUND)
    find_package(pybind11 CONFIG QUIET)
  endif()
  if(Python3_FOUND AND pybind11_FOUND)
    set(ZORO_HAS_PYTHON ON)
  elseif(ZORO_PYTHON STREQUAL "ON")
    message(FATAL_ERROR "ZORO_PYTHON=ON but Python 3 development files or pybind11 were not "
                        "found (apt: python3-dev pybind11-dev; or use ZORO_PYTHON=OFF)")
  endif()
endif()

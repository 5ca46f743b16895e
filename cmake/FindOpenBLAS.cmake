# FindOpenBLAS: defines OpenBLAS::OpenBLAS (cblas.h + libopenblas). Uses pkg-config when it
# finds openblas.pc, else searches the Debian layout directly (openblas-pthread/ subfolders):
# a tree unpacked without dpkg's alternatives (the offline GPU machine's /opt/zoro-deps) has
# no usable openblas.pc, since that is an alternatives symlink.
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PC_OpenBLAS QUIET openblas)
endif()
find_path(OpenBLAS_INCLUDE_DIR cblas.h
  HINTS ${PC_OpenBLAS_INCLUDE_DIRS}
  PATH_SUFFIXES openblas-pthread openblas x86_64-linux-gnu/openblas-pthread
                x86_64-linux-gnu/openblas-openmp x86_64-linux-gnu)
find_library(OpenBLAS_LIBRARY NAMES openblas
  HINTS ${PC_OpenBLAS_LIBRARY_DIRS}
  PATH_SUFFIXES openblas-pthread x86_64-linux-gnu/openblas-pthread
                x86_64-linux-gnu/openblas-openmp)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OpenBLAS REQUIRED_VARS OpenBLAS_LIBRARY OpenBLAS_INCLUDE_DIR)
if(OpenBLAS_FOUND AND NOT TARGET OpenBLAS::OpenBLAS)
  add_library(OpenBLAS::OpenBLAS UNKNOWN IMPORTED)
  set_target_properties(OpenBLAS::OpenBLAS PROPERTIES IMPORTED_LOCATION "${OpenBLAS_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${OpenBLAS_INCLUDE_DIR}")
endif()
mark_as_advanced(OpenBLAS_INCLUDE_DIR OpenBLAS_LIBRARY)

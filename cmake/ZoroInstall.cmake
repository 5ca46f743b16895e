# `cmake --install` produces a CMake package: find_package(zoro REQUIRED) and
# target_link_libraries(app PRIVATE zoro::zoro) in a trainer's own project.
include(CMakePackageConfigHelpers)
get_property(_zoro_targets GLOBAL PROPERTY ZORO_EXPORT_TARGETS)
install(TARGETS ${_zoro_targets} EXPORT zoroTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/zoro)
set(ZORO_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/zoro)
install(EXPORT zoroTargets NAMESPACE zoro:: DESTINATION ${ZORO_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/zoroConfig.cmake.in
  ${PROJECT_BINARY_DIR}/zoroConfig.cmake INSTALL_DESTINATION ${ZORO_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/zoroConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/zoroConfig.cmake ${PROJECT_BINARY_DIR}/zoroConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/FindHwloc.cmake ${PROJECT_SOURCE_DIR}/cmake/FindNCCL.cmake
  ${PROJECT_SOURCE_DIR}/cmake/FindOpenBLAS.cmake
  DESTINATION ${ZORO_INSTALL_CMAKEDIR})

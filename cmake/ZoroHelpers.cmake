# zoro_install_headers(<dir relative to the project root> <headers...>): install public
# headers under include/zoro/<dir>, so that "#include "runtime/base/error.h"" works from the
# install tree exactly as from the source tree.
function(zoro_install_headers dir)
  install(FILES ${ARGN} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/zoro/${dir})
endfunction()

# zoro_export_library(<target> <export name>): a library that the installed zoro package
# provides as zoro::<export name> (and that zoro::zoro links).
function(zoro_export_library target export_name)
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${export_name})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/zoro>)
  set_property(GLOBAL APPEND PROPERTY ZORO_EXPORT_TARGETS ${target})
  add_library(zoro::${export_name} ALIAS ${target})
endfunction()

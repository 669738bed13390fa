# install.cmake - what `cmake --install build --prefix P` puts under P:
#
#   bin/loanwire-*                      the programs
#   lib/libloanwire-producer.so*        the platform producer library
#   lib/pkgconfig/loanwire-producer.pc  its pkg-config file (relocatable)
#   include/loanwire/*.h                its public headers (LW_API exported)
#   share/man/man1/loanwire-*.1         man pages, made from --help by help2man
#   share/loanwire/rules.default        the exposure consumer's default rules
#   share/loanwire/schemas/             the Avro schemas, every version
#   share/loanwire/systemd/             the service units (deploy/systemd/)
#   share/loanwire/web/                 the dashboard loanwire-query serves (+ uPlot)
include(GNUInstallDirs)

# One line per program: its target and the NAME line of its man page.
set(LW_PROGRAMS
  "loanwire-produce|produce loan events from JSON Lines to Kafka as validated Avro"
  "loanwire-gen|generate a deterministic synthetic feed of loan events"
  "loanwire-id|turn national ids into pseudonymous borrower ids"
  "loanwire-avro|encode, decode and fingerprint Loanwire's single-object Avro"
  "loanwire-topics|create, list and describe Loanwire's Kafka topics"
  "loanwire-exposure|keep every borrower's exposure in Redis from the loan-event topic"
  "loanwire-alerts|follow over-indebtedness alerts from Kafka or Redis"
  "loanwire-query|serve borrowers' exposure and alerts over HTTP"
  "loanwire-reconcile|compare a platform's snapshot of open loans with the bureau's state"
  "loanwire-exposure-bench|apply loan events to the exposure store without Kafka, for profiling")

find_program(HELP2MAN help2man REQUIRED) # Debian's help2man (deploy/install-deps.sh)
set(LW_MAN_DIR ${CMAKE_BINARY_DIR}/man)
file(MAKE_DIRECTORY ${LW_MAN_DIR})
set(LW_MAN_PAGES)
foreach(entry ${LW_PROGRAMS})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 prog)
  list(GET parts 1 what)
  if(NOT TARGET ${prog})
    message(FATAL_ERROR "install.cmake lists ${prog}, which is not built")
  endif()
  install(TARGETS ${prog} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  # help2man runs `prog --help` and `prog --version`; a sanitizer build's
  # leak check is off for that run only.
  add_custom_command(
    OUTPUT ${LW_MAN_DIR}/${prog}.1
    COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=0
            ${HELP2MAN} --no-info --section=1 "--source=Loanwire ${PROJECT_VERSION}"
            "--name=${what}" --output=${LW_MAN_DIR}/${prog}.1 $<TARGET_FILE:${prog}>
    DEPENDS ${prog}
    COMMENT "Man page ${prog}.1 (help2man)"
    VERBATIM)
  list(APPEND LW_MAN_PAGES ${LW_MAN_DIR}/${prog}.1)
endforeach()
add_custom_target(lw_man ALL DEPENDS ${LW_MAN_PAGES})
install(FILES ${LW_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

# The library, its headers and pkg-config file.
install(TARGETS loanwire-producer
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/api.h
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/codec.h
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/error.h
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/event.h
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/id.h
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/json.h
  ${CMAKE_SOURCE_DIR}/common/include/loanwire/validate.h
  ${CMAKE_SOURCE_DIR}/producers/include/loanwire/producer.h
  ${CMAKE_BINARY_DIR}/generated/include/loanwire/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/loanwire)
# ${pcfiledir} is LIBDIR/pkgconfig: as many ".." as that path has parts.
string(REGEX REPLACE "[^/]+" ".." LW_PC_UP "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
configure_file(${CMAKE_SOURCE_DIR}/cmake/loanwire-producer.pc.in
  ${CMAKE_BINARY_DIR}/loanwire-producer.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/loanwire-producer.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# Data: the default rules, the schemas (older versions kept), the units.
install(FILES ${CMAKE_SOURCE_DIR}/consumers/exposure/rules.default
  DESTINATION ${CMAKE_INSTALL_DATADIR}/loanwire)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/schemas/
  DESTINATION ${CMAKE_INSTALL_DATADIR}/loanwire/schemas
  FILES_MATCHING PATTERN "*.avsc" PATTERN "*.md")
install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/systemd/
  DESTINATION ${CMAKE_INSTALL_DATADIR}/loanwire/systemd
  FILES_MATCHING PATTERN "*.service" PATTERN "*.conf" PATTERN "*.env")

# The dashboard's page and its charting library (uPlot, MIT, its LICENSE
# beside it), which the installed loanwire-query serves from
# ../share/loanwire/web relative to itself.
install(DIRECTORY ${CMAKE_BINARY_DIR}/share/loanwire/web/
  DESTINATION ${CMAKE_INSTALL_DATADIR}/loanwire/web)

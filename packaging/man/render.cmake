cmake_minimum_required(VERSION 3.25)
# Renders a man page: the hand-written TEMPLATE with @GENERATED@ replaced by PROGRAM --help-man
# (OPTIONS, EXIT STATUS, ENVIRONMENT from the option parser), @VERSION@ and @DATE@; then OUTPUT.gz
# (gzip -9n: no name or time stamp, as Debian packages want).
# A sanitized build (scripts/build --asan) runs here too: a leak report must not fail the build.
set(ENV{ASAN_OPTIONS} "detect_leaks=0")
execute_process(COMMAND ${PROGRAM} --help-man OUTPUT_VARIABLE generated RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} --help-man failed: ${rc}")
endif()
file(READ ${TEMPLATE} page)
string(REPLACE "@GENERATED@\n" "${generated}" page "${page}")
string(REPLACE "@VERSION@" "${VERSION}" page "${page}")
string(REPLACE "@DATE@" "${DATE}" page "${page}")
file(WRITE ${OUTPUT} "${page}")
execute_process(COMMAND gzip -9nkf ${OUTPUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip ${OUTPUT} failed")
endif()

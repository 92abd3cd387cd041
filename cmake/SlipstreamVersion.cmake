# Sets SLIPSTREAM_COMMIT (full hash or "unknown") and SLIPSTREAM_FULL_VERSION from git.
set(SLIPSTREAM_COMMIT unknown)
set(SLIPSTREAM_FULL_VERSION "${PROJECT_VERSION}")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${PROJECT_SOURCE_DIR} rev-parse HEAD
                  OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE commit_rc ERROR_QUIET)
endif()
if(GIT_FOUND AND commit_rc EQUAL 0)
  set(SLIPSTREAM_COMMIT "${commit}")
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${PROJECT_SOURCE_DIR} describe --exact-match
                          --tags --match "v${PROJECT_VERSION}" HEAD
                  RESULT_VARIABLE tag_rc OUTPUT_QUIET ERROR_QUIET)
  if(NOT tag_rc EQUAL 0)
    execute_process(COMMAND ${GIT_EXECUTABLE} -C ${PROJECT_SOURCE_DIR} show -s
                            --date=format:%Y%m%d --format=%cd.%h HEAD
                    OUTPUT_VARIABLE date_short OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    set(SLIPSTREAM_FULL_VERSION "${PROJECT_VERSION}~git${date_short}")
  endif()
  # Untracked files do not count: build directories live in the tree.
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${PROJECT_SOURCE_DIR} status --porcelain
                          --untracked-files=no
                  OUTPUT_VARIABLE changes OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT changes STREQUAL "")
    string(APPEND SLIPSTREAM_FULL_VERSION "+dirty")
  endif()
endif()

# The date of the man pages (.TH): the commit's, so that a rebuild of one commit is identical.
set(SLIPSTREAM_DATE unknown)
if(GIT_FOUND AND commit_rc EQUAL 0)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${PROJECT_SOURCE_DIR} show -s
                          --date=format:%Y-%m-%d --format=%cd HEAD
                  OUTPUT_VARIABLE SLIPSTREAM_DATE OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
# The date of the Debian changelog entry (RFC 2822); now outside git.
string(TIMESTAMP SLIPSTREAM_DATE_RFC2822 "%a, %d %b %Y %H:%M:%S +0000" UTC)
if(GIT_FOUND AND commit_rc EQUAL 0)
  execute_process(COMMAND ${GIT_EXECUTABLE} -C ${PROJECT_SOURCE_DIR} show -s --format=%cD HEAD
                  OUTPUT_VARIABLE SLIPSTREAM_DATE_RFC2822 OUTPUT_STRIP_TRAILING_WHITESPACE
                  ERROR_QUIET)
endif()

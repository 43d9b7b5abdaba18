/* test_tmpdir: scratch directories for the cmocka suites.
 *
 * test_tmpdir_make fills `dir` from a mkdtemp template ("/tmp/squall-x-XXXXXX");
 * test_tmpdir_remove deletes a FLAT directory (its files, then itself) -- the data
 * directories of the log and snapshot tests have no subdirectories. Header-only so
 * that any test can include it without a CMake entry. Not thread-safe (tests are not).
 */
#ifndef SQUALL_TEST_TMPDIR_H
#define SQUALL_TEST_TMPDIR_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 0 when `dir` (at least strlen(tmpl) + 1 bytes) names a new directory, else -1. */
static inline int test_tmpdir_make(char *dir, const char *tmpl) {
  strcpy(dir, tmpl);
  return mkdtemp(dir) ? 0 : -1;
}

/* Unlinks every entry of `dir` but "." names, then removes it; rmdir's result. */
static inline int test_tmpdir_remove(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char path[512];
  while (d && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    unlink(path);
  }
  if (d) closedir(d);
  return rmdir(dir);
}

#endif

/* cli_test: end-to-end tests of the programs, run as child processes.
 *
 * The programs are looked up in the build directory named by the
 * RLHF_BUILD_DIR environment variable (set by `make test`), else in the
 * directory holding the running test binary. Sources (the Makefile's program
 * registrations and each program's option table) are read from RLHF_SRC_DIR,
 * default the current directory. Each test makes its own temp directory
 * under $TMPDIR (default /tmp) and removes it. Failures are reported on
 * stderr with the child's command line and output. */
#ifndef RLHF_CLI_TEST_H
#define RLHF_CLI_TEST_H

#include <stdbool.h>

/* Trains a tiny checkpoint with rlhf-sft and exercises rlhf-gen on it
 * (generation, scoring, their agreement, bad flags, bad input, corrupt and
 * missing checkpoints), then checks --help and bad-flag handling of every
 * program registered in the Makefile. Returns the number of failed checks. */
int cli_selftest(bool verbose);

#endif

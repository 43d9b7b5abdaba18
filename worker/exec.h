/* exec.h: the two roles of squall-worker, callable as a library (tests, embedding).
 *
 *   supervisor  exec_super_main: starts E executor processes (this same binary with
 *               --executor-tid t --slot-fd F), restarts any that dies with backoff,
 *               kills one that outlives its call's deadline, writes the error result of
 *               the call that was running (squall.TimeoutError / squall.ExecutorCrashed),
 *               tells schedulers running=false for a dead executor, and forwards
 *               SIGTERM/SIGINT for a clean stop.
 *   executor    exec_proc_main: one executor tid (exec_int.h has the thread picture).
 */
#ifndef EXEC_H
#define EXEC_H

#include "exec_config.h"
#include "sq_log.h"

/* Runs one executor until SIGTERM/SIGINT or a self-depart message. Returns the process
 * exit code: 0 after a signal, EXEC_EXIT_DEPARTED (3) after self-departure, 1 when it
 * could not start (bind failure, Python missing: logged). */
int exec_proc_main(const exec_config_t *cfg, sq_log_t *log);

/* Supervises cfg->executors executors (0 = one per core) until SIGTERM/SIGINT. argv is
 * the supervisor's own command line, handed on to each executor. Returns the exit
 * code (0 on a clean stop, 1 when it could not start). */
int exec_super_main(const exec_config_t *cfg, sq_log_t *log, int argc, char **argv);

/* Splits a comma list into *out (n strings, each malloc'd, empty items skipped).
 * Free with exec_strings_free. 0 or -ENOMEM. */
int exec_strings_split(const char *list, char ***out, size_t *n);
void exec_strings_free(char **v, size_t n);

#endif

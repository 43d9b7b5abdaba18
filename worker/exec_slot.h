/* exec_slot: "what is running now" in each executor, readable by the supervisor.
 *
 * The supervisor makes one shared-memory file (memfd) holding an array of slots, one
 * per executor, before it starts them; each executor inherits the descriptor across
 * exec, maps it and writes its own slot before and after every call. When the
 * supervisor finds an executor dead (crash, os._exit, OOM kill) or past its deadline
 * (which it then kills), the slot tells it whom to send the error to.
 *
 * Concurrency: one writer per slot (its executor), one reader (the supervisor), in
 * different processes. A sequence lock: the writer makes `seq` odd, writes, makes it
 * even; the reader copies and retries while seq was odd or changed. A writer killed
 * mid-write leaves seq odd: the reader then reports "unknown" (exec_slot_read returns
 * SQ_ECORRUPT) rather than looping.
 *
 * Strings longer than their field are cut; a cut destination is marked so that no
 * error goes to a wrong key (`dest_cut`).
 */
#ifndef EXEC_SLOT_H
#define EXEC_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXEC_SLOT_NAME_MAX 256
#define EXEC_SLOT_DEST_MAX 1024

typedef enum {
  EXEC_SLOT_IDLE = 0,
  EXEC_SLOT_CALL = 1, /* one-shot: dest_key = response key */
  EXEC_SLOT_DAG = 2,  /* DAG: dest_addr = response address, else dest_key = output key */
} exec_slot_state_t;

typedef struct {
  uint64_t seq;
  uint32_t state;                   /* exec_slot_state_t */
  uint32_t dest_cut;                /* a destination did not fit: do not report */
  int64_t started_ms;               /* CLOCK_MONOTONIC, comparable across processes */
  int64_t deadline_ms;              /* 0 = none */
  uint64_t calls;                   /* calls started since the executor began */
  char function[EXEC_SLOT_NAME_MAX];
  char dest_key[EXEC_SLOT_DEST_MAX];
  char dest_addr[EXEC_SLOT_DEST_MAX];
} exec_slot_t;

/* What exec_slot_begin records. Strings borrowed; NULL = "". */
typedef struct {
  exec_slot_state_t state;
  const char *function;
  const char *dest_key;
  const char *dest_addr;
  int64_t deadline_ms;
} exec_slot_call_t;

/* Makes a shared array of n zeroed slots: *fd is the memfd (inherited across exec; the
 * caller closes it), *slots its mapping (exec_slot_unmap). 0 or -errno. */
int exec_slot_create(size_t n, int *fd, exec_slot_t **slots);

/* Maps the n-slot array of fd (in an executor). 0, -errno, SQ_EINVAL (file too small). */
int exec_slot_map(int fd, size_t n, exec_slot_t **slots);

/* Unmaps an array from exec_slot_create / exec_slot_map. Accepts NULL. */
void exec_slot_unmap(exec_slot_t *slots, size_t n);

/* Writer side: records the call about to run / that nothing runs. */
void exec_slot_begin(exec_slot_t *s, const exec_slot_call_t *call);
void exec_slot_end(exec_slot_t *s);

/* Reader side: a consistent copy of *s into *out. 0, or SQ_ECORRUPT when the writer
 * stopped mid-write (or kept writing through every retry). */
int exec_slot_read(const exec_slot_t *s, exec_slot_t *out);

/* Zeroes the slot (the supervisor, before starting a replacement executor). */
void exec_slot_clear(exec_slot_t *s);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t exec_slot_now_ms(void);

#endif

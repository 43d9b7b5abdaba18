/* sq_buf: a growable byte buffer with explicit ownership.
 *
 * A zero-initialised sq_buf_t is a valid empty buffer. The buffer owns `data`;
 * sq_buf_free() releases it and leaves an empty buffer. sq_buf_take() hands the
 * bytes to the caller (who then frees them with free()). Growth is geometric, so
 * appends are amortised O(1).
 */
#ifndef SQ_BUF_H
#define SQ_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint8_t *data;
  size_t len;
  size_t cap;
} sq_buf_t;

/* Makes room for at least `extra` more bytes. 0 or -ENOMEM (buffer unchanged). */
int sq_buf_reserve(sq_buf_t *buf, size_t extra);

/* Appends n bytes. 0 or -ENOMEM (buffer unchanged). */
int sq_buf_append(sq_buf_t *buf, const void *src, size_t n);

/* Empties the buffer but keeps its memory for reuse. */
void sq_buf_reset(sq_buf_t *buf);

/* Releases the memory; the buffer is empty and reusable afterwards. Accepts NULL. */
void sq_buf_free(sq_buf_t *buf);

/* Returns the bytes (caller frees) and leaves the buffer empty. *len gets the length. */
uint8_t *sq_buf_take(sq_buf_t *buf, size_t *len);

#endif

/* test_proto_golden: hand-encoded wire bytes pin the field numbers of the protocol.
 *
 * Each test holds one message written out byte by byte from the protobuf wire rules
 * (tag = field << 3 | wire type; wire types 0 varint, 1 fixed64, 2 length-delimited;
 * a map entry is a nested message with key = 1 and value = 2; proto3 packs repeated
 * scalars into one length-delimited field). The bytes were derived by hand from
 * PROTOCOL.md, never produced by protobuf-c, so a renumbered or retyped field in a
 * .proto file makes these tests fail. Each test checks that protobuf-c decodes the
 * bytes into exactly the expected field values, and that packing the decoded message
 * reproduces the same bytes (field order, packing and default omission included).
 *
 * Byte strings are C string literals split after every hex escape (an escape would
 * otherwise swallow following hex digits); GOLDEN() drops the trailing NUL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "anna.pb-c.h"
#include "causal.pb-c.h"
#include "cloudburst.pb-c.h"
#include "internal.pb-c.h"
#include "metadata.pb-c.h"
#include "shared.pb-c.h"

#define GOLDEN(arr) (const uint8_t *)(arr), (sizeof(arr) - 1)

/* Decodes bytes with desc; fails the test on NULL. Caller frees with
 * protobuf_c_message_free_unpacked(). */
static ProtobufCMessage *golden__unpack(const ProtobufCMessageDescriptor *desc,
                                        const uint8_t *bytes, size_t len) {
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, bytes);
  assert_non_null(m);
  assert_ptr_equal(m->descriptor, desc);
  return m;
}

/* Asserts that packing m yields exactly bytes[0..len), then frees m. */
static void golden__assert_repacks_and_free(ProtobufCMessage *m, const uint8_t *bytes,
                                            size_t len) {
  assert_int_equal(protobuf_c_message_get_packed_size(m), len);
  uint8_t *out = malloc(len ? len : 1);
  assert_non_null(out);
  assert_int_equal(protobuf_c_message_pack(m, out), len);
  assert_memory_equal(out, bytes, len);
  free(out);
  protobuf_c_message_free_unpacked(m, NULL);
}

static void golden__assert_bytes(ProtobufCBinaryData b, const char *want, size_t want_len) {
  assert_int_equal(b.len, want_len);
  if (want_len) assert_memory_equal(b.data, want, want_len);
}

/* ---- anna.proto ------------------------------------------------------------------ */

static const char KEY_REQUEST[] =
    "\x08\x02"                  /* 1 type = PUT (varint 2) */
    "\x12\x10"                  /* 2 tuples[0], 16 bytes: KeyTuple */
    "\x0a\x02" "k1"             /*   1 key = "k1" */
    "\x10\x01"                  /*   2 lattice_type = LWW */
    "\x22\x06"                  /*   4 payload, 6 bytes = LWWValue: */
    "\x08\x05"                  /*     1 timestamp = 5 */
    "\x12\x02" "hi"             /*     2 value = "hi" */
    "\x28\x03"                  /*   5 address_cache_size = 3 */
    "\x12\x04"                  /* 2 tuples[1], 4 bytes */
    "\x0a\x02" "k2"             /*   1 key = "k2" */
    "\x1a\x09" "tcp://a:1"      /* 3 response_address */
    "\x22\x02" "r7";            /* 4 request_id */

static void test_key_request_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  KeyRequest *m = (KeyRequest *)golden__unpack(&key_request__descriptor, GOLDEN(KEY_REQUEST));
  assert_int_equal(m->type, REQUEST_TYPE__PUT);
  assert_int_equal(m->n_tuples, 2);
  assert_string_equal(m->tuples[0]->key, "k1");
  assert_int_equal(m->tuples[0]->lattice_type, LATTICE_TYPE__LWW);
  assert_int_equal(m->tuples[0]->error, ANNA_ERROR__NO_ERROR);
  assert_int_equal(m->tuples[0]->address_cache_size, 3);
  assert_false(m->tuples[0]->invalidate);
  LWWValue *lww = lwwvalue__unpack(NULL, m->tuples[0]->payload.len, m->tuples[0]->payload.data);
  assert_non_null(lww);
  assert_int_equal(lww->timestamp, 5);
  golden__assert_bytes(lww->value, "hi", 2);
  lwwvalue__free_unpacked(lww, NULL);
  assert_string_equal(m->tuples[1]->key, "k2");
  assert_int_equal(m->tuples[1]->lattice_type, LATTICE_TYPE__NONE);
  assert_int_equal(m->tuples[1]->payload.len, 0);
  assert_string_equal(m->response_address, "tcp://a:1");
  assert_string_equal(m->request_id, "r7");
  golden__assert_repacks_and_free(&m->base, GOLDEN(KEY_REQUEST));
}

static const char KEY_RESPONSE[] =
    "\x08\x01"                  /* 1 type = GET */
    "\x12\x18"                  /* 2 tuples[0], 24 bytes */
    "\x0a\x01" "k"              /*   1 key */
    "\x10\x02"                  /*   2 lattice_type = SET */
    "\x18\x01"                  /*   3 error = KEY_DNE */
    "\x22\x06"                  /*   4 payload, 6 bytes = SetValue: */
    "\x0a\x01" "a"              /*     1 values[0] */
    "\x0a\x01" "b"              /*     1 values[1] (repeated bytes: never packed) */
    "\x30\x01"                  /*   6 invalidate = true */
    "\xa2\x06\x04" "gone"       /*   100 error_message: tag 802 = varint a2 06 */
    "\x1a\x02" "r7"             /* 3 response_id */
    "\x20\x03"                  /* 4 error = TIMEOUT */
    "\xa2\x06\x04" "late";      /* 100 error_message (squall extension) */

static void test_key_response_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  KeyResponse *m =
      (KeyResponse *)golden__unpack(&key_response__descriptor, GOLDEN(KEY_RESPONSE));
  assert_int_equal(m->type, REQUEST_TYPE__GET);
  assert_int_equal(m->n_tuples, 1);
  KeyTuple *t = m->tuples[0];
  assert_string_equal(t->key, "k");
  assert_int_equal(t->lattice_type, LATTICE_TYPE__SET);
  assert_int_equal(t->error, ANNA_ERROR__KEY_DNE);
  assert_true(t->invalidate);
  assert_int_equal(t->address_cache_size, 0);
  assert_string_equal(t->error_message, "gone");
  SetValue *set = set_value__unpack(NULL, t->payload.len, t->payload.data);
  assert_non_null(set);
  assert_int_equal(set->n_values, 2);
  golden__assert_bytes(set->values[0], "a", 1);
  golden__assert_bytes(set->values[1], "b", 1);
  set_value__free_unpacked(set, NULL);
  assert_string_equal(m->response_id, "r7");
  assert_int_equal(m->error, ANNA_ERROR__TIMEOUT);
  assert_string_equal(m->error_message, "late");
  golden__assert_repacks_and_free(&m->base, GOLDEN(KEY_RESPONSE));
}

static const char KEY_ADDRESS_REQUEST[] =
    "\x0a\x0c" "tcp://c:6850"   /* 1 response_address */
    "\x12\x01" "a"              /* 2 keys[0] */
    "\x12\x02" "bb"             /* 2 keys[1] */
    "\x1a\x01" "q";             /* 3 request_id */

static void test_key_address_request_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  KeyAddressRequest *m = (KeyAddressRequest *)golden__unpack(
      &key_address_request__descriptor, GOLDEN(KEY_ADDRESS_REQUEST));
  assert_string_equal(m->response_address, "tcp://c:6850");
  assert_int_equal(m->n_keys, 2);
  assert_string_equal(m->keys[0], "a");
  assert_string_equal(m->keys[1], "bb");
  assert_string_equal(m->request_id, "q");
  golden__assert_repacks_and_free(&m->base, GOLDEN(KEY_ADDRESS_REQUEST));
}

static const char KEY_ADDRESS_RESPONSE[] =
    "\x0a\x1f"                  /* 1 addresses[0], 31 bytes: KeyAddressResponse.KeyAddress */
    "\x0a\x01" "a"              /*   1 key */
    "\x12\x0c" "tcp://s:6200"   /*   2 ips[0] */
    "\x12\x0c" "tcp://t:6201"   /*   2 ips[1] */
    "\x0a\x03"                  /* 1 addresses[1], 3 bytes */
    "\x0a\x01" "b"              /*   1 key, no ips */
    "\x10\x05"                  /* 2 error = NO_SERVERS */
    "\x1a\x01" "q";             /* 3 response_id */

static void test_key_address_response_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  KeyAddressResponse *m = (KeyAddressResponse *)golden__unpack(
      &key_address_response__descriptor, GOLDEN(KEY_ADDRESS_RESPONSE));
  assert_int_equal(m->n_addresses, 2);
  KeyAddressResponse__KeyAddress *a = m->addresses[0];
  assert_ptr_equal(a->base.descriptor, &key_address_response__key_address__descriptor);
  assert_string_equal(a->key, "a");
  assert_int_equal(a->n_ips, 2);
  assert_string_equal(a->ips[0], "tcp://s:6200");
  assert_string_equal(a->ips[1], "tcp://t:6201");
  assert_string_equal(m->addresses[1]->key, "b");
  assert_int_equal(m->addresses[1]->n_ips, 0);
  assert_int_equal(m->error, ANNA_ERROR__NO_SERVERS);
  assert_string_equal(m->response_id, "q");
  golden__assert_repacks_and_free(&m->base, GOLDEN(KEY_ADDRESS_RESPONSE));
}

static const char SINGLE_KEY_CAUSAL_VALUE[] =
    "\x0a\x05"                  /* 1 vector_clock entry, 5 bytes */
    "\x0a\x01" "a"              /*   1 key = "a" */
    "\x10\x01"                  /*   2 value = 1 */
    "\x0a\x05"                  /* 1 vector_clock entry */
    "\x0a\x01" "b"              /*   1 key = "b" */
    "\x10\x02"                  /*   2 value = 2 */
    "\x12\x01" "x";             /* 2 values[0] */

static void test_single_key_causal_value_golden_bytes_decode_and_reencode_exactly(
    void **state) {
  (void)state;
  SingleKeyCausalValue *m = (SingleKeyCausalValue *)golden__unpack(
      &single_key_causal_value__descriptor, GOLDEN(SINGLE_KEY_CAUSAL_VALUE));
  assert_int_equal(m->n_vector_clock, 2);
  assert_string_equal(m->vector_clock[0]->key, "a");
  assert_int_equal(m->vector_clock[0]->value, 1);
  assert_string_equal(m->vector_clock[1]->key, "b");
  assert_int_equal(m->vector_clock[1]->value, 2);
  assert_int_equal(m->n_values, 1);
  golden__assert_bytes(m->values[0], "x", 1);
  assert_int_equal(m->n_sibling_clocks, 0);
  golden__assert_repacks_and_free(&m->base, GOLDEN(SINGLE_KEY_CAUSAL_VALUE));
}

static const char PRIORITY_VALUE[] =
    "\x09\x00\x00\x00\x00\x00\x00\xf8\x3f" /* 1 priority = 1.5 (fixed64, little endian) */
    "\x12\x01" "p";                        /* 2 value */

static void test_priority_value_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  PriorityValue *m =
      (PriorityValue *)golden__unpack(&priority_value__descriptor, GOLDEN(PRIORITY_VALUE));
  assert_true(m->priority == 1.5);
  golden__assert_bytes(m->value, "p", 1);
  golden__assert_repacks_and_free(&m->base, GOLDEN(PRIORITY_VALUE));
}

/* ---- cloudburst.proto ------------------------------------------------------------ */

static const char VALUE[] =
    "\x0a\x05" "hello"          /* 1 body */
    "\x10\x02";                 /* 2 type = STRING */

static void test_value_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  Value *m = (Value *)golden__unpack(&value__descriptor, GOLDEN(VALUE));
  golden__assert_bytes(m->body, "hello", 5);
  assert_int_equal(m->type, SERIALIZER_TYPE__STRING);
  golden__assert_repacks_and_free(&m->base, GOLDEN(VALUE));
}

/* squall's extension: a direct response carries the id the client matches it by. */
static const char VALUE_WITH_RESPONSE_ID[] =
    "\x0a\x01" "7"              /* 1 body */
    "\xa2\x06\x03" "k.1";      /* 100 response_id (tag 802 = a2 06), 3 bytes */

static void test_value_response_id_extension_golden_bytes_decode_and_reencode_exactly(
    void **state) {
  (void)state;
  Value *m = (Value *)golden__unpack(&value__descriptor, GOLDEN(VALUE_WITH_RESPONSE_ID));
  golden__assert_bytes(m->body, "7", 1);
  assert_string_equal(m->response_id, "k.1");
  assert_int_equal(m->base.n_unknown_fields, 0);
  golden__assert_repacks_and_free(&m->base, GOLDEN(VALUE_WITH_RESPONSE_ID));
}

static const char FUNCTION_CALL[] =
    "\x0a\x02" "sq"             /* 1 name */
    "\x10\xac\x02"              /* 2 request_id = 300 (varint ac 02) */
    "\x1a\x0d"                  /* 3 arguments, 13 bytes: Arguments */
    "\x0a\x04"                  /*   1 values[0], 4 bytes: Value */
    "\x0a\x02\x01\x02"          /*     1 body = 01 02; type DEFAULT omitted */
    "\x0a\x05"                  /*   1 values[1], 5 bytes */
    "\x0a\x01" "x"              /*     1 body = "x" */
    "\x10\x02"                  /*     2 type = STRING */
    "\x22\x02" "rk"             /* 4 response_key */
    "\x28\x02";                 /* 5 consistency = MULTI */

static void test_function_call_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  FunctionCall *m =
      (FunctionCall *)golden__unpack(&function_call__descriptor, GOLDEN(FUNCTION_CALL));
  assert_string_equal(m->name, "sq");
  assert_int_equal(m->request_id, 300);
  assert_non_null(m->arguments);
  assert_int_equal(m->arguments->n_values, 2);
  golden__assert_bytes(m->arguments->values[0]->body, "\x01\x02", 2);
  assert_int_equal(m->arguments->values[0]->type, SERIALIZER_TYPE__DEFAULT);
  golden__assert_bytes(m->arguments->values[1]->body, "x", 1);
  assert_int_equal(m->arguments->values[1]->type, SERIALIZER_TYPE__STRING);
  assert_string_equal(m->response_key, "rk");
  assert_int_equal(m->consistency, CONSISTENCY_TYPE__MULTI);
  golden__assert_repacks_and_free(&m->base, GOLDEN(FUNCTION_CALL));
}

/* squall's extensions of FunctionCall: a time limit and a direct-response address. */
static const char FUNCTION_CALL_EXT[] =
    "\x0a\x01" "f"              /* 1 name */
    "\x22\x01" "k"              /* 4 response_key */
    "\xa0\x06\xe8\x07"          /* 100 timeout_ms = 1000 (tag 800 = a0 06) */
    "\xaa\x06\x0d" "tcp://h:12345"; /* 101 response_address (tag 810), 13 bytes */

static void test_function_call_extensions_golden_bytes_decode_and_reencode_exactly(
    void **state) {
  (void)state;
  FunctionCall *m =
      (FunctionCall *)golden__unpack(&function_call__descriptor, GOLDEN(FUNCTION_CALL_EXT));
  assert_string_equal(m->response_key, "k");
  assert_int_equal(m->timeout_ms, 1000);
  assert_string_equal(m->response_address, "tcp://h:12345");
  assert_int_equal(m->base.n_unknown_fields, 0);
  golden__assert_repacks_and_free(&m->base, GOLDEN(FUNCTION_CALL_EXT));
}

static const char DAG[] =
    "\x0a\x01" "d"              /* 1 name */
    "\x12\x0c"                  /* 2 functions[0], 12 bytes: Dag.FunctionReference */
    "\x0a\x01" "f"              /*   1 name */
    "\x10\x01"                  /*   2 type = MULTIEXEC */
    "\x1a\x01\x00"              /*   3 invalid_results[0] = 00 */
    "\x20\x01"                  /*   4 gpu = true */
    "\x28\x01"                  /*   5 batching = true */
    "\x12\x03"                  /* 2 functions[1], 3 bytes */
    "\x0a\x01" "g"              /*   1 name; REGULAR omitted */
    "\x1a\x06"                  /* 3 connections[0], 6 bytes: Dag.Link */
    "\x0a\x01" "f"              /*   1 source */
    "\x12\x01" "g"              /*   2 sink */
    "\x22\x01" "f"              /* 4 colocated[0] */
    "\x22\x01" "g";             /* 4 colocated[1] */

static void test_dag_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  Dag *m = (Dag *)golden__unpack(&dag__descriptor, GOLDEN(DAG));
  assert_string_equal(m->name, "d");
  assert_int_equal(m->n_functions, 2);
  Dag__FunctionReference *f = m->functions[0];
  assert_ptr_equal(f->base.descriptor, &dag__function_reference__descriptor);
  assert_string_equal(f->name, "f");
  assert_int_equal(f->type, EXECUTION_TYPE__MULTIEXEC);
  assert_int_equal(f->n_invalid_results, 1);
  golden__assert_bytes(f->invalid_results[0], "\x00", 1);
  assert_true(f->gpu);
  assert_true(f->batching);
  assert_string_equal(m->functions[1]->name, "g");
  assert_int_equal(m->functions[1]->type, EXECUTION_TYPE__REGULAR);
  assert_false(m->functions[1]->gpu);
  assert_int_equal(m->n_connections, 1);
  assert_ptr_equal(m->connections[0]->base.descriptor, &dag__link__descriptor);
  assert_string_equal(m->connections[0]->source, "f");
  assert_string_equal(m->connections[0]->sink, "g");
  assert_int_equal(m->n_colocated, 2);
  assert_string_equal(m->colocated[0], "f");
  assert_string_equal(m->colocated[1], "g");
  golden__assert_repacks_and_free(&m->base, GOLDEN(DAG));
}

static const char DAG_CALL[] =
    "\x0a\x01" "d"              /* 1 name */
    "\x12\x0a"                  /* 2 function_args entry, 10 bytes */
    "\x0a\x01" "f"              /*   1 key = "f" */
    "\x12\x05"                  /*   2 value, 5 bytes: Arguments */
    "\x0a\x03"                  /*     1 values[0], 3 bytes: Value */
    "\x0a\x01" "1"              /*       1 body = "1" */
    "\x1a\x0c" "tcp://c:9000"   /* 3 response_address */
    "\x20\x01"                  /* 4 consistency = SINGLE */
    "\x2a\x01" "o"              /* 5 output_key */
    "\x32\x01" "c"              /* 6 client_id */
    "\x3a\x10"                  /* 7 continuation, 16 bytes: Continuation */
    "\x0a\x01" "n"              /*   1 name */
    "\x12\x01" "i"              /*   2 id */
    "\x1a\x03\x0a\x01" "z"      /*   3 result = a serialized Value{body "z"} */
    "\x22\x03"                  /*   4 call, 3 bytes: DagCall */
    "\x0a\x01" "n";             /*     1 name */

static void test_dag_call_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  DagCall *m = (DagCall *)golden__unpack(&dag_call__descriptor, GOLDEN(DAG_CALL));
  assert_string_equal(m->name, "d");
  assert_int_equal(m->n_function_args, 1);
  assert_string_equal(m->function_args[0]->key, "f");
  Arguments *args = m->function_args[0]->value;
  assert_non_null(args);
  assert_int_equal(args->n_values, 1);
  golden__assert_bytes(args->values[0]->body, "1", 1);
  assert_string_equal(m->response_address, "tcp://c:9000");
  assert_int_equal(m->consistency, CONSISTENCY_TYPE__SINGLE);
  assert_string_equal(m->output_key, "o");
  assert_string_equal(m->client_id, "c");
  Continuation *c = m->continuation;
  assert_non_null(c);
  assert_string_equal(c->name, "n");
  assert_string_equal(c->id, "i");
  golden__assert_bytes(c->result, "\x0a\x01z", 3);
  assert_non_null(c->call);
  assert_string_equal(c->call->name, "n");
  assert_null(c->call->continuation);
  golden__assert_repacks_and_free(&m->base, GOLDEN(DAG_CALL));
}

static const char DAG_SCHEDULE[] =
    "\x0a\x02" "s1"             /* 1 id */
    "\x12\x08"                  /* 2 dag, 8 bytes: Dag */
    "\x0a\x01" "d"              /*   1 name */
    "\x12\x03\x0a\x01" "f"      /*   2 functions[0] = {name "f"} */
    "\x1a\x01" "f"              /* 3 target_function */
    "\x20\x02"                  /* 4 consistency = MULTI */
    "\x2a\x05" "BEGIN"          /* 5 triggers[0] */
    "\x32\x0e"                  /* 6 locations entry, 14 bytes */
    "\x0a\x01" "f"              /*   1 key */
    "\x12\x09" "1.2.3.4:0"      /*   2 value */
    "\x3a\x0a"                  /* 7 arguments entry, 10 bytes */
    "\x0a\x01" "f"              /*   1 key */
    "\x12\x05\x0a\x03\x0a\x01" "a" /* 2 value = Arguments{values [Value{body "a"}]} */
    "\x42\x01" "r"              /* 8 response_address */
    "\x4a\x01" "o"              /* 9 output_key */
    "\x52\x01" "c"              /* 10 client_id */
    "\x59\x00\x00\x00\x00\x00\x00\x04\x40" /* 11 start_time = 2.5 (tag 89 = 0x59) */
    "\x62\x04"                  /* 12 continuation, 4 bytes (tag 98 = 0x62) */
    "\x12\x02" "s1";            /*   2 id */

static void test_dag_schedule_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  DagSchedule *m =
      (DagSchedule *)golden__unpack(&dag_schedule__descriptor, GOLDEN(DAG_SCHEDULE));
  assert_string_equal(m->id, "s1");
  assert_non_null(m->dag);
  assert_string_equal(m->dag->name, "d");
  assert_int_equal(m->dag->n_functions, 1);
  assert_string_equal(m->dag->functions[0]->name, "f");
  assert_string_equal(m->target_function, "f");
  assert_int_equal(m->consistency, CONSISTENCY_TYPE__MULTI);
  assert_int_equal(m->n_triggers, 1);
  assert_string_equal(m->triggers[0], "BEGIN");
  assert_int_equal(m->n_locations, 1);
  assert_string_equal(m->locations[0]->key, "f");
  assert_string_equal(m->locations[0]->value, "1.2.3.4:0");
  assert_int_equal(m->n_arguments, 1);
  assert_string_equal(m->arguments[0]->key, "f");
  assert_int_equal(m->arguments[0]->value->n_values, 1);
  golden__assert_bytes(m->arguments[0]->value->values[0]->body, "a", 1);
  assert_string_equal(m->response_address, "r");
  assert_string_equal(m->output_key, "o");
  assert_string_equal(m->client_id, "c");
  assert_true(m->start_time == 2.5);
  assert_non_null(m->continuation);
  assert_string_equal(m->continuation->id, "s1");
  assert_string_equal(m->continuation->name, "");
  golden__assert_repacks_and_free(&m->base, GOLDEN(DAG_SCHEDULE));
}

static const char DAG_TRIGGER[] =
    "\x0a\x02" "s1"             /* 1 id */
    "\x12\x01" "g"              /* 2 target_function */
    "\x1a\x01" "f"              /* 3 source */
    "\x22\x07"                  /* 4 arguments, 7 bytes */
    "\x0a\x05"                  /*   1 values[0], 5 bytes */
    "\x0a\x01" "v"              /*     1 body */
    "\x10\x01"                  /*     2 type = NUMPY */
    "\x2a\x1c"                  /* 5 version_locations entry, 28 bytes */
    "\x0a\x0c" "tcp://c:7250"   /*   1 key */
    "\x12\x0c"                  /*   2 value, 12 bytes: KeyVersionList */
    "\x0a\x0a"                  /*     1 keys[0], 10 bytes: KeyVersion */
    "\x0a\x01" "k"              /*       1 key */
    "\x12\x05"                  /*       2 vector_clock entry, 5 bytes */
    "\x0a\x01" "n"              /*         1 key */
    "\x10\x03"                  /*         2 value = 3 */
    "\x32\x0b"                  /* 6 dependencies[0], 11 bytes: KeyVersion */
    "\x0a\x02" "k2"             /*   1 key */
    "\x12\x05"                  /*   2 vector_clock entry */
    "\x0a\x01" "n"              /*     1 key */
    "\x10\x01";                 /*     2 value = 1 */

static void test_dag_trigger_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  DagTrigger *m =
      (DagTrigger *)golden__unpack(&dag_trigger__descriptor, GOLDEN(DAG_TRIGGER));
  assert_string_equal(m->id, "s1");
  assert_string_equal(m->target_function, "g");
  assert_string_equal(m->source, "f");
  assert_int_equal(m->arguments->n_values, 1);
  golden__assert_bytes(m->arguments->values[0]->body, "v", 1);
  assert_int_equal(m->arguments->values[0]->type, SERIALIZER_TYPE__NUMPY);
  assert_int_equal(m->n_version_locations, 1);
  assert_string_equal(m->version_locations[0]->key, "tcp://c:7250");
  KeyVersionList *kvl = m->version_locations[0]->value;
  assert_int_equal(kvl->n_keys, 1);
  assert_string_equal(kvl->keys[0]->key, "k");
  assert_int_equal(kvl->keys[0]->n_vector_clock, 1);
  assert_string_equal(kvl->keys[0]->vector_clock[0]->key, "n");
  assert_int_equal(kvl->keys[0]->vector_clock[0]->value, 3);
  assert_int_equal(m->n_dependencies, 1);
  assert_string_equal(m->dependencies[0]->key, "k2");
  assert_int_equal(m->dependencies[0]->vector_clock[0]->value, 1);
  golden__assert_repacks_and_free(&m->base, GOLDEN(DAG_TRIGGER));
}

static const char GENERIC_RESPONSE[] =
    "\x08\x01"                  /* 1 success = true */
    "\x12\x03" "key"            /* 2 response_id */
    "\x18\x06";                 /* 3 error = DAG_ALREADY_EXISTS */

static void test_generic_response_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  GenericResponse *m = (GenericResponse *)golden__unpack(&generic_response__descriptor,
                                                         GOLDEN(GENERIC_RESPONSE));
  assert_true(m->success);
  assert_string_equal(m->response_id, "key");
  assert_int_equal(m->error, CLOUDBURST_ERROR__DAG_ALREADY_EXISTS);
  golden__assert_repacks_and_free(&m->base, GOLDEN(GENERIC_RESPONSE));
}

/* ---- causal.proto, internal.proto, metadata.proto --------------------------------- */

static const char CAUSAL_REQUEST[] =
    "\x08\x02"                  /* 1 consistency = MULTI */
    "\x12\x02" "cl"             /* 2 id */
    "\x1a\x08"                  /* 3 tuples[0], 8 bytes: CausalTuple */
    "\x0a\x01" "k"              /*   1 key */
    "\x12\x01\x01"              /*   2 payload = 01 */
    "\x18\x01"                  /*   3 error = KEY_DNE */
    "\x22\x01" "x"              /* 4 future_read_set[0] */
    "\x2a\x0a"                  /* 5 key_version_locations entry, 10 bytes */
    "\x0a\x01" "a"              /*   1 key */
    "\x12\x05"                  /*   2 value: KeyVersionList */
    "\x0a\x03\x0a\x01" "k"      /*     1 keys[0] = KeyVersion{key "k"} */
    "\x32\x07" "ipc://r";       /* 6 response_address */

static void test_causal_request_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  CausalRequest *m =
      (CausalRequest *)golden__unpack(&causal_request__descriptor, GOLDEN(CAUSAL_REQUEST));
  assert_int_equal(m->consistency, CONSISTENCY_TYPE__MULTI);
  assert_string_equal(m->id, "cl");
  assert_int_equal(m->n_tuples, 1);
  assert_string_equal(m->tuples[0]->key, "k");
  golden__assert_bytes(m->tuples[0]->payload, "\x01", 1);
  assert_int_equal(m->tuples[0]->error, ANNA_ERROR__KEY_DNE);
  assert_int_equal(m->n_future_read_set, 1);
  assert_string_equal(m->future_read_set[0], "x");
  assert_int_equal(m->n_key_version_locations, 1);
  assert_string_equal(m->key_version_locations[0]->key, "a");
  assert_string_equal(m->key_version_locations[0]->value->keys[0]->key, "k");
  assert_string_equal(m->response_address, "ipc://r");
  golden__assert_repacks_and_free(&m->base, GOLDEN(CAUSAL_REQUEST));
}

static const char THREAD_STATUS[] =
    "\x0a\x08" "10.0.0.1"       /* 1 ip */
    "\x10\x02"                  /* 2 tid */
    "\x1a\x01" "f"              /* 3 functions[0] */
    "\x1a\x01" "g"              /* 3 functions[1] */
    "\x21\x00\x00\x00\x00\x00\x00\xd0\x3f" /* 4 utilization = 0.25 (fixed64) */
    "\x28\x01"                  /* 5 running = true */
    "\x30\x01";                 /* 6 type = GPU */

static void test_thread_status_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  ThreadStatus *m =
      (ThreadStatus *)golden__unpack(&thread_status__descriptor, GOLDEN(THREAD_STATUS));
  assert_string_equal(m->ip, "10.0.0.1");
  assert_int_equal(m->tid, 2);
  assert_int_equal(m->n_functions, 2);
  assert_string_equal(m->functions[0], "f");
  assert_string_equal(m->functions[1], "g");
  assert_true(m->utilization == 0.25);
  assert_true(m->running);
  assert_int_equal(m->type, EXECUTOR_TYPE__GPU);
  golden__assert_repacks_and_free(&m->base, GOLDEN(THREAD_STATUS));
}

static const char PIN_FUNCTION[] =
    "\x0a\x01" "f"              /* 1 name */
    "\x12\x08" "10.0.0.9"       /* 2 response_address (a bare IP) */
    "\x18\x01";                 /* 3 batching = true */

static void test_pin_function_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  PinFunction *m =
      (PinFunction *)golden__unpack(&pin_function__descriptor, GOLDEN(PIN_FUNCTION));
  assert_string_equal(m->name, "f");
  assert_string_equal(m->response_address, "10.0.0.9");
  assert_true(m->batching);
  golden__assert_repacks_and_free(&m->base, GOLDEN(PIN_FUNCTION));
}

/* proto3 packs repeated doubles: one length-delimited field holding the fixed64s. */
static const char EXECUTOR_STATISTICS[] =
    "\x0a\x17"                  /* 1 functions[0], 23 bytes: FunctionStatistics */
    "\x0a\x01" "f"              /*   1 name */
    "\x10\x02"                  /*   2 call_count = 2 */
    "\x1a\x10"                  /*   3 runtime, packed, 16 bytes: */
    "\x00\x00\x00\x00\x00\x00\xf0\x3f" /* 1.0 */
    "\x00\x00\x00\x00\x00\x00\xe0\x3f"; /* 0.5 */

/* The same message with runtime unpacked (one fixed64 field per element, tag 0x19);
 * a proto3 parser must accept both forms. */
static const char EXECUTOR_STATISTICS_UNPACKED[] =
    "\x0a\x17"                  /* 1 functions[0], 23 bytes */
    "\x0a\x01" "f"              /*   1 name */
    "\x10\x02"                  /*   2 call_count */
    "\x19\x00\x00\x00\x00\x00\x00\xf0\x3f" /* 3 runtime[0] = 1.0 */
    "\x19\x00\x00\x00\x00\x00\x00\xe0\x3f"; /* 3 runtime[1] = 0.5 */

static void test_executor_statistics_packs_repeated_doubles_and_accepts_unpacked(
    void **state) {
  (void)state;
  ExecutorStatistics *m = (ExecutorStatistics *)golden__unpack(
      &executor_statistics__descriptor, GOLDEN(EXECUTOR_STATISTICS));
  assert_int_equal(m->n_functions, 1);
  ExecutorStatistics__FunctionStatistics *f = m->functions[0];
  assert_string_equal(f->name, "f");
  assert_int_equal(f->call_count, 2);
  assert_int_equal(f->n_runtime, 2);
  assert_true(f->runtime[0] == 1.0 && f->runtime[1] == 0.5);
  golden__assert_repacks_and_free(&m->base, GOLDEN(EXECUTOR_STATISTICS));

  /* Unpacked input decodes to the same values and re-encodes in packed form. */
  m = (ExecutorStatistics *)golden__unpack(&executor_statistics__descriptor,
                                           GOLDEN(EXECUTOR_STATISTICS_UNPACKED));
  f = m->functions[0];
  assert_int_equal(f->n_runtime, 2);
  assert_true(f->runtime[0] == 1.0 && f->runtime[1] == 0.5);
  golden__assert_repacks_and_free(&m->base, GOLDEN(EXECUTOR_STATISTICS));
}

static const char REPLICATION_FACTOR_UPDATE[] =
    "\x0a\x0f"                  /* 1 updates[0], 15 bytes: ReplicationFactor */
    "\x0a\x01" "k"              /*   1 key */
    "\x12\x04\x08\x01\x10\x03"  /*   2 global[0] = {tier MEMORY, value 3} */
    "\x1a\x04\x08\x02\x10\x01"; /*   3 local[0] = {tier DISK, value 1} */

static void test_replication_factor_update_golden_bytes_decode_and_reencode_exactly(
    void **state) {
  (void)state;
  ReplicationFactorUpdate *m = (ReplicationFactorUpdate *)golden__unpack(
      &replication_factor_update__descriptor, GOLDEN(REPLICATION_FACTOR_UPDATE));
  assert_int_equal(m->n_updates, 1);
  ReplicationFactor *rf = m->updates[0];
  assert_string_equal(rf->key, "k");
  assert_int_equal(rf->n_global, 1);
  assert_int_equal(rf->global[0]->tier, TIER__MEMORY);
  assert_int_equal(rf->global[0]->value, 3);
  assert_int_equal(rf->n_local, 1);
  assert_int_equal(rf->local[0]->tier, TIER__DISK);
  assert_int_equal(rf->local[0]->value, 1);
  golden__assert_repacks_and_free(&m->base, GOLDEN(REPLICATION_FACTOR_UPDATE));
}

static const char CLUSTER_MEMBERSHIP[] =
    "\x0a\x0a"                  /* 1 tiers[0], 10 bytes: TierMembership */
    "\x08\x01"                  /*   1 tier_id = MEMORY */
    "\x12\x06"                  /*   2 servers[0], 6 bytes: Server */
    "\x0a\x01" "p"              /*     1 public_ip */
    "\x12\x01" "q";             /*     2 private_ip */

static void test_cluster_membership_golden_bytes_decode_and_reencode_exactly(void **state) {
  (void)state;
  ClusterMembership *m = (ClusterMembership *)golden__unpack(
      &cluster_membership__descriptor, GOLDEN(CLUSTER_MEMBERSHIP));
  assert_int_equal(m->n_tiers, 1);
  assert_int_equal(m->tiers[0]->tier_id, TIER__MEMORY);
  assert_int_equal(m->tiers[0]->n_servers, 1);
  assert_string_equal(m->tiers[0]->servers[0]->public_ip, "p");
  assert_string_equal(m->tiers[0]->servers[0]->private_ip, "q");
  golden__assert_repacks_and_free(&m->base, GOLDEN(CLUSTER_MEMBERSHIP));
}

/* A field number this build does not know is kept and re-emitted, so a squall
 * process relaying a newer peer's message does not drop the newer fields. */
static const char VALUE_WITH_UNKNOWN_FIELD[] =
    "\x0a\x01" "b"              /* 1 body */
    "\xb8\x3e\x07";             /* 999 (varint, tag 7992 = b8 3e) = 7: unknown here */

static void test_unknown_fields_survive_a_decode_encode_round_trip(void **state) {
  (void)state;
  Value *m = (Value *)golden__unpack(&value__descriptor, GOLDEN(VALUE_WITH_UNKNOWN_FIELD));
  golden__assert_bytes(m->body, "b", 1);
  assert_int_equal(m->type, SERIALIZER_TYPE__DEFAULT);
  assert_int_equal(m->base.n_unknown_fields, 1);
  assert_int_equal(m->base.unknown_fields[0].tag, 999);
  golden__assert_repacks_and_free(&m->base, GOLDEN(VALUE_WITH_UNKNOWN_FIELD));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_key_request_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_key_response_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_key_address_request_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_key_address_response_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_single_key_causal_value_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_priority_value_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_value_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_value_response_id_extension_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_function_call_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_function_call_extensions_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_dag_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_dag_call_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_dag_schedule_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_dag_trigger_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_generic_response_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_causal_request_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_thread_status_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_pin_function_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_executor_statistics_packs_repeated_doubles_and_accepts_unpacked),
      cmocka_unit_test(
          test_replication_factor_update_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_cluster_membership_golden_bytes_decode_and_reencode_exactly),
      cmocka_unit_test(test_unknown_fields_survive_a_decode_encode_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

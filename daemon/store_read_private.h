/* What store_read.c and store_series.c share: the reader and two helpers. */
#ifndef DNNFAULT_STORE_READ_PRIVATE_H
#define DNNFAULT_STORE_READ_PRIVATE_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>
#include <sqlite3.h>

struct store_reader {
	sqlite3 *db;
	size_t max_samples;	/* 0: no bound */
};

/* Sets `err` from the connection's last error; returns ERR_INTERNAL. */
int store_read__fail(sqlite3 *db, char *err, size_t len);

/* Unpacks a BLOB column as message `d`; NULL when absent or invalid. */
void *store_read__unpack(const ProtobufCMessageDescriptor *d, sqlite3_stmt *st, int col);

#endif

/* The SQLite migrations, embedded at build time from schema/NNNN_*.sql.
 * Migration i (0-based) brings PRAGMA user_version from i to i + 1. */
#ifndef DNNFAULT_SCHEMA_H
#define DNNFAULT_SCHEMA_H

extern const char *const schema_migrations[];
extern const int schema_version;

#endif

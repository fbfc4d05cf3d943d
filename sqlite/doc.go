// Package sqlite is the embedded, durable [moitessier.Store]: one SQLite file
// in WAL mode, through the pure-Go driver modernc.org/sqlite, so no cgo.
//
// # One process
//
// A database belongs to one process at a time. [Open] takes an exclusive
// advisory lock on a file next to the database (its path plus ".lock") and
// fails with an error wrapping [ErrLocked] while another Store, in this
// process or another, holds it; [Store.Close] releases it. Several processes
// sharing one database is what the Postgres store is for.
//
// Because it is alone with its file, a Store keeps every listener (with its
// Head) in memory, loaded at Open and updated by each write it commits, so
// [Store.Match] and [Store.Listener] cost no query, and [Store.Read] of a
// listener with nothing new returns without one.
//
// # Durability and speed
//
// All writes go through one connection, one transaction per call; reads use
// a separate pool of read-only connections that WAL lets run beside the
// writer. The database runs with synchronous=NORMAL: a commit survives a
// crash of the process, and the latest commits may be lost if the machine
// loses power before the next checkpoint.
//
// # Schema
//
// The schema is versioned in the package (migrations/NNNN_name.sql) and
// recorded in the table schema_migrations. Open applies the migrations the
// file lacks, in order, in one transaction, and refuses a file written by a
// newer version of the package.
//
// Times are stored as unix nanoseconds, so times before 1678 or after 2262
// are clamped to that range (the zero time.Time is kept as zero).
package sqlite

// Package sqlite is the embedded, durable [moitessier.Store]: one SQLite file
// in WAL mode, through the pure-Go driver modernc.org/sqlite, so no cgo.
//
// # One process
//
// A database belongs to one process at a time. [Open] takes an exclusive
// advisory lock on a file next to the database (its path plus ".lock") and
// fails with an error wrapping [ErrLocked] while another Store, in this
// process or another, holds it; [Store.Close] releases it. Several processes
// sharing one database is what the Postgres store is for. On Unix systems
// the Store's connections also hold SQLite's own lock on the database as one
// exclusive lock for the process, with the write-ahead log's index in memory
// rather than in a -shm file, so that a transaction makes no locking system
// call: no other process, not even a read-only sqlite3 shell, can read the
// database while the Store is open.
//
// Because it is alone with its file, a Store keeps every listener (with its
// Head) in memory, loaded at Open and updated by each write it commits, so
// [Store.Match] and [Store.Listener] cost no query, and [Store.Read] of a
// listener with nothing new returns without one.
//
// # Retention
//
// [Store.Sweep] removes a listener's messages older than MaxAge from the
// oldest on, up to the first that is not, so, like the memory store, it
// takes a listener's messages to be created in sequence order (as a hub's
// dispatches are, but for clock steps and concurrent dispatches a few
// microseconds apart). Its Messages count includes the messages of the
// listeners it deletes.
//
// # Durability and speed
//
// All writes go through one connection; reads use a separate pool of
// read-only connections that WAL lets run beside the writer. Concurrent
// writes queue for the writer, and the call that gets it runs every queued
// write in one transaction, each inside a savepoint, so
// that concurrent calls share one commit while each stays all-or-nothing (a
// write that fails is rolled back to its savepoint and the others commit).
// A lone write, such as each Append of a single dispatcher, is a transaction
// of its own. Sweep works in transactions of its own of at most BatchSize
// rows.
//
// The database runs with synchronous=NORMAL: a commit survives a crash of
// the process, and the latest commits may be lost if the machine loses power
// before the next checkpoint of the write-ahead log. A commit writes each
// page it changed to the log (a join changes about six: the listener, its
// scope, its subscriber and their indexes) and fsyncs nothing. Copying the
// log into the database (a checkpoint, with two fsyncs) is done in the
// background, on a connection of its own, at most every 50 ms while
// something is written and never while nothing is, rather than by the
// commit that passes SQLite's limit of 1 000 pages, which made every write
// call waiting on that commit wait for the copy and the fsyncs too. The
// writer still checkpoints itself past 10 000 pages (about 40 MB), should
// the background checkpoints fall behind (a reader holding an old snapshot
// keeps them from finishing).
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

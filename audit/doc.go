// Package audit writes and verifies warren's audit log: one JSON Record per line, hash-chained so that an edited,
// deleted, inserted or reordered line is detected.
//
// Each line carries Seq (1 for the first record of a file, then +1 per record) and PrevHash, the hex SHA-256 of the
// previous line's exact bytes without its newline; the first record of a file has a PrevHash of 64 zeros. Verify
// walks a file and reports the first link that does not hold as a *BrokenLinkError.
//
// The chain has no key: it proves that a file is internally consistent, not who wrote it. Someone able to rewrite
// the whole file can recompute every hash, and removing the last lines leaves a valid shorter chain. Ship the log
// (or its last PrevHash) elsewhere to guard against that.
//
// A Log is the only writer of its file: two Logs (or two processes) appending to one file fork the chain. The
// package starts no goroutines.
package audit

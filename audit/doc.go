// Package audit writes and verifies warren's audit log: one JSON line per request (a Record), hash-chained so that
// an edited, deleted, inserted or reordered line is detected, and, with a signing key, signed checkpoints so that
// a file rewritten without the key is detected too.
//
// Each line carries Seq (1 for the first line of a file, then +1 per line) and PrevHash, the hex SHA-256 of the
// previous line's exact bytes without its newline; the first line of a file has a PrevHash of 64 zeros. Verify
// walks a file and reports the first link that does not hold as a *BrokenLinkError.
//
// The chain alone has no key: it proves that a file is internally consistent, not who wrote it. Someone able to
// rewrite the file can delete a line and recompute every hash, and removing the last lines leaves a valid shorter
// chain. A Log given a signing key (Config.SigningKey) therefore writes checkpoints: lines of the chain that sign its
// head (the seq and the hash of the line before them) at the start of a run, every CheckpointEvery lines or
// CheckpointInterval, and at Close. VerifyAttested checks them: a line deleted or altered and the chain recomputed
// no longer matches the next checkpoint's signature, checkpoints removed leave more lines between two than promised,
// and lines after the last checkpoint, a file that does not end with a shutdown checkpoint, or a run that ended
// without one, are reported (Attestation) rather than taken for complete.
//
// Besides records and checkpoints, a line may be a loss line ("lost"): records the Log could not write (a stalled or
// failing writer) are counted and the count is written before the next line that can be.
//
// Write never makes a record larger than MaxFieldBytes of JSON per field (it clips, naming the field in
// Record.Truncated), never waits longer than Config.WriteTimeout, and lets at most Config.MaxWaiting writes wait:
// a stuck writer makes the log refuse records and Err report it, so that a caller can refuse what it cannot audit.
//
// A Log is the only writer of its file: two Logs (or two processes) appending to one file fork the chain.
package audit

package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// BrokenLinkError names the first line of a log at which the chain does not hold.
type BrokenLinkError struct {
	Line   int    // 1-based line number
	Seq    uint64 // the line's seq; for a line that cannot be read as a record, the seq it should carry
	Reason string // what is wrong, and what probably happened
}

func (e *BrokenLinkError) Error() string {
	return fmt.Sprintf("audit chain broken at line %d (seq %d): %s", e.Line, e.Seq, e.Reason)
}

// Verify reads a log and checks every link: the first record has seq 1 and a prevHash of 64 zeros, and each later
// record has the previous seq + 1 and the SHA-256 of the previous line. It returns the number of records and nil
// for an intact chain. At the first broken link it returns the number of records before it and a
// *BrokenLinkError; a line that is not a record (bad JSON, no seq or prevHash, no final newline, longer than
// MaxLineBytes) is a broken link too. A read error of r is returned wrapped.
//
// An edited line is reported at the line after it, whose prevHash no longer matches (the edit itself is only
// visible there); a deleted, duplicated or reordered line at the first line whose seq is out of order. Lines
// removed from the end of a file leave a valid shorter chain.
func Verify(r io.Reader) (records int, err error) {
	return walk(r, nil)
}

// walk checks the chain of r as Verify does and hands each line that holds to fn, in order; an error from fn ends
// the walk and is returned with the number of lines before that one.
func walk(r io.Reader, fn func(line int, k parsedLink) error) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	prevHash := zeroHash
	var prevSeq uint64
	for line := 1; ; line++ {
		b, complete, err := readLine(br)
		if err == io.EOF && len(b) == 0 {
			return line - 1, nil
		}
		want := prevSeq + 1
		broken := func(seq uint64, format string, a ...any) (int, error) {
			return line - 1, &BrokenLinkError{Line: line, Seq: seq, Reason: fmt.Sprintf(format, a...)}
		}
		switch {
		case errors.Is(err, errLineTooLong):
			return broken(want, "the line is longer than %d bytes, not a record", MaxLineBytes)
		case err != nil && err != io.EOF:
			return line - 1, fmt.Errorf("failed to read line %d of the audit log: %w", line, err)
		case !complete:
			return broken(want, "the line is incomplete (no newline at its end): the file was truncated or a write was cut short")
		}
		k, perr := parseLink(b)
		if perr != nil {
			return broken(want, "not an audit record: %v", perr)
		}
		seq, hash := k.seq, k.prev
		switch {
		case line == 1 && seq != 1:
			return broken(seq, "the first record has seq %d, want 1: records before it were removed", seq)
		case line == 1 && hash != zeroHash:
			return broken(seq, "the first record's prevHash is not 64 zeros: records before it were removed")
		case seq > want:
			return broken(seq, "seq %d follows seq %d (want %d): %d record(s) deleted here, or lines reordered", seq, prevSeq, want, seq-want)
		case seq < want:
			return broken(seq, "seq %d follows seq %d (want %d): a line was duplicated or lines reordered", seq, prevSeq, want)
		case hash != prevHash:
			return broken(seq, "prevHash does not match the SHA-256 of line %d: line %d was altered, or this line's prevHash was", line-1, line-1)
		}
		if fn != nil {
			if err := fn(line, k); err != nil {
				return line - 1, err
			}
		}
		prevSeq, prevHash = seq, hashLine(b)
	}
}

// link is the part of a line that the chain and the checkpoints check. Pointers tell a missing field from a zero
// one.
type link struct {
	Seq        *uint64     `json:"seq"`
	PrevHash   *string     `json:"prevHash"`
	Checkpoint *Checkpoint `json:"checkpoint"`
	Lost       *Loss       `json:"lost"`
}

// parsedLink is a line's link, decoded.
type parsedLink struct {
	seq        uint64
	prev       string
	checkpoint *Checkpoint // nil but on checkpoint lines
	lost       *Loss       // nil but on loss lines
}

// parseLink decodes the link of one line.
func parseLink(line []byte) (parsedLink, error) {
	var k link
	if err := json.Unmarshal(line, &k); err != nil {
		return parsedLink{}, err
	}
	switch {
	case k.Seq == nil:
		return parsedLink{}, errors.New(`no "seq" field`)
	case k.PrevHash == nil:
		return parsedLink{}, errors.New(`no "prevHash" field`)
	}
	return parsedLink{seq: *k.Seq, prev: *k.PrevHash, checkpoint: k.Checkpoint, lost: k.Lost}, nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line of br without its newline, and whether the newline was there. At most
// MaxLineBytes are buffered; a longer line returns errLineTooLong. At the end of the input err is io.EOF.
func readLine(br *bufio.Reader) (line []byte, complete bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > MaxLineBytes+1 {
			return nil, false, errLineTooLong
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line[:len(line)-1], true, nil
		case err != bufio.ErrBufferFull:
			return line, false, err
		}
	}
}

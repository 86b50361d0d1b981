// Package streamframe follows the frames of the two protocols Kubernetes' remote command and port-forward sessions
// run over, one direction of a connection at a time, without buffering more than a frame header (and, for SPDY,
// one control frame): WebSocket (RFC 6455) and SPDY/3.1. The gateway follows them to tell a client why it ended a
// session; the connector to witness an exec session's stdout. Both feed every byte of a direction, in order.
package streamframe

import (
	"encoding/binary"

	"github.com/warren-dev/warren/internal/wsframe"
)

// WebSocket opcodes (RFC 6455 5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
)

// WSSplitter cuts one direction of a WebSocket connection into frames.
type WSSplitter struct {
	// OnFrame is called at each frame header; OnPayload with the frame's payload, unmasked, in pieces as they come
	// (the slice is only valid during the call). Either may be nil.
	OnFrame   func(opcode byte, fin bool, length uint64)
	OnPayload func(p []byte)

	hdr       [wsframe.MaxHeaderLen]byte
	hdrLen    int    // bytes of the current frame header seen so far
	remaining uint64 // payload bytes of the current frame still to come
	masked    bool
	mask      [4]byte
	maskPos   int
	scratch   []byte // unmasked payload, for OnPayload of a masked frame
}

// AtBoundary reports whether the bytes fed so far end at a frame boundary.
func (s *WSSplitter) AtBoundary() bool { return s.remaining == 0 && s.hdrLen == 0 }

// Feed follows p, the next bytes of the direction.
func (s *WSSplitter) Feed(p []byte) {
	for len(p) > 0 {
		if s.remaining > 0 {
			n := uint64(len(p))
			if n > s.remaining {
				n = s.remaining
			}
			s.payload(p[:n])
			s.remaining -= n
			p = p[n:]
			continue
		}
		s.hdr[s.hdrLen] = p[0]
		s.hdrLen++
		p = p[1:]
		if s.hdrLen < 2 || s.hdrLen < wsframe.HeaderLen(s.hdr[1]) {
			continue
		}
		h := wsframe.Parse(s.hdr[:s.hdrLen])
		s.remaining, s.masked, s.mask, s.maskPos = h.Length, h.Masked, h.Mask, 0
		if s.OnFrame != nil {
			s.OnFrame(h.Opcode, h.Fin, s.remaining)
		}
		s.hdrLen = 0
	}
}

func (s *WSSplitter) payload(p []byte) {
	if s.OnPayload == nil {
		return
	}
	if !s.masked {
		s.OnPayload(p)
		return
	}
	for len(p) > 0 {
		n := min(len(p), 32<<10)
		s.scratch = append(s.scratch[:0], p[:n]...)
		for i := range s.scratch {
			s.scratch[i] ^= s.mask[s.maskPos&3]
			s.maskPos++
		}
		s.OnPayload(s.scratch)
		p = p[n:]
	}
}

// MaxSPDYControlFrame bounds what is kept of one SPDY control frame, compressed. Kubernetes' stream headers are a
// few hundred bytes; past this a splitter is lost (Lost reports it) and follows nothing more.
const MaxSPDYControlFrame = 64 << 10

// spdySplitterKeep is the capacity a splitter keeps between control frames; a larger frame's buffer is dropped.
const spdySplitterKeep = 4 << 10

// SPDYSplitter cuts one direction of a SPDY/3.1 session into frames (an 8-byte header whose high bit tells control
// from data, then a 24-bit length). Control frames are gathered whole, header included; data frames' payloads are
// handed over in pieces.
type SPDYSplitter struct {
	// OnData is called at each data frame's header, OnDataPayload with its payload in pieces (the slice is only
	// valid during the call), OnControl at each complete control frame (false loses the session). Any may be nil.
	OnData        func(streamID uint32)
	OnDataPayload func(streamID uint32, p []byte)
	OnControl     func(frame []byte) bool

	hdr       [8]byte
	hdrLen    int
	remaining int // payload bytes of the current frame still to come
	isControl bool
	streamID  uint32 // of the current data frame
	control   []byte
	lost      bool // a control frame was too large or unreadable
}

// AtBoundary reports whether the bytes fed so far end at a frame boundary.
func (s *SPDYSplitter) AtBoundary() bool { return s.hdrLen == 0 && s.remaining == 0 }

// Lost reports whether the splitter gave up following the session.
func (s *SPDYSplitter) Lost() bool { return s.lost }

// Feed follows p, the next bytes of the direction.
func (s *SPDYSplitter) Feed(p []byte) {
	for len(p) > 0 && !s.lost {
		if s.remaining == 0 && s.hdrLen < len(s.hdr) {
			n := copy(s.hdr[s.hdrLen:], p)
			s.hdrLen += n
			p = p[n:]
			if s.hdrLen < len(s.hdr) {
				return
			}
			s.remaining = int(binary.BigEndian.Uint32(s.hdr[4:8]) & 0xffffff)
			s.isControl = s.hdr[0]&0x80 != 0
			if s.isControl {
				if s.remaining > MaxSPDYControlFrame {
					s.lost = true
					return
				}
				s.control = append(s.control[:0], s.hdr[:]...)
			} else {
				s.streamID = binary.BigEndian.Uint32(s.hdr[0:4]) & 0x7fffffff
				if s.OnData != nil {
					s.OnData(s.streamID)
				}
			}
			if s.remaining == 0 {
				s.frameDone()
				continue
			}
		}
		n := min(len(p), s.remaining)
		if s.isControl {
			s.control = append(s.control, p[:n]...)
		} else if s.OnDataPayload != nil {
			s.OnDataPayload(s.streamID, p[:n])
		}
		s.remaining -= n
		p = p[n:]
		if s.remaining == 0 {
			s.frameDone()
		}
	}
}

func (s *SPDYSplitter) frameDone() {
	s.hdrLen = 0
	if s.isControl && s.OnControl != nil && !s.OnControl(s.control) {
		s.lost = true
	}
	if cap(s.control) > spdySplitterKeep {
		s.control = nil
	}
}

// SPDY/3.1 control frame types warren follows.
const (
	SPDYSynStream    = 1
	SPDYSynReply     = 2
	SPDYRstStream    = 3
	SPDYHeadersFrame = 8
)

// ControlType is the type of a whole control frame; StreamID the stream it names (0 for frames without one).
func ControlType(frame []byte) uint16 { return binary.BigEndian.Uint16(frame[2:4]) }

// ControlStreamID is the stream a SYN_STREAM, SYN_REPLY or RST_STREAM frame names; 0 when the frame is too short.
func ControlStreamID(frame []byte) uint32 {
	if len(frame) < 12 {
		return 0
	}
	return binary.BigEndian.Uint32(frame[8:12]) & 0x7fffffff
}

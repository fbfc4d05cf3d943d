package moitessierhttp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// The hub reads its clients' WebSocket frames itself (RFC 6455, section
// 5), so that an idle connection needs no goroutine blocked in a read:
// the Server's close watcher says when a connection has something to
// read, and only then does a goroutine read it (see wsConn.pass). The
// WebSocket library does the opening handshake.

// Opcodes (RFC 6455, 5.2).
const (
	wsOpContinuation = 0x0
	wsOpText         = 0x1
	wsOpBinary       = 0x2
	wsOpClose        = 0x8
	wsOpPing         = 0x9
	wsOpPong         = 0xA
)

// wsMaxControl is the largest payload of a control frame.
const wsMaxControl = 125

// wsHeader is the header of a frame from a client.
type wsHeader struct {
	fin  bool
	op   byte
	size int // header length, mask key included
	n    int // payload length
	mask [4]byte
}

// wsProtocolError is a client frame that breaks RFC 6455, or a message
// over the read limit: the connection closes with code.
type wsProtocolError struct {
	code   websocket.StatusCode
	reason string
}

func (e *wsProtocolError) Error() string {
	return fmt.Sprintf("websocket: close %d: %s", int(e.code), e.reason)
}

func wsProtocol(reason string) error {
	return &wsProtocolError{code: websocket.StatusProtocolError, reason: reason}
}

// parseWSHeader parses the header of the client frame at the front of b.
// ok is false when b does not hold the whole header yet. limit bounds the
// payload of a data frame (the caller adds what a fragmented message
// already holds); the largest frame that passes is thus limit+14 bytes.
func parseWSHeader(b []byte, limit int) (h wsHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	if b[0]&0x70 != 0 {
		return h, false, wsProtocol("reserved bits set: no extension was negotiated")
	}
	h.fin = b[0]&0x80 != 0
	h.op = b[0] & 0x0f
	if b[1]&0x80 == 0 {
		return h, false, wsProtocol("unmasked client frame")
	}
	switch h.op {
	case wsOpContinuation, wsOpText, wsOpBinary:
	case wsOpClose, wsOpPing, wsOpPong:
		if !h.fin {
			return h, false, wsProtocol("fragmented control frame")
		}
	default:
		return h, false, wsProtocol(fmt.Sprintf("unknown opcode %d", h.op))
	}
	var n uint64
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		n, h.size = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		n, h.size = binary.BigEndian.Uint64(b[2:]), 10
		if n>>63 != 0 {
			return h, false, wsProtocol("payload length with its most significant bit set")
		}
	default:
		n, h.size = uint64(l), 2
	}
	if h.op >= wsOpClose && n > wsMaxControl {
		return h, false, wsProtocol("control frame over 125 bytes")
	}
	if h.op < wsOpClose && n > uint64(max(limit, 0)) {
		return h, false, &wsProtocolError{code: websocket.StatusMessageTooBig, reason: fmt.Sprintf("message over %d bytes", limit)}
	}
	if len(b) < h.size+4 {
		return h, false, nil
	}
	copy(h.mask[:], b[h.size:])
	h.size += 4
	h.n = int(n)
	return h, true, nil
}

// wsUnmask unmasks a client frame's payload in place.
func wsUnmask(p []byte, key [4]byte) {
	k := binary.LittleEndian.Uint32(key[:])
	k8 := uint64(k)<<32 | uint64(k)
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k8)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// wsControlFrame returns a server control frame (unmasked) of op and payload.
func wsControlFrame(op byte, payload []byte) []byte {
	b := make([]byte, 2, 2+len(payload))
	b[0] = 0x80 | op
	b[1] = byte(len(payload))
	return append(b, payload...)
}

// wsClosePayload is the payload of a close frame: the code, then the
// reason, cut to what a control frame holds.
func wsClosePayload(code websocket.StatusCode, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(code))
	if len(reason) > wsMaxControl-2 {
		reason = reason[:wsMaxControl-2]
	}
	return append(b, reason...)
}

// errWSClosePayload is a close frame whose payload RFC 6455 does not allow.
var errWSClosePayload = errors.New("invalid close frame payload")

// parseWSClose returns the code of a client's close frame's payload
// (websocket.StatusNoStatusRcvd when it has none). Valid codes are those
// RFC 6455 lets an endpoint send (1000–1003, 1007–1011, the registered
// 1012–1014) and the 3000–4999 ranges for libraries and applications;
// 1004–1006, 1015 and other unassigned codes below 3000 are a protocol error.
func parseWSClose(p []byte) (websocket.StatusCode, error) {
	if len(p) == 0 {
		return websocket.StatusNoStatusRcvd, nil
	}
	if len(p) == 1 || !utf8.Valid(p[2:]) {
		return 0, errWSClosePayload
	}
	code := websocket.StatusCode(binary.BigEndian.Uint16(p))
	switch {
	case code >= 3000 && code <= 4999,
		code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return code, nil
	}
	return 0, errWSClosePayload
}

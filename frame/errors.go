package frame

import (
	"errors"
	"strconv"
)

// ErrShortBuffer means more input is needed before the next frame or value
// can be parsed. It is not a protocol error.
var ErrShortBuffer = errors.New("frame: need more data")

// ErrTooLarge is wrapped by errors about a size over a configured limit:
// a header size, a declared decompressed size or a string length.
var ErrTooLarge = errors.New("too large")

// ErrEncrypted is returned by FrameLen and Reader for frames with the
// cipher flag: they read clear frames only. An encrypted link goes through
// a Decryptor first (cipher.go), which clears the flag.
var ErrEncrypted = errors.New("frame: encrypted packets are not supported")

// HeaderError is an invalid frame header. Reason is suitable for an xpra
// disconnect message.
type HeaderError struct {
	Reason string
	TooBig bool
}

func (e *HeaderError) Error() string { return "frame: " + e.Reason }

// Unwrap lets errors.Is(err, ErrTooLarge) match oversized headers.
func (e *HeaderError) Unwrap() error {
	if e.TooBig {
		return ErrTooLarge
	}
	return nil
}

// DecodeError is a payload that could not be decoded (xpra's "gibberish").
type DecodeError struct {
	Encoding Encoding
	Offset   int
	Reason   string
	Err      error
}

func (e *DecodeError) Error() string {
	s := "frame: " + e.Encoding.String() + " decode error at offset "
	s += strconv.Itoa(e.Offset) + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *DecodeError) Unwrap() error { return e.Err }

// TextError is a plain-text line where a frame header was expected: what
// xpra peers send (3.1 and 6.x alike) to refuse a connection before they
// have accepted a hello, e.g. "disconnect: invalid packet format, ..." or
// "disconnect invalid compression: zlib is not available" (xpra-spec §1.8).
// Line is the text without its newline, at most MaxTextLine bytes.
type TextError struct {
	Line string
}

func (e *TextError) Error() string { return "frame: plain-text reply instead of a packet: " + e.Line }

// MaxTextLine bounds how much of a plain-text reply StreamReader keeps.
const MaxTextLine = 1024

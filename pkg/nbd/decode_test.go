package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"syscall"
	"testing"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

func TestDecodeOptionHeader(t *testing.T) {
	valid := appendUint32s(binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption), nbdwire.OptGo, 42)
	tests := []struct {
		name string
		in   []byte
		want optionHeader
		err  error
	}{
		{"valid", valid, optionHeader{option: nbdwire.OptGo, length: 42}, nil},
		{"trailing bytes ignored", append(bytes.Clone(valid), 1, 2), optionHeader{option: nbdwire.OptGo, length: 42}, nil},
		{"short", valid[:15], optionHeader{}, errShortFrame},
		{"empty", nil, optionHeader{}, errShortFrame},
		{"bad magic", append([]byte{0}, valid[1:]...), optionHeader{}, errBadOptionMagic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeOptionHeader(tt.in)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("got (%+v, %v), want (%+v, %v)", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestCheckClientFlags(t *testing.T) {
	tests := []struct {
		flags    uint32
		noZeroes bool
		err      error
	}{
		{clientFixedNewstyle, false, nil},
		{clientFixedNewstyle | clientNoZeroes, true, nil},
		{0, false, errNotFixedNewstyle},
		{clientNoZeroes, false, errNotFixedNewstyle},
		{clientFixedNewstyle | 1<<2, false, errUnknownClientFlags},
		{1 << 31, false, errUnknownClientFlags},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%#x", tt.flags), func(t *testing.T) {
			noZeroes, err := checkClientFlags(tt.flags)
			if noZeroes != tt.noZeroes || !errors.Is(err, tt.err) {
				t.Errorf("got (%v, %v), want (%v, %v)", noZeroes, err, tt.noZeroes, tt.err)
			}
		})
	}
}

func TestDecodeInfoRequest(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want infoRequest
		err  error
	}{
		{"name and two infos", infoPayload("vol", nbdwire.InfoBlockSize, infoName),
			infoRequest{name: "vol", infos: []uint16{nbdwire.InfoBlockSize, infoName}}, nil},
		{"default export, no infos", infoPayload(""), infoRequest{}, nil},
		{"empty", nil, infoRequest{}, errShortOption},
		{"five bytes", []byte{0, 0, 0, 0, 0}, infoRequest{}, errShortOption},
		{"name longer than payload", append(appendUint32s(nil, 10), "abc\x00\x00"...), infoRequest{}, errShortOption},
		{"name length near 2^32", append(appendUint32s(nil, 0xffffffff), 0, 0), infoRequest{}, errShortOption},
		{"count says 2, one given", countMismatch(), infoRequest{}, errBadInfoCount},
		{"odd trailing byte", append(infoPayload("v"), 7), infoRequest{}, errBadInfoCount},
		{"name over 4096 bytes", infoPayload(string(make([]byte, 4097))), infoRequest{}, errNameTooLong},
		{"name of 4096 bytes", infoPayload(string(bytes.Repeat([]byte("a"), 4096))),
			infoRequest{name: string(bytes.Repeat([]byte("a"), 4096))}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeInfoRequest(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if got.name != tt.want.name || !reflect.DeepEqual(got.infos, tt.want.infos) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// countMismatch is an info request announcing two items and carrying one.
func countMismatch() []byte {
	b := appendUint32s(nil, 1)
	b = append(b, 'v', 0, 2)
	return binary.BigEndian.AppendUint16(b, infoName)
}

func TestDecodeRequest(t *testing.T) {
	valid := requestBytes(nbdwire.CmdWrite, nbdwire.CmdFlagFUA, 0x0102030405060708, 1<<40, 4096)
	tests := []struct {
		name string
		in   []byte
		want request
		err  error
	}{
		{"valid", valid, request{flags: nbdwire.CmdFlagFUA, typ: nbdwire.CmdWrite,
			handle: 0x0102030405060708, offset: 1 << 40, length: 4096}, nil},
		{"short", valid[:27], request{}, errShortFrame},
		{"bad magic", append([]byte{0x25, 0x60, 0x95, 0x14}, valid[4:]...), request{}, errBadRequestMagic},
		{"reply magic", append(binary.BigEndian.AppendUint32(nil, nbdwire.MagicSimpleReply), valid[4:]...), request{}, errBadRequestMagic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeRequest(tt.in)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("got (%+v, %v), want (%+v, %v)", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestCheckRequest(t *testing.T) {
	const size = 1 << 20
	tests := []struct {
		name string
		req  request
		want uint32
	}{
		{"read whole export", request{typ: nbdwire.CmdRead, length: size}, 0},
		{"read last byte", request{typ: nbdwire.CmdRead, offset: size - 1, length: 1}, 0},
		{"read with FUA", request{typ: nbdwire.CmdRead, flags: nbdwire.CmdFlagFUA, length: 1}, 0},
		{"write with FUA", request{typ: nbdwire.CmdWrite, flags: nbdwire.CmdFlagFUA, length: 512}, 0},
		{"write zeroes FUA and NO_HOLE", request{typ: nbdwire.CmdWriteZeroes, flags: nbdwire.CmdFlagFUA | cmdFlagNoHole, length: 512}, 0},
		{"trim with FUA", request{typ: nbdwire.CmdTrim, flags: nbdwire.CmdFlagFUA, length: 512}, 0},
		{"flush", request{typ: nbdwire.CmdFlush}, 0},
		{"flush with FUA", request{typ: nbdwire.CmdFlush, flags: nbdwire.CmdFlagFUA}, 0},
		{"read past end", request{typ: nbdwire.CmdRead, offset: size - 1, length: 2}, errnoInval},
		{"read at end", request{typ: nbdwire.CmdRead, offset: size, length: 1}, errnoInval},
		{"read offset overflows", request{typ: nbdwire.CmdRead, offset: 1<<64 - 1, length: 2}, errnoInval},
		{"trim past end", request{typ: nbdwire.CmdTrim, offset: size - 1, length: 2}, errnoInval},
		{"write past end", request{typ: nbdwire.CmdWrite, offset: size - 1, length: 2}, errnoNoSpace},
		{"write offset overflows", request{typ: nbdwire.CmdWrite, offset: 1<<64 - 512, length: 1024}, errnoNoSpace},
		{"write zeroes past end", request{typ: nbdwire.CmdWriteZeroes, offset: size, length: 1}, errnoNoSpace},
		{"zero length read", request{typ: nbdwire.CmdRead}, errnoInval},
		{"zero length write", request{typ: nbdwire.CmdWrite, offset: 4}, errnoInval},
		{"zero length trim", request{typ: nbdwire.CmdTrim}, errnoInval},
		{"zero length write zeroes", request{typ: nbdwire.CmdWriteZeroes}, errnoInval},
		{"read over max block size", request{typ: nbdwire.CmdRead, length: MaxBlockSize + 1}, errnoInval},
		{"write zeroes over max block size", request{typ: nbdwire.CmdWriteZeroes, length: MaxBlockSize + 1}, errnoInval},
		{"flush with offset", request{typ: nbdwire.CmdFlush, offset: 1}, errnoInval},
		{"flush with length", request{typ: nbdwire.CmdFlush, length: 1}, errnoInval},
		{"NO_HOLE on write", request{typ: nbdwire.CmdWrite, flags: cmdFlagNoHole, length: 1}, errnoInval},
		{"DF on read", request{typ: nbdwire.CmdRead, flags: cmdFlagDF, length: 1}, errnoInval},
		{"FAST_ZERO not advertised", request{typ: nbdwire.CmdWriteZeroes, flags: cmdFlagFastZero, length: 1}, errnoInval},
		{"unknown flag", request{typ: nbdwire.CmdRead, flags: 1 << 15, length: 1}, errnoInval},
		{"cache", request{typ: cmdCache, length: 1}, errnoInval},
		{"block status", request{typ: 7, length: 1}, errnoInval},
		{"unknown command", request{typ: 0xffff, length: 1}, errnoInval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checkRequest(tt.req, size); got != tt.want {
				t.Errorf("checkRequest = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestCheckRequestTrimHasNoMaximum(t *testing.T) {
	req := request{typ: nbdwire.CmdTrim, length: 1<<32 - 1}
	if got := checkRequest(req, 1<<33); got != 0 {
		t.Errorf("checkRequest = %d, want 0", got)
	}
}

func TestErrnoOf(t *testing.T) {
	tests := []struct {
		err  error
		want uint32
	}{
		{errors.New("disk on fire"), errnoIO},
		{context.DeadlineExceeded, errnoIO},
		{context.Canceled, errnoIO},
		{fmt.Errorf("replica: %w", ErrNoSpace), errnoNoSpace},
		{syscall.ENOSPC, errnoNoSpace},
		{syscall.EDQUOT, errnoNoSpace},
		{syscall.EFBIG, errnoNoSpace},
		{fmt.Errorf("volume: %w", ErrReadOnly), errnoPerm},
		{syscall.EROFS, errnoPerm},
		{syscall.EPERM, errnoPerm},
		{fmt.Errorf("stale client: %w", ErrPolicy), errnoPerm},
		{fmt.Errorf("deposed: %w", ErrShutdown), nbdwire.ErrnoShutdown},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := errnoOf(tt.err); got != tt.want {
				t.Errorf("errnoOf = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestEncoders(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"greeting", greeting(), []byte("NBDMAGICIHAVEOPT\x00\x03")},
		{"option reply", appendOptionReply(nil, optList, repServer, []byte{9}),
			[]byte{0, 3, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1, 9}},
		{"server entry", serverEntry("ab"), []byte{0, 0, 0, 2, 'a', 'b'}},
		{"export info", exportInfo(0x0102, exportFlags), []byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0x01, 0x6d}},
		{"block size info", blockSizeInfo(), []byte{0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0}},
		{"name info", nameInfo("v"), []byte{0, 1, 'v'}},
		{"export name reply, no zeroes", exportNameReply(512, exportFlags, true), []byte{0, 0, 0, 0, 0, 0, 2, 0, 0x01, 0x6d}},
		{"simple reply", simpleReply(errnoNoSpace, 7), []byte{0x67, 0x44, 0x66, 0x98, 0, 0, 0, 28, 0, 0, 0, 0, 0, 0, 0, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Errorf("got %x, want %x", tt.got, tt.want)
			}
		})
	}
	if n := len(exportNameReply(512, exportFlags, false)); n != 134 {
		t.Errorf("export name reply with zeroes is %d bytes, want 134", n)
	}
}

// appendUint32s appends big-endian 32 bit values.
func appendUint32s(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// requestBytes encodes a request header.
func requestBytes(typ, flags uint16, handle, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, nbdwire.MagicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

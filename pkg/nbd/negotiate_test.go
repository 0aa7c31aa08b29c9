package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

const testSize = 1 << 20

// oneExport returns exports holding a single zeroed export named "vol".
func oneExport() (*memExport, memExports) {
	exp := newMemExport(testSize)
	return exp, memExports{"vol": exp}
}

func TestGreetingAdvertisesFixedNewstyleAndNoZeroes(t *testing.T) {
	_, exports := oneExport()
	addr, _ := startServer(t, exports, Options{})
	c := dial(t, addr)
	if got, want := c.read(greetingSize), []byte("NBDMAGICIHAVEOPT\x00\x03"); !bytes.Equal(got, want) {
		t.Errorf("greeting %q, want %q", got, want)
	}
}

func TestClientFlagsRejected(t *testing.T) {
	tests := []struct {
		name  string
		flags uint32
		err   error
	}{
		{"no fixed newstyle", 0, errNotFixedNewstyle},
		{"no zeroes without fixed newstyle", clientNoZeroes, errNotFixedNewstyle},
		{"unknown flag", clientFixedNewstyle | 1<<5, errUnknownClientFlags},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, exports := oneExport()
			c, done := servePair(t, NewServer(exports, Options{}))
			c.handshake(tt.flags)
			c.expectClosed()
			if err := waitServeConn(t, done); !errors.Is(err, tt.err) {
				t.Errorf("ServeConn = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestExportNameEntersTransmission(t *testing.T) {
	tests := []struct {
		name      string
		flags     uint32
		replySize int
	}{
		{"with zero padding", clientFixedNewstyle, 134},
		{"without zero padding", clientFixedNewstyle | clientNoZeroes, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, exports := oneExport()
			exp.fill([]byte("hello"))
			addr, _ := startServer(t, exports, Options{})
			c := dial(t, addr)
			c.handshake(tt.flags)
			c.sendOption(optExportName, []byte("vol"))
			reply := c.read(tt.replySize)
			if size := binary.BigEndian.Uint64(reply); size != testSize {
				t.Errorf("size %d, want %d", size, testSize)
			}
			if flags := binary.BigEndian.Uint16(reply[8:]); flags != 0x016d {
				t.Errorf("transmission flags %#x, want 0x16d", flags)
			}
			if !bytes.Equal(reply[10:], make([]byte, tt.replySize-10)) {
				t.Errorf("padding not zero: %x", reply[10:])
			}
			if got := c.readAt(1, 0, 5); string(got) != "hello" {
				t.Errorf("read %q, want hello", got)
			}
		})
	}
}

func TestExportNameUnknownClosesConnection(t *testing.T) {
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, Options{}))
	c.handshake(clientFixedNewstyle)
	c.sendOption(optExportName, []byte("nope"))
	c.expectClosed()
	if err := waitServeConn(t, done); !errors.Is(err, errUnknownExport) {
		t.Errorf("ServeConn = %v, want errUnknownExport", err)
	}
}

func TestGoRepliesWithExportInformation(t *testing.T) {
	tests := []struct {
		name  string
		infos []uint16
		want  [][]byte
	}{
		{"no requests", nil, [][]byte{
			exportInfo(testSize, 0x016d), blockSizeInfo()}},
		{"block size", []uint16{nbdwire.InfoBlockSize}, [][]byte{
			exportInfo(testSize, 0x016d), blockSizeInfo()}},
		{"name, description and an unknown type", []uint16{infoName, infoDescription, 99}, [][]byte{
			exportInfo(testSize, 0x016d), blockSizeInfo(), {0, 1, 'v', 'o', 'l'}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, exports := oneExport()
			addr, _ := startServer(t, exports, Options{})
			c := dial(t, addr)
			c.handshake(clientFixedNewstyle | clientNoZeroes)
			c.sendOption(nbdwire.OptGo, infoPayload("vol", tt.infos...))
			rs := c.readOptionReplies()
			var infos [][]byte
			for _, r := range rs[:len(rs)-1] {
				if r.option != nbdwire.OptGo || r.typ != nbdwire.RepInfo {
					t.Fatalf("reply %+v, want NBD_REP_INFO to NBD_OPT_GO", r)
				}
				infos = append(infos, r.data)
			}
			if !reflect.DeepEqual(infos, tt.want) {
				t.Errorf("infos %x, want %x", infos, tt.want)
			}
			if last := rs[len(rs)-1]; last.typ != nbdwire.RepAck || len(last.data) != 0 {
				t.Errorf("final reply %+v, want empty ACK", last)
			}
			c.readAt(1, 0, 512)
		})
	}
}

func TestBlockSizeInformationValues(t *testing.T) {
	info := blockSizeInfo()
	got := []uint32{binary.BigEndian.Uint32(info[2:]), binary.BigEndian.Uint32(info[6:]), binary.BigEndian.Uint32(info[10:])}
	if want := []uint32{1, 4096, 32 << 20}; !reflect.DeepEqual(got, want) {
		t.Errorf("block sizes %v, want %v", got, want)
	}
}

func TestInfoKeepsNegotiating(t *testing.T) {
	_, exports := oneExport()
	addr, _ := startServer(t, exports, Options{})
	c := dial(t, addr)
	c.handshake(clientFixedNewstyle | clientNoZeroes)
	c.sendOption(optInfo, infoPayload("vol"))
	rs := c.readOptionReplies()
	if len(rs) != 3 || rs[2].typ != nbdwire.RepAck || rs[0].option != optInfo {
		t.Fatalf("NBD_OPT_INFO replies %+v, want two infos and ACK", rs)
	}
	c.sendOption(nbdwire.OptGo, infoPayload("vol"))
	if rs := c.readOptionReplies(); rs[len(rs)-1].typ != nbdwire.RepAck {
		t.Fatalf("NBD_OPT_GO after INFO: %+v", rs)
	}
	c.readAt(1, 0, 512)
}

func TestOptionErrorsKeepNegotiating(t *testing.T) {
	tests := []struct {
		name    string
		option  uint32
		payload []byte
		want    uint32
	}{
		{"GO unknown export", nbdwire.OptGo, infoPayload("nope"), nbdwire.RepErrUnknown},
		{"INFO unknown export", optInfo, infoPayload("nope"), nbdwire.RepErrUnknown},
		{"GO refused by policy", nbdwire.OptGo, infoPayload("refused"), nbdwire.RepErrPolicy},
		{"INFO refused by policy", optInfo, infoPayload("refused"), nbdwire.RepErrPolicy},
		{"GO empty payload", nbdwire.OptGo, nil, repErrInvalid},
		{"GO name past payload", nbdwire.OptGo, append(appendUint32s(nil, 100), 'v', 0, 0), repErrInvalid},
		{"GO count mismatch", nbdwire.OptGo, countMismatch(), repErrInvalid},
		{"LIST with payload", optList, []byte{1}, repErrInvalid},
		{"STARTTLS", optStartTLS, nil, repErrUnsup},
		{"STRUCTURED_REPLY", optStructuredReply, nil, repErrUnsup},
		{"LIST_META_CONTEXT", optListMetaContext, infoPayload("vol"), repErrUnsup},
		{"SET_META_CONTEXT", optSetMetaContext, infoPayload("vol"), repErrUnsup},
		{"EXTENDED_HEADERS", optExtendedHeaders, nil, repErrUnsup},
		{"unknown option", 0x7777, []byte("payload is skipped"), repErrUnsup},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, exports := oneExport()
			exports["refused"] = nil
			addr, _ := startServer(t, exports, Options{})
			c := dial(t, addr)
			c.handshake(clientFixedNewstyle | clientNoZeroes)
			c.sendOption(tt.option, tt.payload)
			r := c.readOptionReply()
			if r.option != tt.option || r.typ != tt.want {
				t.Fatalf("reply (option %d, type %#x), want (%d, %#x)", r.option, r.typ, tt.option, tt.want)
			}
			c.sendOption(nbdwire.OptGo, infoPayload("vol"))
			if rs := c.readOptionReplies(); rs[len(rs)-1].typ != nbdwire.RepAck {
				t.Fatalf("NBD_OPT_GO afterwards: %+v", rs)
			}
			c.readAt(1, 0, 512)
			if n := exp.calls(); n != 1 {
				t.Errorf("export saw %d calls, want 1", n)
			}
		})
	}
}

func TestListNamesEveryExport(t *testing.T) {
	exports := memExports{"b": newMemExport(512), "a": newMemExport(512), "": newMemExport(512)}
	addr, _ := startServer(t, exports, Options{})
	c := dial(t, addr)
	c.handshake(clientFixedNewstyle)
	c.sendOption(optList, nil)
	rs := c.readOptionReplies()
	var names []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer || int(binary.BigEndian.Uint32(r.data)) != len(r.data)-4 {
			t.Fatalf("reply %+v, want NBD_REP_SERVER", r)
		}
		names = append(names, string(r.data[4:]))
	}
	if want := []string{"", "a", "b"}; !reflect.DeepEqual(names, want) {
		t.Errorf("names %q, want %q", names, want)
	}
	if rs[len(rs)-1].typ != nbdwire.RepAck {
		t.Errorf("final reply %+v, want ACK", rs[len(rs)-1])
	}
}

func TestAbortAcknowledgesAndCloses(t *testing.T) {
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, Options{}))
	c.handshake(clientFixedNewstyle)
	c.sendOption(optAbort, nil)
	if r := c.readOptionReply(); r.option != optAbort || r.typ != nbdwire.RepAck {
		t.Errorf("reply %+v, want ACK to NBD_OPT_ABORT", r)
	}
	c.expectClosed()
	if err := waitServeConn(t, done); err != nil {
		t.Errorf("ServeConn = %v, want nil", err)
	}
}

func TestOptionTooLongIsRefusedAndCloses(t *testing.T) {
	tests := []struct {
		name   string
		option uint32
		reply  bool
	}{
		{"GO", nbdwire.OptGo, true},
		{"unknown option", 0x7777, true},
		{"EXPORT_NAME cannot be answered", optExportName, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, exports := oneExport()
			c, done := servePair(t, NewServer(exports, Options{}))
			c.handshake(clientFixedNewstyle)
			hdr := appendUint32s(binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption), tt.option, maxOptionLength+1)
			c.write(hdr)
			if tt.reply {
				if r := c.readOptionReply(); r.option != tt.option || r.typ != repErrTooBig {
					t.Errorf("reply %+v, want NBD_REP_ERR_TOO_BIG", r)
				}
			}
			c.expectClosed()
			if err := waitServeConn(t, done); !errors.Is(err, errOptionTooLong) {
				t.Errorf("ServeConn = %v, want errOptionTooLong", err)
			}
		})
	}
}

func TestOptionOfMaximumLengthIsRead(t *testing.T) {
	_, exports := oneExport()
	addr, _ := startServer(t, exports, Options{})
	c := dial(t, addr)
	c.handshake(clientFixedNewstyle)
	c.sendOption(0x7777, make([]byte, maxOptionLength))
	if r := c.readOptionReply(); r.typ != repErrUnsup {
		t.Errorf("reply %+v, want NBD_REP_ERR_UNSUP", r)
	}
}

func TestTooManyOptionsCloses(t *testing.T) {
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, Options{MaxOptions: 3}))
	c.handshake(clientFixedNewstyle)
	for range 3 {
		c.sendOption(optStructuredReply, nil)
		if r := c.readOptionReply(); r.typ != repErrUnsup {
			t.Fatalf("reply %+v, want NBD_REP_ERR_UNSUP", r)
		}
	}
	c.sendOption(optStructuredReply, nil)
	c.expectClosed()
	if err := waitServeConn(t, done); !errors.Is(err, errTooManyOptions) {
		t.Errorf("ServeConn = %v, want errTooManyOptions", err)
	}
}

func TestBadOptionMagicCloses(t *testing.T) {
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, Options{}))
	c.handshake(clientFixedNewstyle)
	c.write(appendUint32s(nil, 1, 2, 3, 4))
	c.expectClosed()
	if err := waitServeConn(t, done); !errors.Is(err, errBadOptionMagic) {
		t.Errorf("ServeConn = %v, want errBadOptionMagic", err)
	}
}

func TestHandshakeTimeoutClosesSilentClient(t *testing.T) {
	tests := []struct {
		name string
		say  func(c *testClient)
	}{
		{"silent after greeting", func(c *testClient) {}},
		{"silent after flags", func(c *testClient) { c.handshake(clientFixedNewstyle) }},
		{"half an option", func(c *testClient) {
			c.handshake(clientFixedNewstyle)
			c.write(binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, exports := oneExport()
			c, done := servePair(t, NewServer(exports, Options{HandshakeTimeout: 100 * time.Millisecond}))
			start := time.Now()
			tt.say(c)
			err := waitServeConn(t, done)
			if !errors.Is(err, errHandshakeTimeout) {
				t.Errorf("ServeConn = %v, want errHandshakeTimeout", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("closed after %v, want about 100ms", d)
			}
		})
	}
}

func TestTransmissionHasNoHandshakeDeadline(t *testing.T) {
	_, exports := oneExport()
	addr, _ := startServer(t, exports, Options{HandshakeTimeout: 100 * time.Millisecond})
	c := dial(t, addr)
	c.connect("vol")
	time.Sleep(300 * time.Millisecond)
	c.readAt(1, 0, 512)
}

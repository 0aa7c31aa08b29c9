package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

func FuzzDecodeOptionHeader(f *testing.F) {
	f.Add(optionBytes(nbdwire.OptGo, infoPayload("vol")))
	f.Add(optionBytes(optExportName, nil))
	f.Add([]byte("IHAVEOPT"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		hdr, err := decodeOptionHeader(b)
		if err != nil {
			if hdr != (optionHeader{}) {
				t.Fatalf("error %v with header %+v", err, hdr)
			}
			return
		}
		re := appendUint32s(binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption), hdr.option, hdr.length)
		if !bytes.Equal(re, b[:optionHeaderSize]) {
			t.Fatalf("header %+v re-encodes to %x, input %x", hdr, re, b[:optionHeaderSize])
		}
	})
}

func FuzzCheckClientFlags(f *testing.F) {
	for _, flags := range []uint32{0, 1, 2, 3, 4, 1 << 31} {
		f.Add(flags)
	}
	f.Fuzz(func(t *testing.T, flags uint32) {
		noZeroes, err := checkClientFlags(flags)
		valid := flags&^clientKnownFlags == 0 && flags&clientFixedNewstyle != 0
		if (err == nil) != valid {
			t.Fatalf("flags %#x: error %v, valid %v", flags, err, valid)
		}
		if noZeroes && (err != nil || flags&clientNoZeroes == 0) {
			t.Fatalf("flags %#x: noZeroes with error %v", flags, err)
		}
	})
}

func FuzzDecodeInfoRequest(f *testing.F) {
	f.Add(infoPayload("vol", nbdwire.InfoBlockSize, infoName))
	f.Add(infoPayload(""))
	f.Add(countMismatch())
	f.Add(append(appendUint32s(nil, 0xffffffff), 0, 0))
	f.Fuzz(func(t *testing.T, p []byte) {
		req, err := decodeInfoRequest(p)
		if err != nil {
			return
		}
		if len(req.name) > maxStringLength {
			t.Fatalf("accepted a %d byte name", len(req.name))
		}
		if re := infoPayload(req.name, req.infos...); !bytes.Equal(re, p) {
			t.Fatalf("request %+v re-encodes to %x, input %x", req, re, p)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(requestBytes(nbdwire.CmdRead, 0, 1, 0, 512))
	f.Add(requestBytes(nbdwire.CmdWrite, nbdwire.CmdFlagFUA, 2, 4096, 4096))
	f.Add(requestBytes(nbdwire.CmdDisc, 0, 3, 0, 0))
	f.Add(bytes.Repeat([]byte{0xff}, requestSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeRequest(b)
		if err != nil {
			if req != (request{}) {
				t.Fatalf("error %v with request %+v", err, req)
			}
			return
		}
		re := requestBytes(req.typ, req.flags, req.handle, req.offset, req.length)
		if !bytes.Equal(re, b[:requestSize]) {
			t.Fatalf("request %+v re-encodes to %x, input %x", req, re, b[:requestSize])
		}
	})
}

func FuzzCheckRequest(f *testing.F) {
	f.Add(nbdwire.CmdRead, uint16(0), uint64(0), uint32(512), uint64(testSize))
	f.Add(nbdwire.CmdWrite, nbdwire.CmdFlagFUA, uint64(testSize-1), uint32(2), uint64(testSize))
	f.Add(nbdwire.CmdTrim, uint16(0), uint64(1<<63), uint32(1<<31), uint64(1<<63))
	f.Add(nbdwire.CmdWriteZeroes, cmdFlagNoHole, uint64(1<<64-1), uint32(1), uint64(0))
	f.Add(nbdwire.CmdFlush, uint16(0), uint64(0), uint32(0), uint64(0))
	f.Fuzz(func(t *testing.T, typ, flags uint16, off uint64, length uint32, size uint64) {
		req := request{typ: typ, flags: flags, offset: off, length: length}
		if checkRequest(req, size) != 0 {
			return
		}
		if flags&^allowedFlags(typ) != 0 {
			t.Fatalf("accepted flags %#x for command %d", flags, typ)
		}
		switch typ {
		case nbdwire.CmdFlush:
			if off != 0 || length != 0 {
				t.Fatalf("accepted flush %d+%d", off, length)
			}
		case nbdwire.CmdRead, nbdwire.CmdWrite, nbdwire.CmdWriteZeroes, nbdwire.CmdTrim:
			end := off + uint64(length)
			if length == 0 || end < off || end > size {
				t.Fatalf("accepted %s %d+%d on export of %d", commandName(typ), off, length, size)
			}
			if typ != nbdwire.CmdTrim && length > MaxBlockSize {
				t.Fatalf("accepted %s of %d bytes", commandName(typ), length)
			}
		default:
			t.Fatalf("accepted command %d", typ)
		}
	})
}

// FuzzServeConn drives a whole server connection with arbitrary client
// bytes. With negotiated set, a valid handshake and NBD_OPT_GO come first,
// so the fuzzer works on transmission. The connection must end once the
// client hangs up, and the export must see no call outside its bounds.
func FuzzServeConn(f *testing.F) {
	for _, seed := range serveConnSeeds() {
		f.Add(seed.negotiated, seed.input)
	}
	f.Fuzz(func(t *testing.T, negotiated bool, input []byte) {
		exp := newMemExport(64 << 10)
		s := NewServer(memExports{"vol": exp, "": exp}, Options{MaxInFlight: 4, MaxOptions: 64})
		if negotiated {
			input = append(goPrefix(), input...)
		}
		client, server := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- s.ServeConn(server) }()
		go io.Copy(io.Discard, client)
		wrote := make(chan struct{})
		go func() {
			client.Write(input)
			client.Close()
			close(wrote)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the client hung up")
		}
		<-wrote
		exp.checkIntact(t)
	})
}

// serveConnSeed is one starting input of FuzzServeConn.
type serveConnSeed struct {
	negotiated bool
	input      []byte
}

// serveConnSeeds covers every option and command, valid and not.
func serveConnSeeds() []serveConnSeed {
	session := bytes.Join([][]byte{
		requestBytes(nbdwire.CmdWrite, nbdwire.CmdFlagFUA, 1, 512, 4), []byte("data"),
		requestBytes(nbdwire.CmdRead, 0, 2, 0, 1024),
		requestBytes(nbdwire.CmdFlush, 0, 3, 0, 0),
		requestBytes(nbdwire.CmdTrim, nbdwire.CmdFlagFUA, 4, 0, 4096),
		requestBytes(nbdwire.CmdWriteZeroes, cmdFlagNoHole, 5, 8192, 4096),
		requestBytes(nbdwire.CmdDisc, 0, 6, 0, 0),
	}, nil)
	bad := bytes.Join([][]byte{
		requestBytes(nbdwire.CmdRead, 0, 1, 64<<10, 1),
		requestBytes(nbdwire.CmdWrite, 0, 2, 64<<10-1, 2), []byte("xy"),
		requestBytes(nbdwire.CmdWrite, cmdFlagNoHole, 3, 0, 1), []byte("z"),
		requestBytes(nbdwire.CmdRead, 0, 4, 0, 0),
		requestBytes(cmdCache, 0, 5, 0, 1),
		requestBytes(nbdwire.CmdRead, 0, 6, 1<<64-1, 2),
		requestBytes(nbdwire.CmdWrite, 0, 7, 0, MaxBlockSize+1),
	}, nil)
	flags := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	options := bytes.Join([][]byte{
		flags,
		optionBytes(optList, nil),
		optionBytes(optInfo, infoPayload("vol", infoName, nbdwire.InfoBlockSize, infoDescription)),
		optionBytes(nbdwire.OptGo, infoPayload("nope")),
		optionBytes(optStructuredReply, nil),
		optionBytes(optAbort, nil),
	}, nil)
	exportName := bytes.Join([][]byte{
		binary.BigEndian.AppendUint32(nil, clientFixedNewstyle),
		optionBytes(optExportName, nil),
		requestBytes(nbdwire.CmdRead, 0, 1, 0, 512),
	}, nil)
	return []serveConnSeed{
		{true, session},
		{true, bad},
		{true, session[:40]},
		{false, options},
		{false, exportName},
		{false, append(bytes.Clone(flags), optionBytes(nbdwire.OptGo, infoPayload("vol"))[:20]...)},
		{false, append(bytes.Clone(flags), append(optionBytes(optStartTLS, nil), optionBytes(optList, nil)...)...)},
		{false, []byte("GET / HTTP/1.1\r\n\r\n")},
		{false, nil},
	}
}

// goPrefix is a client's handshake and NBD_OPT_GO for "vol".
func goPrefix() []byte {
	b := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	return append(b, optionBytes(nbdwire.OptGo, infoPayload("vol", nbdwire.InfoBlockSize))...)
}

// optionBytes encodes one option as a client sends it.
func optionBytes(option uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption)
	b = appendUint32s(b, option, uint32(len(payload)))
	return append(b, payload...)
}

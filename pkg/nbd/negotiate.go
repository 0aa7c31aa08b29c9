package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// negotiate runs fixed newstyle negotiation until the client picks an
// export. The whole phase runs under the handshake deadline.
func (c *conn) negotiate() error {
	if err := c.nc.SetDeadline(time.Now().Add(c.srv.opts.HandshakeTimeout)); err != nil {
		return err
	}
	if err := c.write(greeting()); err != nil {
		return err
	}
	if err := c.readClientFlags(); err != nil {
		return err
	}
	for n := 0; ; n++ {
		if n == c.srv.opts.MaxOptions {
			return errTooManyOptions
		}
		done, err := c.nextOption()
		if err != nil {
			return err
		}
		if done {
			return c.nc.SetDeadline(time.Time{})
		}
	}
}

// readClientFlags reads and checks the client's 32 bit flags.
func (c *conn) readClientFlags() error {
	var b [4]byte
	if err := c.readFull(b[:]); err != nil {
		return err
	}
	noZeroes, err := checkClientFlags(binary.BigEndian.Uint32(b[:]))
	c.noZeroes = noZeroes
	return err
}

// nextOption reads one option and answers it. done is true once the
// client has entered transmission.
func (c *conn) nextOption() (done bool, err error) {
	hdr, payload, err := c.readOption()
	if err != nil {
		return false, err
	}
	if c.tlsRequired(hdr.option) {
		return false, c.refuseBeforeTLS(hdr.option)
	}
	switch hdr.option {
	case optStartTLS:
		return false, c.startTLS(payload)
	case optExportName:
		return true, c.exportName(payload)
	case optInfo, nbdwire.OptGo:
		return c.infoOrGo(hdr.option, payload)
	case optList:
		return false, c.list(payload)
	case optAbort:
		// The client may already be gone; the reply is a courtesy.
		_ = c.write(appendOptionReply(nil, optAbort, nbdwire.RepAck, nil))
		return false, errClientAborted
	default:
		return false, c.write(appendOptionReply(nil, hdr.option, repErrUnsup, nil))
	}
}

// readOption reads an option header and its payload. An over-long payload
// is answered with NBD_REP_ERR_TOO_BIG and ends the connection, since
// skipping it would let the client keep the server busy reading.
func (c *conn) readOption() (optionHeader, []byte, error) {
	var b [optionHeaderSize]byte
	if err := c.readFull(b[:]); err != nil {
		return optionHeader{}, nil, err
	}
	hdr, err := decodeOptionHeader(b[:])
	if err != nil {
		return hdr, nil, err
	}
	if hdr.length > maxOptionLength {
		if hdr.option != optExportName {
			_ = c.write(appendOptionReply(nil, hdr.option, repErrTooBig, nil))
		}
		return hdr, nil, fmt.Errorf("%w: option %d, length %d", errOptionTooLong, hdr.option, hdr.length)
	}
	payload := make([]byte, hdr.length)
	return hdr, payload, c.readRest(payload)
}

// exportName answers NBD_OPT_EXPORT_NAME. An unknown name cannot be
// reported to the client, so it ends the connection.
func (c *conn) exportName(payload []byte) error {
	c.name = string(payload)
	if err := c.authorize(c.name); err != nil {
		return err
	}
	exp, err := c.srv.exports.Lookup(c.name)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnknownExport, err)
	}
	c.attach(exp, exportSize(exp))
	return c.write(exportNameReply(c.size, exportFlags, c.noZeroes))
}

// infoOrGo answers NBD_OPT_INFO and NBD_OPT_GO; a successful GO enters
// transmission.
func (c *conn) infoOrGo(option uint32, payload []byte) (done bool, err error) {
	req, err := decodeInfoRequest(payload)
	if err != nil {
		c.logOption(option, err.Error())
		return false, c.write(appendOptionReply(nil, option, repErrInvalid, nil))
	}
	if err := c.authorize(req.name); err != nil {
		c.logOption(option, fmt.Sprintf("export %q: %v", truncateName(req.name), err))
		return false, c.write(appendOptionReply(nil, option, nbdwire.RepErrPolicy, nil))
	}
	exp, err := c.srv.exports.Lookup(req.name)
	if err != nil {
		c.logOption(option, fmt.Sprintf("export %q: %v", truncateName(req.name), err))
		return false, c.write(appendOptionReply(nil, option, lookupReply(err), nil))
	}
	size := exportSize(exp)
	if err := c.write(infoReplies(option, req, size)); err != nil {
		return false, err
	}
	if option == optInfo {
		return false, nil
	}
	c.name = req.name
	c.attach(exp, size)
	return true, nil
}

// infoReplies builds the NBD_REP_INFO replies and the final ACK for an
// export. Block sizes are always sent; the client may ignore them. Only
// NBD_INFO_DESCRIPTION is left unanswered: exports have none.
func infoReplies(option uint32, req infoRequest, size uint64) []byte {
	b := appendOptionReply(nil, option, nbdwire.RepInfo, exportInfo(size, exportFlags))
	b = appendOptionReply(b, option, nbdwire.RepInfo, blockSizeInfo())
	if req.wants(infoName) {
		b = appendOptionReply(b, option, nbdwire.RepInfo, nameInfo(req.name))
	}
	return appendOptionReply(b, option, nbdwire.RepAck, nil)
}

// list answers NBD_OPT_LIST with one NBD_REP_SERVER per export.
func (c *conn) list(payload []byte) error {
	if len(payload) != 0 {
		c.logOption(optList, "list option with payload")
		return c.write(appendOptionReply(nil, optList, repErrInvalid, nil))
	}
	var b []byte
	for _, name := range c.visibleExports() {
		b = appendOptionReply(b, optList, repServer, serverEntry(name))
	}
	return c.write(appendOptionReply(b, optList, nbdwire.RepAck, nil))
}

// attach selects the export for transmission, with the size the client
// was told.
func (c *conn) attach(exp Export, size uint64) {
	c.export = exp
	c.size = size
}

// exportSize returns the export's size as sent on the wire.
func exportSize(exp Export) uint64 {
	return uint64(max(exp.Size(), 0))
}

// lookupReply chooses the option reply for a failed Exports.Lookup.
func lookupReply(err error) uint32 {
	if errors.Is(err, ErrPolicy) {
		return nbdwire.RepErrPolicy
	}
	return nbdwire.RepErrUnknown
}

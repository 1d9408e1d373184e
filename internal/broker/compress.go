package broker

import (
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/protocol"
)

// decoders are reused across agent answers. Each decodes on the calling
// goroutine with a window of at most 8 MiB (the agent's encoder uses
// 1 MiB), so a hostile agent cannot make the broker hold more.
var decoders = sync.Pool{New: func() any {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(8<<20),
		zstd.WithDecoderMaxMemory(64<<20),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		panic(err) // only for invalid options
	}
	return dec
}}

// errAgentEncoding: the agent compressed its answer in a way the broker
// did not ask for.
var errAgentEncoding = fmt.Errorf("the agent answered in a content coding the broker did not ask for (want none or %s)", protocol.EncodingZstd)

// agentAnswer is the body of an agent's data-plane answer as the broker
// relays it: decompressed when the agent compressed it, and bounded by
// limit bytes after decompression as before it (onLimit runs once when
// the answer goes past it). Read it to its end, then call done: it reads
// the wire to its end too, so that the answer's trailer arrives, and
// returns the decoder.
func agentAnswer(res *http.Response, limit int64, onLimit func()) (body io.Reader, done func(), err error) {
	switch res.Header.Get("Content-Encoding") {
	case "":
		return res.Body, func() {}, nil
	case protocol.EncodingZstd:
	default:
		return nil, nil, errAgentEncoding
	}
	dec := decoders.Get().(*zstd.Decoder)
	if err := dec.Reset(res.Body); err != nil {
		decoders.Put(dec)
		return nil, nil, fmt.Errorf("the agent's compressed answer: %w", err)
	}
	return &boundedBody{rc: io.NopCloser(dec), left: limit, onLimit: onLimit}, func() {
		// The frame ends before the wire does: read on, so that the
		// trailer is parsed (a few bytes at most; bounded all the same).
		io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		dec.Reset(nil)
		decoders.Put(dec)
	}, nil
}

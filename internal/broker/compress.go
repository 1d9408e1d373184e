package broker

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/protocol"
)

// decoders are reused across agent answers, each bounded by
// [protocol.ZstdDecoderOptions], so a hostile agent cannot make the
// broker hold more than an 8 MiB window.
var decoders = sync.Pool{New: func() any {
	dec, err := zstd.NewReader(nil, protocol.ZstdDecoderOptions()...)
	if err != nil {
		panic(err) // only for invalid options
	}
	return dec
}}

// errAgentEncoding: the agent compressed its answer in a way the broker
// did not ask for.
var errAgentEncoding = fmt.Errorf("the agent answered in a content coding the broker did not ask for (want none or %s)", protocol.EncodingZstd)

// relayedAnswer is an agent's data-plane answer as the broker relays it.
// Read it to its end, then call done, which reports a failed check of a
// compressed answer relayed as it came; call stop in any case once the
// relay ends.
type relayedAnswer struct {
	io.Reader
	// compressed is set when the answer is relayed zstd-compressed, as
	// the agent sent it: the relay says so in Content-Encoding.
	compressed bool
	done       func() error
	stop       func()
}

// agentAnswer is the body of an agent's data-plane answer as the broker
// relays it, bounded by limit bytes decompressed as well as on the wire
// (onLimit runs once when the answer goes past it). A plain answer is
// relayed as it is. A zstd answer is decompressed, or, when pass is set
// (the client accepts zstd), relayed as it came while a decoder checks a
// copy on the side: the bound holds all the same, and a stream that is
// not valid zstd is cut off rather than passed on. Either way done reads
// the wire to its end, so that the answer's trailer arrives.
func agentAnswer(res *http.Response, limit int64, onLimit func(), pass bool) (*relayedAnswer, error) {
	switch res.Header.Get("Content-Encoding") {
	case "":
		return &relayedAnswer{Reader: res.Body, done: func() error { return nil }, stop: func() {}}, nil
	case protocol.EncodingZstd:
	default:
		return nil, errAgentEncoding
	}
	dec := decoders.Get().(*zstd.Decoder)
	// The frame ends before the wire does: read on, so that the
	// trailer is parsed (a few bytes at most; bounded all the same).
	drain := func() { io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) }
	release := func() {
		dec.Reset(nil)
		decoders.Put(dec)
	}
	if !pass {
		if err := dec.Reset(res.Body); err != nil {
			decoders.Put(dec)
			return nil, fmt.Errorf("the agent's compressed answer: %w", err)
		}
		return &relayedAnswer{
			Reader: &boundedBody{rc: io.NopCloser(dec), left: limit, onLimit: onLimit},
			done:   func() error { drain(); release(); return nil },
			stop:   func() {},
		}, nil
	}
	// The relay reads the wire through a tee into a pipe, so the check
	// keeps pace with it: a write to the pipe returns once the decoder
	// has read it all — and decoded all of it but its last block (≤ 128
	// KiB decompressed), since the decoder reads the next block only once
	// it handed out the last — and a piece that fails the check is not
	// relayed at all.
	pr, pw := io.Pipe()
	checked := make(chan error, 1)
	go func() {
		err := dec.Reset(pr)
		if err == nil {
			_, err = io.Copy(io.Discard, &boundedBody{rc: io.NopCloser(dec), left: limit, onLimit: onLimit})
		}
		if err == nil {
			// Nothing may follow the compressed stream's end.
			var one [1]byte
			if n, _ := pr.Read(one[:]); n > 0 {
				err = errors.New("the agent's answer goes on after its compressed stream ends")
			}
		}
		if err != nil {
			pr.CloseWithError(fmt.Errorf("the agent's compressed answer: %w", err))
		} else {
			pr.Close()
		}
		checked <- err
	}()
	stopped := false
	return &relayedAnswer{
		Reader:     &checkedTee{r: res.Body, w: pw},
		compressed: true,
		done: func() error {
			stopped = true
			pw.Close()
			err := <-checked
			drain()
			release()
			if err != nil {
				return fmt.Errorf("the agent's compressed answer: %w", err)
			}
			return nil
		},
		stop: func() {
			if !stopped {
				pw.CloseWithError(errRelayStopped) // the checker gives up
			}
		},
	}, nil
}

// errRelayStopped ends the check of an answer whose relay stopped early.
var errRelayStopped = errors.New("the relay stopped")

// checkedTee passes on what it reads from r once w, the check, has taken
// it; a piece the check refused is not passed on.
type checkedTee struct {
	r io.Reader
	w *io.PipeWriter
}

func (t *checkedTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		if _, werr := t.w.Write(p[:n]); werr != nil {
			return 0, werr
		}
	}
	return n, err
}

package agent

import (
	"net/http"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/protocol"
	"github.com/tetherhq/tether/internal/source"
)

// The broker ↔ agent leg carries results compressed when the broker asks
// for it (Accept-Encoding: zstd): the tailnet between two userspace nodes
// moves about 110 MB/s here, and system-table results compress several
// times over, so fewer bytes beat the tailnet's raw rate. Only successful
// answers are compressed; refusals and errors stay plain JSON.

// encoders are reused: a zstd encoder is costly to make, cheap to reset.
// Each holds at most a 1 MiB window and encodes on the calling goroutine,
// so the agent's memory stays bounded however many calls run.
var encoders = sync.Pool{New: func() any {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(true))
	if err != nil {
		panic(err) // only for invalid options
	}
	return enc
}}

// smallAnswer is the size up to which a whole answer goes plain: it
// fits a packet or two, and compressing it would cost the agent, the
// broker and the client more than it saves.
const smallAnswer = 4 << 10

// smallHold is how long a small answer is held through flushes, waiting
// for its end: an upstream may send a short answer and the end of its
// response in separate packets, milliseconds apart on a busy host, and a
// flush in between would compress it. Only the first bytes of a slow
// answer wait this long.
const smallHold = 50 * time.Millisecond

// zstdWriter compresses a successful answer written through it; anything
// else passes through as is. A successful answer is held until it passes
// smallAnswer bytes or is flushed smallHold after it began (then it is
// compressed), or ends (then it goes plain).
type zstdWriter struct {
	*streamWriter
	status int           // a successful status held back, 0 when none
	held   []byte        // the start of that answer
	since  time.Time     // when the first of it was held
	enc    *zstd.Encoder // set once the answer is compressed, nil after close
}

func (z *zstdWriter) WriteHeader(status int) {
	if z.streamWriter.status == 0 && z.status == 0 && status >= 200 && status < 300 {
		z.status = status
		return
	}
	if z.status == 0 {
		z.streamWriter.WriteHeader(status)
	}
}

func (z *zstdWriter) Write(p []byte) (int, error) {
	if z.streamWriter.status == 0 && z.status == 0 {
		z.WriteHeader(http.StatusOK)
	}
	switch {
	case z.enc != nil:
		return z.enc.Write(p)
	case z.status == 0:
		return z.streamWriter.Write(p)
	case len(z.held)+len(p) <= smallAnswer:
		if len(z.held) == 0 {
			z.since = time.Now()
		}
		z.held = append(z.held, p...)
		return len(p), nil
	}
	if err := z.compress(); err != nil {
		return 0, err
	}
	return z.enc.Write(p)
}

// compress sends the held status with Content-Encoding: zstd and
// starts the compressed stream with what was held.
func (z *zstdWriter) compress() error {
	z.Header().Set("Content-Encoding", protocol.EncodingZstd)
	z.Header().Del("Content-Length")
	z.streamWriter.WriteHeader(z.status)
	z.status = 0
	z.enc = encoders.Get().(*zstd.Encoder)
	z.enc.Reset(z.streamWriter)
	_, err := z.enc.Write(z.held)
	z.held = nil
	return err
}

// FlushError sends what was written so far, compressed, to the broker.
// A small answer held for less than smallHold stays held
// ([source.ErrFlushLater]); one held longer is a slow one, and is
// compressed from here on.
func (z *zstdWriter) FlushError() error {
	if z.status != 0 && len(z.held) > 0 && time.Since(z.since) < smallHold {
		return source.ErrFlushLater
	}
	if z.status != 0 {
		if err := z.compress(); err != nil {
			return err
		}
	}
	if z.enc != nil {
		if err := z.enc.Flush(); err != nil {
			return err
		}
	}
	return z.streamWriter.FlushError()
}

func (z *zstdWriter) Unwrap() http.ResponseWriter { return z.streamWriter }

// close ends the answer (before the trailer): a held, small one goes
// plain; a compressed one's stream is ended and its encoder returned to
// the pool.
func (z *zstdWriter) close() {
	if z.status != 0 {
		z.streamWriter.WriteHeader(z.status)
		z.status = 0
		if len(z.held) > 0 {
			z.streamWriter.Write(z.held)
		}
		z.held = nil
	}
	if z.enc == nil {
		return
	}
	z.enc.Close()
	z.enc.Reset(nil)
	encoders.Put(z.enc)
	z.enc = nil
}

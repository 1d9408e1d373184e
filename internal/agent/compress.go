package agent

import (
	"net/http"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/tetherhq/tether/internal/protocol"
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

// zstdWriter compresses a successful answer written through it; anything
// else passes through as is.
type zstdWriter struct {
	*streamWriter
	enc *zstd.Encoder // nil until a 2xx header, and after close
}

func (z *zstdWriter) WriteHeader(status int) {
	if z.streamWriter.status == 0 && status >= 200 && status < 300 {
		z.Header().Set("Content-Encoding", protocol.EncodingZstd)
		z.Header().Del("Content-Length")
		z.enc = encoders.Get().(*zstd.Encoder)
		z.enc.Reset(z.streamWriter)
	}
	z.streamWriter.WriteHeader(status)
}

func (z *zstdWriter) Write(p []byte) (int, error) {
	if z.streamWriter.status == 0 {
		z.WriteHeader(http.StatusOK)
	}
	if z.enc == nil {
		return z.streamWriter.Write(p)
	}
	return z.enc.Write(p)
}

// FlushError sends what was written so far, compressed, to the broker.
func (z *zstdWriter) FlushError() error {
	if z.enc != nil {
		if err := z.enc.Flush(); err != nil {
			return err
		}
	}
	return z.streamWriter.FlushError()
}

func (z *zstdWriter) Unwrap() http.ResponseWriter { return z.streamWriter }

// close ends the compressed stream (before the trailer) and returns the
// encoder to the pool.
func (z *zstdWriter) close() {
	if z.enc == nil {
		return
	}
	z.enc.Close()
	z.enc.Reset(nil)
	encoders.Put(z.enc)
	z.enc = nil
}

package protocol

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// EncodingZstd is the content coding the broker asks agents to compress
// data-plane answers with, and passes on to clients that accept it.
const EncodingZstd = "zstd"

// AcceptsZstd reports whether h's Accept-Encoding accepts zstd (named,
// with no q=0).
func AcceptsZstd(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for _, e := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(e), ";")
			if !strings.EqualFold(strings.TrimSpace(name), EncodingZstd) {
				continue
			}
			if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f <= 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}

// ZstdDecoderOptions bound a decoder of a data-plane answer, whoever
// sent it: it decodes on the calling goroutine, with a window of at most
// 8 MiB (agents encode with 1 MiB), so a hostile sender cannot make the
// reader hold more.
func ZstdDecoderOptions() []zstd.DOption {
	return []zstd.DOption{
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(8 << 20),
		zstd.WithDecoderMaxMemory(64 << 20),
		zstd.WithDecoderLowmem(true),
	}
}

package ghub

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	// cacheEntries, cacheMaxBody and cacheMaxBytes bound the response
	// cache: issue, team and membership documents are a few KiB.
	cacheEntries  = 1000
	cacheMaxBody  = 1 << 20
	cacheMaxBytes = 32 << 20
)

// cacheTransport serves GET responses from memory while younger than ttl
// and then revalidates them with If-None-Match, turning GitHub's 304 back
// into the stored 200. It sits below the auth transport and keys entries
// by a hash of the Authorization header as well as the URL, so a response
// fetched with one credential is never served to another. It is safe for
// concurrent use.
type cacheTransport struct {
	next       http.RoundTripper
	ttl        time.Duration
	now        func() time.Time
	maxEntries int
	maxBody    int
	maxBytes   int

	mu    sync.Mutex
	lru   *list.List // of *cacheEntry, most recently used first
	byKey map[string]*list.Element
	bytes int
}

var _ http.RoundTripper = (*cacheTransport)(nil)

// cacheEntry is immutable once stored; revalidation stores a new one.
type cacheEntry struct {
	key      string
	header   http.Header
	body     []byte
	etag     string
	storedAt time.Time
}

func newCacheTransport(next http.RoundTripper, ttl time.Duration, now func() time.Time) *cacheTransport {
	return &cacheTransport{
		next:       next,
		ttl:        ttl,
		now:        now,
		maxEntries: cacheEntries,
		maxBody:    cacheMaxBody,
		maxBytes:   cacheMaxBytes,
		lru:        list.New(),
		byKey:      map[string]*list.Element{},
	}
}

func cacheKey(req *http.Request) string {
	cred := sha256.Sum256([]byte(req.Header.Get("Authorization")))
	return hex.EncodeToString(cred[:16]) + " " + req.Header.Get("Accept") + " " + req.URL.String()
}

func (t *cacheTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.Header.Get("If-None-Match") != "" || req.Header.Get("Range") != "" {
		return t.next.RoundTrip(req)
	}
	key := cacheKey(req)
	e, fresh := t.lookup(key)
	if fresh {
		h := e.header.Clone()
		// go-github skips rate-limit bookkeeping for X-From-Cache
		// responses, whose rate headers are stale.
		h.Set("X-From-Cache", "1")
		return e.response(req, h), nil
	}

	out := req
	if e != nil && e.etag != "" {
		out = req.Clone(req.Context())
		out.Header.Set("If-None-Match", e.etag)
	}
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && out != req:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		e = e.revalidated(resp.Header, t.now())
		t.add(e)
		return e.response(req, e.header.Clone()), nil
	case resp.StatusCode == http.StatusOK:
		return t.store(key, resp), nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		t.remove(key)
	}
	return resp, nil
}

// lookup returns the entry for key, if any, and whether it is fresh.
func (t *cacheTransport) lookup(key string) (*cacheEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.byKey[key]
	if !ok {
		return nil, false
	}
	t.lru.MoveToFront(el)
	e := el.Value.(*cacheEntry)
	age := t.now().Sub(e.storedAt)
	return e, age >= 0 && age < t.ttl
}

// store reads a 200 response's body and keeps it if it fits, handing
// the caller an equivalent response either way.
func (t *cacheTransport) store(key string, resp *http.Response) *http.Response {
	if strings.Contains(resp.Header.Get("Cache-Control"), "no-store") {
		return resp
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(t.maxBody)+1))
	if err != nil || len(body) > t.maxBody {
		// Too big to keep, or broken: pass on what was read and the rest
		// (or the read error) untouched.
		rest := resp.Body
		var r io.Reader = rest
		if err != nil {
			r = errReader{err}
		}
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(body), r), rest}
		return resp
	}
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	t.add(&cacheEntry{
		key:      key,
		header:   resp.Header.Clone(),
		body:     body,
		etag:     resp.Header.Get("ETag"),
		storedAt: t.now(),
	})
	return resp
}

func (t *cacheTransport) add(e *cacheEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.byKey[e.key]; ok {
		t.removeLocked(el)
	}
	if len(e.body) > t.maxBytes {
		return
	}
	t.byKey[e.key] = t.lru.PushFront(e)
	t.bytes += len(e.body)
	for t.lru.Len() > t.maxEntries || t.bytes > t.maxBytes {
		t.removeLocked(t.lru.Back())
	}
}

func (t *cacheTransport) remove(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.byKey[key]; ok {
		t.removeLocked(el)
	}
}

func (t *cacheTransport) removeLocked(el *list.Element) {
	e := t.lru.Remove(el).(*cacheEntry)
	delete(t.byKey, e.key)
	t.bytes -= len(e.body)
}

func (t *cacheTransport) entries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// revalidated returns a copy of e confirmed current at now, with the
// headers of GitHub's 304 (rate limits, a new ETag) laid over the stored
// ones as RFC 9111 section 4.3.4 asks.
func (e *cacheEntry) revalidated(h http.Header, now time.Time) *cacheEntry {
	n := *e
	n.header = e.header.Clone()
	for k, v := range h {
		switch k {
		case "Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding":
			continue
		}
		n.header[k] = v
	}
	if etag := h.Get("ETag"); etag != "" {
		n.etag = etag
	}
	n.storedAt = now
	return &n
}

func (e *cacheEntry) response(req *http.Request, h http.Header) *http.Response {
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(e.body)),
		ContentLength: int64(len(e.body)),
		Request:       req,
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
